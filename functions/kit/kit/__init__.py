"""The shared library of the sample functions.

One concern per module: `config` (typed env settings, all problems at once), `logging` (JSON
lines on stdout), `s3` and `db` (backing services by URL), `binding` and `events` (CloudEvents
over HTTP, sending to K_SINK), `handlers` (the HTTP boundary), `shutdown` (closing on SIGTERM),
`errors` (the exception family). The two decorators every function uses are re-exported here.
"""

from kit.handlers import cloudevent_function, http_function

__all__ = ["cloudevent_function", "http_function"]

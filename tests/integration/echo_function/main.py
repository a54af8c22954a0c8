"""echo: answers with what its process sees (env, argv, sys.path, cwd) and the request's headers.

A test function for the parity of forked and spawned replicas. With ECHO_THREAD_AT_IMPORT=1 it
starts a thread at import, which makes forking it unsafe; with ECHO_FAIL_AT_IMPORT=1 its import
fails.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import flask

if os.environ.get("ECHO_FAIL_AT_IMPORT") == "1":
    raise RuntimeError("echo: told to fail at import")
if os.environ.get("ECHO_THREAD_AT_IMPORT") == "1":
    threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="echo-idler").start()

IMPORTED_IN = os.getpid()
CALLS = [0]  # calls in this process: a request knfn made itself would show here


def echo(request: flask.Request) -> flask.Response:
    """Everything a replica's process looks like, and the request as it arrived."""
    CALLS[0] += 1
    return flask.jsonify(
        calls=CALLS[0],
        env=dict(os.environ),
        argv=sys.argv,
        path=sys.path,
        cwd=os.getcwd(),
        gc_enabled=gc.isenabled(),
        pid=os.getpid(),
        imported_in=IMPORTED_IN,
        method=request.method,
        url=request.url,
        headers=dict(request.headers),
        body=request.get_data(as_text=True),
    )

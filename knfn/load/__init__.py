"""``knfn load``: put HTTP load on a Service and watch its revisions scale.

The pure parts are kept apart from the shells around them, so they are unit-tested without a
socket or a clock:

* :mod:`knfn.load.stats`: outcomes into 1 s buckets, latency percentiles, the error budget;
* :mod:`knfn.load.schedule`: the open-loop arrival times of ``--rps``;
* :mod:`knfn.load.series`: each second's row (load, latency, replicas per revision from the
  admin API's ``/status``), as a CSV and as the plain one-line-a-second output;

and the shells:

* :mod:`knfn.load.engine`: the asyncio load loop on aiohttp and the ``/status`` poller;
* :mod:`knfn.load.view`: the live terminal view (rich) or plain lines, and the summary table;
* :mod:`knfn.load.plot`: the PNG (matplotlib);
* :mod:`knfn.load.demo`: Knative's autoscale-go scenario on hello, in one command.
"""

from __future__ import annotations

from knfn.errors import KnfnError


class LoadError(KnfnError):
    """The load could not be run as asked; the message names the option and value."""


class LoadUsageError(LoadError):
    """The command line is wrong (exit code 2, as click's usage errors)."""

    exit_code = 2

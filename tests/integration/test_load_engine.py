"""knfn load's engine against real HTTP servers on loopback ports: a function that sleeps,
and an admin API that answers /status. Closed and open loop, and latency measured from the
intended send time when the client itself falls behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from knfn.load.engine import LoadPlan, Result, build_request, run
from knfn.load.series import Row
from knfn.load.stats import Timeline
from tests.support import free_port, http_server_thread

STATUS = {
    "services": [
        {
            "name": "hello",
            "namespace": "default",
            "revisions": [
                {"name": "hello-00001", "desired_replicas": 2, "ready_replicas": 1},
                {"name": "hello-00002", "desired_replicas": 1, "ready_replicas": 1, "tag": "next"},
            ],
        }
    ]
}


@dataclass
class Function:
    """Answers after `delay` seconds; 400 for ?bad; counts requests in flight at once."""

    delay: float = 0.0
    in_flight: int = 0
    most: int = 0
    hosts: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/status":
            return web.json_response(STATUS)
        self.hosts.add(request.headers["Host"])
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.Response(status=400 if "bad" in request.query else 200, text="hi")


@pytest.fixture
def function() -> Iterator[tuple[Function, int]]:
    fn = Function()
    port = free_port()
    with http_server_thread(fn.handle, port):
        yield fn, port


@dataclass
class Recorded:
    """A view that keeps every row; `stall` blocks the client's loop at the first row."""

    stall: float = 0.0
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def update(self, row: Row, timeline: Timeline) -> None:
        if not self.rows and self.stall:
            time.sleep(self.stall)  # the load generator itself falls behind
        self.rows.append(row)

    def note(self, message: str) -> None:
        self.notes.append(message)


def load(port: int, view: Recorded, path: str = "/", **plan: object) -> Result:
    request = build_request("hello", port=port, method=None, path=path, data=None, host=None)
    plan.setdefault("admin_port", port)
    return asyncio.run(run(LoadPlan(request, **plan), view))  # type: ignore[arg-type]


def test_closed_loop_keeps_n_requests_in_flight(function: tuple[Function, int]) -> None:
    """-c 3 against a 100 ms function: at most 3 at once, about 30 a second, one row a second
    with the revisions from /status."""
    fn, port = function
    fn.delay = 0.1
    view = Recorded()
    result = load(port, view, duration=2.0, concurrency=3)
    assert fn.most == 3
    assert 40 <= result.timeline.done <= 63, result.timeline.done
    assert result.timeline.sent == result.timeline.done
    assert [row.t for row in result.rows] == [0, 1, 2, 3][: len(result.rows)]
    assert len(result.rows) >= 3 and view.rows == result.rows[1:]
    assert result.rows[1].revisions[0].desired == 2 and result.status_seen
    assert fn.hosts == {"hello.default.svc.cluster.local"}
    p50 = result.rows[1].second.p50
    assert p50 is not None and 0.1 <= p50 < 0.3


def test_open_loop_does_not_wait_for_answers(function: tuple[Function, int]) -> None:
    """--rps 40 against a 500 ms function: all 80 go out on time, ~20 in flight at once."""
    fn, port = function
    fn.delay = 0.5
    result = load(port, Recorded(), duration=2.0, rps=40.0)
    assert result.timeline.sent == 80 == result.timeline.done
    assert fn.most >= 15  # a closed loop would need 20 clients for this
    assert [row.second.sent for row in result.rows[1:3]] == [40, 40]


def test_open_loop_latency_counts_the_time_the_client_fell_behind(
    function: tuple[Function, int],
) -> None:
    """The client's loop stalls 400 ms: the ~20 requests due meanwhile go late, and their
    latency says so, though the function answers at once. In a closed loop only the two
    requests in flight during the stall show it; the ones not sent are never counted."""
    _, port = function

    def worst_p90(result: Result) -> float:
        return max(row.second.p90 or 0.0 for row in result.rows)

    assert worst_p90(load(port, Recorded(stall=0.4), duration=2.0, rps=50.0)) >= 0.2
    assert worst_p90(load(port, Recorded(stall=0.4), duration=2.0, concurrency=2)) < 0.2


def test_errors_are_counted_by_class(function: tuple[Function, int]) -> None:
    """400 answers are 4xx errors; a Host routed by --host is sent as given."""
    fn, port = function
    request = build_request(
        "hello", port=port, method=None, path="/?bad", data=None, host="next-hello.default"
    )
    result = asyncio.run(run(LoadPlan(request, 1.0, concurrency=2, admin_port=port), Recorded()))
    assert result.timeline.errors["4xx"] == result.timeline.done > 0
    assert fn.hosts == {"next-hello.default"}
    assert result.status_seen  # the tag's Service is found in /status


def test_no_status_is_a_note_not_a_failure(function: tuple[Function, int]) -> None:
    """Without an admin API the load still runs; the view is told once why replicas lack."""
    _, port = function
    view = Recorded()
    result = load(port, view, duration=1.0, concurrency=1, admin_port=free_port())
    assert result.timeline.done > 0 and not result.status_seen
    assert len(view.notes) == 1 and "no /status at" in view.notes[0]
    assert all(row.revisions == () for row in result.rows)

"""Sequences as queued deliveries, end to end: `knfn dev` as a subprocess on a small project of
two Services chained by a Sequence (the first fails its first attempts), kill -9 of knfn in the
middle of the chain, a restart on the same state dir, and a Sequence that feeds itself until
the hop limit drops the event. What arrives is counted at a recording HTTP server run by the
test (the Sequence's reply and dead-letter sink are `uri`s to it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.support import KNFN, READY_LINE, dev_env, free_port, http_server_thread, services_down

pytestmark = pytest.mark.slow

EVENTS = 200
POISON = {f"c{i}" for i in range(0, EVENTS, 40)}  # the first step always fails these
FAIL_FIRST = 2  # attempts of every other event the first step fails (503) before it answers
CHAIN_HOST = "chain-kn-sequence-0-kn-channel.default.svc.cluster.local"
LOOP_HOST = "loop-kn-sequence-0-kn-channel.default.svc.cluster.local"
FIRST_URL = "http://first.default.svc.cluster.local"

FUNCTIONS = f'''\
"""Two steps of a Sequence: each answers with the event it got, its data marked by the step."""

import os
import time
from pathlib import Path

import flask


def _attempt(stage: str, event_id: str) -> int:
    """Which attempt this is at this step for this event (counted in files)."""
    path = Path(os.environ["ATTEMPTS_DIR"]) / f"{{stage}}-{{event_id}}"
    with open(path, "a") as out:
        out.write("x")
    return path.stat().st_size


def _answer(request: flask.Request, stage: str) -> flask.Response:
    data = request.get_json(force=True, silent=True) or {{}}
    data["steps"] = [*data.get("steps", []), stage]
    headers = {{
        "ce-specversion": "1.0",
        "ce-id": request.headers["ce-id"],
        "ce-source": "/" + stage,
        "ce-type": "step." + stage,
    }}
    return flask.Response(flask.json.dumps(data), 200, headers, mimetype="application/json")


def first(request: flask.Request) -> flask.Response | tuple[str, int]:
    attempt = _attempt("first", request.headers["ce-id"])
    if request.headers.get("ce-type") == "test.poison":
        return "this one never works", 500
    if attempt <= {FAIL_FIRST}:
        return "not yet", 503
    return _answer(request, "first")


def second(request: flask.Request) -> flask.Response:
    _attempt("second", request.headers["ce-id"])
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
    return _answer(request, "second")
'''


@dataclass
class Recorder:
    """A real HTTP server recording what reaches it per path; ``/loop`` answers with an event
    (the step of the self-feeding Sequence)."""

    port: int = field(default_factory=free_port)
    calls: dict[str, list[tuple[dict[str, str], bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path.strip("/")
        self.calls[path].append((dict(request.headers), body))
        if path == "loop":
            answer = {
                "ce-specversion": "1.0",
                "ce-id": f"round-{len(self.calls[path])}",
                "ce-source": "/loop",
                "ce-type": "test.round",
            }
            return web.Response(status=200, headers=answer, body=b"")
        return web.Response(status=202)

    def ids(self, path: str) -> Counter[str]:
        return Counter(headers.get("ce-id", "") for headers, _ in self.calls[path])


def service(name: str, attempts: Path, **env: str) -> dict[str, Any]:
    variables = {
        "FUNCTION_TARGET": name,
        "FUNCTION_SIGNATURE_TYPE": "http",
        "ATTEMPTS_DIR": str(attempts),
        **env,
    }
    container = {
        "image": f"knfn/{name}",
        "env": [{"name": k, "value": v} for k, v in variables.items()],
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def manifests(rec: Recorder, attempts: Path) -> list[dict[str, Any]]:
    def ref(kind: str, name: str) -> dict[str, Any]:
        api = "serving.knative.dev/v1" if kind == "Service" else "flows.knative.dev/v1"
        return {"ref": {"apiVersion": api, "kind": kind, "name": name}}

    chain = {
        "steps": [
            {
                **ref("Service", "first"),
                "delivery": {
                    "retry": FAIL_FIRST + 1,
                    "backoffPolicy": "linear",
                    "backoffDelay": "PT0.1S",
                    "deadLetterSink": {"uri": f"{rec.url}/dls"},
                },
            },
            {**ref("Service", "second"), "delivery": {"retry": 5, "backoffPolicy": "exponential",
                                                      "backoffDelay": "PT0.2S"}},
        ],
        "reply": {"uri": f"{rec.url}/out"},
    }  # fmt: skip
    loop = {"steps": [{"uri": f"{rec.url}/loop"}], "reply": ref("Sequence", "loop")}
    flows = [
        {"apiVersion": "flows.knative.dev/v1", "kind": "Sequence",
         "metadata": {"name": name, "namespace": "default"}, "spec": spec}
        for name, spec in (("chain", chain), ("loop", loop))
    ]  # fmt: skip
    return [service("first", attempts), service("second", attempts, SLOW_SECONDS="0.03"), *flows]


@dataclass
class Dev:
    """`knfn dev` on the test project, started (and started again) on one state dir."""

    project: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["KNFN_PORT"])

    def start(self) -> None:
        log = self.project / "dev.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [KNFN, "--project-dir", str(self.project), "dev"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 180
        while READY_LINE not in log.read_text(errors="replace")[offset:]:
            assert self.proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)

    def kill9(self) -> None:
        """SIGKILL knfn itself: no shutdown step runs (its replicas die with it)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def admin(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.env['KNFN_ADMIN_PORT']}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def log(self) -> str:
        return (self.project / "dev.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with http_server_thread(rec.handle, rec.port):
        yield rec


@pytest.fixture(scope="module")
def dev(recorder: Recorder) -> Iterator[Dev]:
    # Not under pytest's basetemp: Postgres runs as another user and needs o+x on every
    # parent, which a concurrent pytest session resets on its own /tmp/pytest-of-<user>.
    with tempfile.TemporaryDirectory(prefix="knfn-flows-") as workdir:
        yield from _dev(Path(workdir), recorder)


def _dev(project: Path, recorder: Recorder) -> Iterator[Dev]:
    attempts = project / "attempts"
    attempts.mkdir()
    base = project / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [flows.yaml]\n")
    (base / "flows.yaml").write_text(yaml.safe_dump_all(manifests(recorder, attempts)))
    for name in ("first", "second"):
        (project / "functions" / name).mkdir(parents=True)
        (project / "functions" / name / "main.py").write_text(FUNCTIONS)
    running = Dev(project, dev_env(project / ".knfn"))
    running.start()
    try:
        yield running
    finally:
        if running.proc is not None and running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            try:
                running.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()
        services_down(running.env)


def wait_for(what: str, check: Callable[[], bool], timeout: float, dev: Dev) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{dev.log()[-3000:]}"
        time.sleep(0.1)


async def post(port: int, host: str, ids: list[str], clients: int = 8) -> dict[str, int]:
    """Binary-mode events to a flow's address through the gateway; the status of each id."""
    statuses: dict[str, int] = {}
    todo = iter(ids)
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for event_id in todo:
                headers = {
                    "Host": host,
                    "ce-specversion": "1.0",
                    "ce-id": event_id,
                    "ce-source": "/tests",
                    "ce-type": "test.poison" if event_id in POISON else "test.chain",
                    "Content-Type": "application/json",
                }
                try:
                    url = f"http://127.0.0.1:{port}/"
                    async with session.post(url, data=b'{"n": 1}', headers=headers) as resp:
                        statuses[event_id] = resp.status
                except aiohttp.ClientError:
                    statuses[event_id] = -1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def test_sequence_survives_kill_9_mid_chain(dev: Dev, recorder: Recorder) -> None:
    """200 events into a Sequence of two Services; the first fails each event's first two
    attempts (and always fails the poison ones). knfn is killed with SIGKILL once some events
    have come out of the chain and restarted on the same state: every accepted event reaches
    the reply destination after its retries, every poison one the dead-letter sink."""
    ids = [f"c{i}" for i in range(EVENTS)]

    async def send_and_kill() -> dict[str, int]:
        sending = asyncio.create_task(post(dev.port, CHAIN_HOST, ids))
        while len(recorder.ids("out")) < 20:
            assert time.monotonic() < started + 180, dev.log()[-3000:]
            await asyncio.sleep(0.05)
        dev.kill9()
        return await sending

    started = time.monotonic()
    statuses = asyncio.run(send_and_kill())
    accepted = {i for i, s in statuses.items() if s == 202}
    assert accepted, statuses
    out_before = len(recorder.ids("out"))
    assert out_before < len(accepted - POISON), "the kill came after the chain had finished"

    dev.start()
    wait_for(
        "every accepted event at the reply destination",
        lambda: accepted - POISON <= set(recorder.ids("out")),
        240,
        dev,
    )
    wait_for("every accepted poison event dead-lettered",
             lambda: accepted & POISON <= set(recorder.ids("dls")), 120, dev)  # fmt: skip
    out, dead = recorder.ids("out"), recorder.ids("dls")
    # An event stored as knfn died may have had no answer: delivered, though not seen accepted.
    assert set(out) <= set(ids) - POISON and set(dead) <= POISON
    for headers, body in recorder.calls["out"]:
        assert headers["ce-type"] == "step.second"
        assert json.loads(body)["steps"] == ["first", "second"]
    for headers, _ in recorder.calls["dls"]:
        assert headers["ce-knativeerrordest"] == FIRST_URL
        assert headers["ce-knativeerrorcode"] == "500"
    attempts = {p.name: p.stat().st_size for p in (dev.project / "attempts").iterdir()}
    for event_id in accepted - POISON:
        assert attempts[f"first-{event_id}"] >= FAIL_FIRST + 1, event_id
    for event_id in accepted & POISON:
        assert attempts[f"first-{event_id}"] >= FAIL_FIRST + 2, event_id  # retry 3, then dead
    duplicates = sum(out.values()) - len(out)
    print(
        f"\nkill -9 mid-chain: {len(accepted)} of {EVENTS} accepted, {out_before} out of the "
        f"chain before the kill; after the restart {len(out)} at the reply destination "
        f"({duplicates} duplicate(s)), {len(dead)} dead-lettered, 0 lost"
    )


def test_the_inspector_shows_each_hop_as_a_delivery(dev: Dev) -> None:
    """/events lists the hops with their subscription as trigger and the step as destination;
    /events/<n> has each attempt; /status counts the Sequence's hops with nothing pending."""
    rows = dev.admin("/events?limit=10000")["events"]
    first = [r for r in rows if r["trigger"] == "chain-kn-sequence-0" and r["kind"] == "step"]
    assert first and {r["destination"] for r in first} == {FIRST_URL}
    retried = next(r for r in first if r["state"] == "delivered" and r["attempts"] >= 3)
    detail = dev.admin(f"/events/{retried['event']}")
    (hop,) = [d for d in detail["deliveries"] if d["trigger"] == "chain-kn-sequence-0"]
    outcomes = [a["outcome"] for a in hop["attempt_log"]]
    assert outcomes[-1] == "delivered" and outcomes.count("pending") >= 1
    assert {r["kind"] for r in rows if r["trigger"] == "chain-kn-sequence-1"} >= {"step", "reply"}
    chain = next(f for f in dev.admin("/status")["flows"] if f["name"] == "chain")
    assert chain["pending"] == 0 and chain["dead_lettered"] >= 1


def test_a_self_feeding_sequence_stops_at_the_hop_limit(dev: Dev, recorder: Recorder) -> None:
    """A Sequence whose reply is its own address: sent with knfnflowttl 6, the event enters
    the address six times and goes round five; the sixth entry leaves 0 and is dropped, logged,
    counted in /status and shown as the failed reply hop in /events. (Without the extension an
    event starts at 255, as the broker's TTL.)"""
    recorder.calls["loop"].clear()
    headers = {"Host": LOOP_HOST, "ce-specversion": "1.0", "ce-id": "l1", "ce-source": "/tests",
               "ce-type": "test.loop", "ce-knfnflowttl": "6"}  # fmt: skip
    req = urllib.request.Request(f"http://127.0.0.1:{dev.port}/", b"", headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202

    def dropped() -> int:
        loop = next(f for f in dev.admin("/status")["flows"] if f["name"] == "loop")
        return int(loop["hop_limit_dropped"])

    wait_for("the hop limit to drop the event", lambda: dropped() == 1, 120, dev)
    time.sleep(1.0)  # nothing goes round after the drop
    assert len(recorder.calls["loop"]) == 5 and dropped() == 1
    assert "Sequence default/loop: dropped event 'round-5'" in dev.log()
    rows = dev.admin("/events?limit=200")["events"]
    reply = next(r for r in rows if r["trigger"] == "loop-kn-sequence-0" and r["kind"] == "reply")
    assert (reply["state"], reply["last_status"]) == ("failed", 400)

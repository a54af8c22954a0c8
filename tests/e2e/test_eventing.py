"""Knative Eventing behaviour of `knfn dev`: the broker, triggers, retries, dead letters, replies,
and durability across `kill -9`. knfn runs as a subprocess on a project whose triggers send to
a recording HTTP server run by the test (subscribers by `uri`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import BROKER_INGRESS_HOST as BROKER
from tests.support import free_port, http_server_thread, post_events

KNFN = str(Path(sys.executable).parent / "knfn")
pytestmark = pytest.mark.slow


@dataclass
class Recorder:
    """A real HTTP server on a loopback port recording every delivery, answering by script."""

    port: int = field(default_factory=free_port)
    calls: dict[str, list[tuple[float, dict[str, str], bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    script: dict[str, list[int]] = field(default_factory=dict)
    delay: float = 0.0
    # With a delay, requests are answered one at a time: a subscriber that falls behind.
    serial: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path.strip("/")
        self.calls[path].append((time.monotonic(), dict(request.headers), body))
        if self.delay:
            async with self.serial:
                await asyncio.sleep(self.delay)
        if path == "reply":
            return web.Response(
                status=200,
                body=b'{"answer": 42}',
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": "answer-" + request.headers.get("ce-id", ""),
                    "ce-source": "/recorder",
                    "ce-type": "test.answer",
                    "Content-Type": "application/json",
                },
            )
        if path == "garbage":
            return web.Response(status=200, text="OK")
        statuses = self.script.get(path)
        return web.Response(status=statuses.pop(0) if statuses else 200)

    def ids(self, path: str) -> set[str]:
        return {headers.get("ce-id", "") for _, headers, _ in self.calls[path]}


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with http_server_thread(rec.handle, rec.port):
        yield rec


def manifests(rec: Recorder) -> str:
    def trigger(name: str, type_: str, path: str, delivery: str = "") -> str:
        return (
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  broker: default\n  filter: {{attributes: {{type: {type_}}}}}\n"
            f"  subscriber: {{uri: '{rec.url}/{path}'}}\n{delivery}"
        )

    broker = (
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\n"
        "metadata: {name: default, namespace: default}\n"
        "spec:\n  delivery:\n    retry: 2\n    backoffPolicy: exponential\n"
        f"    backoffDelay: PT0.3S\n    deadLetterSink: {{uri: '{rec.url}/dls'}}\n"
    )
    docs = [
        broker,
        trigger("durable", "test.durable", "durable"),
        trigger("flaky", "test.flaky", "flaky"),
        trigger("refused", "test.refused", "refused"),
        trigger("garbage", "test.garbage", "garbage"),
        trigger("ask", "test.ask", "reply"),
        trigger("answers", "test.answer", "answers"),
        trigger("headers", "test.headers", "headers"),
        trigger("structured", "test.structured", "structured", "  delivery: {format: json}\n"),
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\n"
        "metadata: {name: to-sequence, namespace: default}\n"
        "spec:\n  broker: default\n  filter: {attributes: {type: test.seq}}\n"
        "  subscriber: {ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: chain}}\n",
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\n"
        "metadata: {name: chain, namespace: default}\n"
        f"spec:\n  steps:\n    - {{uri: '{rec.url}/reply'}}\n    - {{uri: '{rec.url}/step2'}}\n",
    ]
    return "---\n".join(docs)


@dataclass
class Knfn:
    project: Path
    port: int
    admin_port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = self.project / "dev.log"
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [KNFN, "--project-dir", str(self.project), "dev",
             "--port", str(self.port), "--admin-port", str(self.admin_port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while b"ready; Ctrl-C" not in path.read_bytes()[offset:]:
            assert self.proc.poll() is None, path.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def admin(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}") as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def knfn(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Knfn]:
    project = tmp_path_factory.mktemp("eventing")
    base = project / "knative" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources: [eventing.yaml]\n")
    (base / "eventing.yaml").write_text(manifests(recorder))
    (project / "functions").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_ENDPOINT_URL")}
    env.update(KNFN_PG_PORT=str(free_port()), KNFN_S3_PORT=str(free_port()))
    running = Knfn(project, free_port(), free_port(), env)
    running.start()
    yield running
    running.stop()
    subprocess.run([KNFN, "--project-dir", str(project), "services", "down"], env=env, check=False)


def event(type_: str, id_: str) -> dict[str, str]:
    return {"specversion": "1.0", "id": id_, "source": "/tests", "type": type_}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_retries_follow_backoff_then_succeed(knfn: Knfn, recorder: Recorder) -> None:
    """500, 500, 200: three deliveries, waits of backoffDelay x1 then x2 (0.3 s, 0.6 s)."""
    recorder.script["flaky"] = [500, 500, 200]
    assert asyncio.run(post_events(knfn.port, [event("test.flaky", "f1")])) == [202]
    wait_for("three attempts", lambda: len(recorder.calls["flaky"]) == 3)
    times = [t for t, _, _ in recorder.calls["flaky"]]
    assert times[1] - times[0] == pytest.approx(0.3, abs=0.2)
    assert times[2] - times[1] == pytest.approx(0.6, abs=0.25)
    time.sleep(0.5)
    assert len(recorder.calls["flaky"]) == 3 and recorder.ids("dls") == set()


def test_400_is_not_retried_and_goes_to_the_dead_letter_sink(
    knfn: Knfn, recorder: Recorder
) -> None:
    """A 400 is final: one attempt, then the dead-letter sink gets it with the error extensions."""
    recorder.script["refused"] = [400]
    asyncio.run(post_events(knfn.port, [event("test.refused", "r1")]))
    wait_for("dead letter", lambda: "r1" in recorder.ids("dls"))
    assert len(recorder.calls["refused"]) == 1
    _, headers, _ = next(c for c in recorder.calls["dls"] if c[1].get("ce-id") == "r1")
    assert headers["ce-knativeerrordest"] == f"{recorder.url}/refused"
    assert headers["ce-knativeerrorcode"] == "400"
    assert "ce-knativebrokerttl" not in headers


def test_retries_exhausted_dead_letter_after_three_attempts(knfn: Knfn, recorder: Recorder) -> None:
    """Always 500 with retry 2: three attempts, then the dead letter with code and data."""
    recorder.script["flaky"] = [500, 500, 500]
    asyncio.run(post_events(knfn.port, [event("test.flaky", "f2")]))
    wait_for("dead letter", lambda: "f2" in recorder.ids("dls"))
    assert sum(1 for c in recorder.calls["flaky"] if c[1].get("ce-id") == "f2") == 3
    _, headers, _ = next(c for c in recorder.calls["dls"] if c[1].get("ce-id") == "f2")
    assert headers["ce-knativeerrorcode"] == "500" and "ce-knativeerrordata" in headers


def test_non_cloudevent_reply_is_a_failed_delivery(knfn: Knfn, recorder: Recorder) -> None:
    """A 200 whose body is not a CloudEvent ("OK") is a failure (502) and is retried."""
    asyncio.run(post_events(knfn.port, [event("test.garbage", "g1")]))
    wait_for("dead letter", lambda: "g1" in recorder.ids("dls"))
    assert len(recorder.calls["garbage"]) == 3
    _, headers, _ = next(c for c in recorder.calls["dls"] if c[1].get("ce-id") == "g1")
    assert headers["ce-knativeerrorcode"] == "502"


def test_reply_event_re_enters_the_broker(knfn: Knfn, recorder: Recorder) -> None:
    """A CloudEvent in a 2xx reply is published to the broker and reaches its own trigger."""
    asyncio.run(post_events(knfn.port, [event("test.ask", "q1")]))
    wait_for("the answer", lambda: "answer-q1" in recorder.ids("answers"))
    _, headers, body = recorder.calls["answers"][-1]
    assert headers["ce-type"] == "test.answer" and json.loads(body) == {"answer": 42}


def test_trigger_to_a_sequence_chains_the_steps(knfn: Knfn, recorder: Recorder) -> None:
    """A Trigger whose subscriber is a Sequence: step 1's reply event is what step 2 receives."""
    asyncio.run(post_events(knfn.port, [event("test.seq", "s1")]))
    wait_for("step 2", lambda: "answer-s1" in recorder.ids("step2"))
    _, headers, body = recorder.calls["step2"][-1]
    assert headers["ce-type"] == "test.answer" and json.loads(body) == {"answer": 42}


def test_events_and_status_report_deliveries(knfn: Knfn) -> None:
    """/events lists deliveries with attempts and state; /status shows triggers and counts."""
    events = knfn.admin("/events?limit=200")["events"]
    flaky = next(e for e in events if e["event_id"] == "f1" and e["trigger"] == "flaky")
    assert (flaky["attempts"], flaky["state"], flaky["last_status"]) == (3, "delivered", 200)
    assert flaky["type"] == "test.flaky" and flaky["latency_ms"] > 0
    status = knfn.admin("/status")
    [broker] = status["brokers"]
    assert broker["address"] == f"http://{BROKER}/default/default"
    refused = next(t for t in broker["triggers"] if t["name"] == "refused")
    assert refused["dead_lettered"] >= 1


def ingress(
    knfn: Knfn, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{knfn.port}{path}", data=body or None, method=method,
        headers={"Host": BROKER, **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


BINARY = {"ce-specversion": "1.0", "ce-id": "x1", "ce-source": "/t", "ce-type": "test.none"}


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"", "id"),
        ({**BINARY, "ce-source": ""}, b"", "source"),
        ({**BINARY, "ce-specversion": "0.2"}, b"", "specversion"),
        ({**BINARY, "ce-Bad_Name": "v"}, b"", "bad_name"),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}',
            "data_base64",
        ),
        ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "batch"),
        ({"Content-Type": "application/cloudevents+json"}, b"{not json", "JSON"),
        ({**BINARY, "ce-knativebrokerttl": "0"}, b"", "knativebrokerttl"),
    ],
)
def test_invalid_events_get_400_with_the_reason(
    knfn: Knfn, headers: dict[str, str], body: bytes, fragment: str
) -> None:
    """Each invalid event is refused with 400 and a JSON error naming the problem."""
    status, text = ingress(knfn, "POST", "/default/default", headers, body)
    assert status == 400, text
    assert fragment.lower() in json.loads(text)["error"].lower()


def answer_headers(knfn: Knfn, method: str) -> tuple[int, dict[str, str]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", knfn.port, timeout=10)
    try:
        conn.request(method, "/default/default", headers={"Host": BROKER})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_ingress_methods_and_unknown_broker(knfn: Knfn) -> None:
    """OPTIONS 200 with the webhook headers, GET 405 with Allow (pkg/broker/ingress/
    ingress_handler.go, cloudevents/spec http-webhook.md 4.2), an unknown broker 404, a valid
    event 202."""
    status, headers = answer_headers(knfn, "OPTIONS")
    assert status == 200 and headers["allow"] == "POST, OPTIONS"
    assert headers["webhook-allowed-origin"] == "*" and headers["webhook-allowed-rate"] == "*"
    status, headers = answer_headers(knfn, "GET")
    assert status == 405 and headers["allow"] == "POST, OPTIONS"
    status, text = ingress(knfn, "POST", "/default/nope", BINARY, b"")
    assert status == 404 and "/default/default" in text
    assert ingress(knfn, "POST", "/default/default", BINARY, b"")[0] == 202


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def delivered(recorder: Recorder, path: str, event_id: str) -> tuple[dict[str, str], bytes]:
    """The headers (lowercased names) and body of the first delivery of event_id to path."""
    wait_for(f"{event_id} at /{path}", lambda: event_id in recorder.ids(path), timeout=30)
    _, headers, body = next(c for c in recorder.calls[path] if c[1].get("ce-id") == event_id)
    return {k.lower(): v for k, v in headers.items()}, body


def test_a_subscriber_sees_knatives_headers_and_no_client_defaults(
    knfn: Knfn, recorder: Recorder
) -> None:
    """pkg/broker/filter/filter_handler.go, pkg/kncloudevents/event_dispatcher.go and
    pkg/utils/headers.go: Prefer: reply, Kn-Namespace, and the ingress request's X-Request-Id,
    Knative-* and trace context; no User-Agent, Accept or Accept-Encoding of knfn's client (nor
    the sender's, which are not passed through)."""
    sent = {
        **BINARY, "ce-id": "h1", "ce-type": "test.headers", "Content-Type": "application/json",
        "X-Request-Id": "req-h1", "traceparent": TRACEPARENT, "tracestate": "k=v",
        "Knative-Custom": "yes", "Prefer": "respond-async", "User-Agent": "tester/1",
    }  # fmt: skip
    assert ingress(knfn, "POST", "/default/default", sent, b'{"n": 1}')[0] == 202
    headers, body = delivered(recorder, "headers", "h1")
    assert headers["prefer"] == "reply" and headers["kn-namespace"] == "default"
    assert headers["x-request-id"] == "req-h1" and headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "k=v" and headers["knative-custom"] == "yes"
    assert not {"user-agent", "accept", "accept-encoding"} & headers.keys(), headers
    assert headers["content-type"] == "application/json" and json.loads(body) == {"n": 1}


def test_a_dead_letter_has_the_pass_through_headers_but_no_prefer(
    knfn: Knfn, recorder: Recorder
) -> None:
    """The dead-letter sink gets Kn-Namespace and X-Request-Id, not Prefer: reply."""
    recorder.script["refused"] = [400]
    sent = {**BINARY, "ce-id": "h2", "ce-type": "test.refused", "X-Request-Id": "req-h2"}
    assert ingress(knfn, "POST", "/default/default", sent, b"")[0] == 202
    headers, _ = delivered(recorder, "dls", "h2")
    assert headers["kn-namespace"] == "default" and headers["x-request-id"] == "req-h2"
    assert "prefer" not in headers and headers["ce-knativeerrorcode"] == "400"


def test_a_trigger_with_format_json_delivers_structured(knfn: Knfn, recorder: Recorder) -> None:
    """delivery.format: json (filter_handler.go WithEventFormat): the subscriber gets
    application/cloudevents+json with the attributes in the body, whatever came in."""
    sent = {**BINARY, "ce-id": "j1", "ce-type": "test.structured", "ce-ext": "e",
            "Content-Type": "application/json"}  # fmt: skip
    assert ingress(knfn, "POST", "/default/default", sent, b'{"n": 2}')[0] == 202
    wait_for("j1", lambda: bool(recorder.calls["structured"]))
    _, raw, body = recorder.calls["structured"][-1]
    headers = {k.lower(): v for k, v in raw.items()}
    assert headers["content-type"].startswith("application/cloudevents+json")
    assert not [h for h in headers if h.startswith("ce-")], headers
    doc = json.loads(body)
    assert (doc["id"], doc["ext"], doc["data"]) == ("j1", "e", {"n": 2})
    assert "knativebrokerttl" not in doc and headers["prefer"] == "reply"


def stored_attributes(knfn: Knfn, event_id: str, trigger: str) -> dict[str, str]:
    """The attributes the broker stored for this event (the event inspector's view)."""
    events = knfn.admin("/events?limit=500")["events"]
    number = next(
        e["event"] for e in events if e["event_id"] == event_id and e["trigger"] == trigger
    )
    attributes: dict[str, str] = knfn.admin(f"/events/{number}")["attributes"]
    return attributes


@pytest.mark.parametrize(("ttl", "stored"), [("10", "9"), ("not-a-number", "255")])
def test_the_ingress_lowers_the_ttl_and_resets_a_bad_one(
    knfn: Knfn, recorder: Recorder, ttl: str, stored: str
) -> None:
    """pkg/broker/ttl.go TTLDefaulter: lowered by one on the way in; not an integer, reset to
    255 (not refused); the subscriber never sees it."""
    event_id = f"ttl-{ttl}"
    sent = {**BINARY, "ce-id": event_id, "ce-type": "test.headers", "ce-knativebrokerttl": ttl}
    assert ingress(knfn, "POST", "/default/default", sent, b"")[0] == 202
    headers, _ = delivered(recorder, "headers", event_id)
    assert "ce-knativebrokerttl" not in headers
    assert stored_attributes(knfn, event_id, "headers")["knativebrokerttl"] == stored


def test_a_reply_comes_back_with_the_ttl_lowered_again(knfn: Knfn, recorder: Recorder) -> None:
    """TTL 10 in: 9 stored; the subscriber's reply re-enters with 8 (the filter keeps 9 on
    the reply, the ingress lowers it)."""
    sent = {**BINARY, "ce-id": "q2", "ce-type": "test.ask", "ce-knativebrokerttl": "10"}
    assert ingress(knfn, "POST", "/default/default", sent, b"")[0] == 202
    wait_for("the answer", lambda: "answer-q2" in recorder.ids("answers"))
    assert stored_attributes(knfn, "q2", "ask")["knativebrokerttl"] == "9"
    assert stored_attributes(knfn, "answer-q2", "answers")["knativebrokerttl"] == "8"


def test_a_0_3_event_is_delivered_as_0_3(knfn: Knfn, recorder: Recorder) -> None:
    """CloudEvents 0.3 is accepted and passed on unconverted, as the Go SDK does."""
    sent = {**BINARY, "ce-specversion": "0.3", "ce-id": "v03", "ce-type": "test.headers",
            "ce-schemaurl": "http://schema.example/s"}  # fmt: skip
    assert ingress(knfn, "POST", "/default/default", sent, b"")[0] == 202
    headers, _ = delivered(recorder, "headers", "v03")
    assert headers["ce-specversion"] == "0.3"
    assert headers["ce-schemaurl"] == "http://schema.example/s"


def test_kill_9_loses_no_accepted_event(knfn: Knfn, recorder: Recorder) -> None:
    """10,000 events to a slow subscriber, kill -9 of knfn half-way, restart: every event
    answered 202 is delivered at least once (counted by id)."""
    recorder.delay = 0.002
    events = [event("test.durable", f"d{i}") for i in range(10_000)]

    async def send_and_kill() -> list[int]:
        task = asyncio.create_task(post_events(knfn.port, events, clients=16))
        while sum(1 for c in recorder.calls["durable"]) < 200:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        knfn.kill9()
        return await task

    statuses = asyncio.run(send_and_kill())
    accepted = {events[i]["id"] for i, s in enumerate(statuses) if s == 202}
    assert 0 < len(accepted) < 10_000, len(accepted)
    delivered_before = len(recorder.ids("durable"))
    recorder.delay = 0.0
    knfn.start()
    wait_for(
        "every accepted event",
        lambda: accepted <= recorder.ids("durable"),
        timeout=120,
    )
    assert delivered_before < len(accepted)
    print(f"kill -9: accepted {len(accepted)} of 10000, delivered before restart "
          f"{delivered_before}, after restart all {len(accepted)}, lost 0")  # fmt: skip


def test_postgres_down_answers_503_never_202(knfn: Knfn) -> None:
    """With the database gone, the ingress refuses with 503: nothing is acknowledged unstored."""
    state = json.loads((knfn.project / ".knfn" / "services.json").read_text())
    os.kill(state["postgres"]["pid"], signal.SIGKILL)
    # Soon: knfn's supervisor restarts Postgres within a second or two.
    time.sleep(0.1)
    status, text = ingress(knfn, "POST", "/default/default", BINARY, b"")
    assert status == 503, text
    assert "database" in json.loads(text)["error"]

"""What a delivery carries, as knative/eventing sends it: the pass-through headers
(pkg/utils/headers.go), Kn-Namespace and Prefer: reply (pkg/broker/filter/filter_handler.go,
pkg/kncloudevents/event_dispatcher.go), the Trigger's delivery.format; and the ingress's TTL
rule (pkg/broker/ttl.go TTLDefaulter). Pure functions, and the dispatcher with a scripted
subscriber."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from knfn import manifests
from knfn.eventing import config as eventing_config
from knfn.eventing.broker import DEFAULT_TTL, next_ttl, parse_go_integer
from knfn.eventing.dispatcher import Dispatcher
from knfn.eventing.sending import (
    NOT_AUTO,
    canonical,
    delivery_headers,
    pass_through,
    reply_headers,
)
from knfn.eventing.store import Claimed, EventStore

# -- pass-through (pkg/utils/headers.go PassThroughHeaders) ----------------------------------


def test_pass_through_keeps_request_id_knative_b3_and_trace_context_only() -> None:
    """X-Request-Id, Retry-After, Knative-*, X-B3-* and traceparent/tracestate/baggage pass;
    ce-*, Content-Type, Host, User-Agent, Prefer and Kn-Namespace do not."""
    request = [
        ("x-request-id", "abc"),
        ("Retry-After", "5"),
        ("Knative-Serving-Namespace", "ns"),
        ("X-B3-TraceId", "b3"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("baggage", "k=v"),
        ("ce-id", "1"),
        ("Content-Type", "application/json"),
        ("Host", "broker-ingress.knative-eventing.svc.cluster.local"),
        ("User-Agent", "curl/8"),
        ("Prefer", "reply"),
        ("Kn-Namespace", "spoofed"),
    ]
    assert pass_through(request) == {
        "X-Request-Id": "abc",
        "Retry-After": "5",
        "Knative-Serving-Namespace": "ns",
        "X-B3-Traceid": "b3",
        "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Tracestate": "congo=t61rcWkgMzE",
        "Baggage": "k=v",
    }


def test_a_repeated_header_passes_as_one_comma_separated_line() -> None:
    """Two Knative-Foo lines keep both values."""
    assert pass_through([("Knative-Foo", "a"), ("knative-foo", "b")]) == {"Knative-Foo": "a, b"}


@pytest.mark.parametrize(
    ("name", "go"),
    [
        ("x-request-id", "X-Request-Id"),
        ("TRACEPARENT", "Traceparent"),
        ("x-b3-spanid", "X-B3-Spanid"),
    ],
)
def test_names_are_written_as_go_canonicalises_them(name: str, go: str) -> None:
    """textproto.CanonicalMIMEHeaderKey: first letter and each after '-' upper, rest lower."""
    assert canonical(name) == go


def test_a_subscriber_gets_prefer_reply_and_kn_namespace_a_dead_letter_sink_no_prefer() -> None:
    """event_dispatcher.go sets Prefer: reply for the destination only; Kn-Namespace is the
    Trigger's namespace (filter_handler.go send) and wins over a stored value."""
    stored = {"X-Request-Id": "abc"}
    assert delivery_headers(stored, "team", prefer_reply=True) == {
        "X-Request-Id": "abc",
        "Kn-Namespace": "team",
        "Prefer": "reply",
    }
    assert delivery_headers(stored, "team", prefer_reply=False) == {
        "X-Request-Id": "abc",
        "Kn-Namespace": "team",
    }


def test_a_reply_keeps_the_subscribers_pass_through_headers_and_the_trace() -> None:
    """The reply event enters the broker with the pass-through headers of the subscriber's
    response (not the original X-Request-Id) and the original trace context."""
    original = {"X-Request-Id": "first", "Traceparent": "00-trace-span-01"}
    response = [("X-Request-Id", "second"), ("Content-Type", "application/json"), ("Server", "x")]
    assert reply_headers(response, original) == {
        "X-Request-Id": "second",
        "Traceparent": "00-trace-span-01",
    }
    assert reply_headers([], original) == {"Traceparent": "00-trace-span-01"}


def test_aiohttp_adds_none_of_its_own_headers() -> None:
    """User-Agent, Accept, Accept-Encoding and a default Content-Type are left out."""
    assert set(NOT_AUTO) == {"User-Agent", "Accept", "Accept-Encoding", "Content-Type"}


# -- TTL (pkg/broker/ttl.go TTLDefaulter, sdk-go types.ParseInteger) ---------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (None, DEFAULT_TTL),  # absent: the default, not lowered
        ("255", 254),
        ("10", 9),
        ("2", 1),
        ("1", 0),  # refused by the ingress (0)
        ("0", 0),
        ("-5", 0),  # never below 0
        ("7.9", 6),  # a float is truncated toward zero, then lowered
        ("1e2", 99),
        ("0x1p4", 15),  # Go float syntax, hex with exponent
        ("abc", DEFAULT_TTL),  # not an integer: reset, not refused
        ("", DEFAULT_TTL),
        (" 5", DEFAULT_TTL),  # strconv.ParseFloat takes no spaces
        ("1_0", DEFAULT_TTL),
        ("nan", DEFAULT_TTL),
        ("inf", DEFAULT_TTL),
        ("3000000000", DEFAULT_TTL),  # outside int32
        ("true", DEFAULT_TTL),
    ],
)
def test_next_ttl(raw: str | None, stored: int) -> None:
    """Absent or not an int32: 255; otherwise lowered by one, floored at 0."""
    assert next_ttl(raw) == stored


def test_parse_go_integer_bounds() -> None:
    """int32 bounds are inclusive."""
    assert parse_go_integer(str(2**31 - 1)) == 2**31 - 1
    assert parse_go_integer(str(-(2**31))) == -(2**31)
    assert parse_go_integer(str(2**31)) is None


# -- the dispatcher's requests ---------------------------------------------------------------

EVENTING = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: team}
spec:
  delivery: {format: json, deadLetterSink: {uri: 'http://sink.example/dead'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: binary, namespace: team}
spec:
  broker: default
  subscriber: {uri: 'http://subscriber.example/'}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: structured, namespace: team}
spec:
  broker: default
  subscriber: {uri: 'http://subscriber.example/'}
  delivery: {format: json}
"""


class Recording:
    """Answers every request with one status; records each request."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})
        self.seen: list[tuple[dict[str, str], bytes]] = []

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> tuple[int, Mapping[str, str], bytes, None]:
        self.seen.append((dict(headers), body))
        return self.status, self.headers, b"", None


def dispatcher(tmp_path: Path, sub: Recording) -> Dispatcher:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(textwrap.dedent(EVENTING))
    config = eventing_config.load(manifests.load(base))
    store = EventStore("postgresql://unused")
    return Dispatcher("postgresql://unused", store, lambda: config, sub, clock=lambda: 0.0)


def claimed(trigger: str, kind: str = "subscriber") -> Claimed:
    return Claimed(
        id=1, event_id=1, namespace="team", trigger=trigger, kind=kind,
        destination="http://subscriber.example/", extensions={}, attempts=1,
        attributes={"specversion": "1.0", "id": "e1", "source": "/s", "type": "demo",
                    "datacontenttype": "application/json", "knativebrokerttl": "254"},
        data=b'{"n": 1}', broker="default", accepted_at=datetime.now(UTC),
        headers={"X-Request-Id": "req-1", "Traceparent": "00-t-s-01"},
    )  # fmt: skip


def test_a_delivery_to_a_subscriber_is_binary_with_the_knative_headers(tmp_path: Path) -> None:
    """Without the Trigger's own format (the Broker's json does not count): binary, with
    Prefer: reply, Kn-Namespace and the stored pass-through headers."""
    sub = Recording(200)
    assert asyncio.run(dispatcher(tmp_path, sub).attempt(claimed("binary"))).state == "delivered"
    [(headers, body)] = sub.seen
    assert headers["ce-id"] == "e1" and headers["Content-Type"] == "application/json"
    assert body == b'{"n": 1}'
    assert headers["Prefer"] == "reply" and headers["Kn-Namespace"] == "team"
    assert headers["X-Request-Id"] == "req-1" and headers["Traceparent"] == "00-t-s-01"
    assert "ce-knativebrokerttl" not in headers


def test_a_trigger_with_format_json_delivers_structured(tmp_path: Path) -> None:
    """delivery.format json: application/cloudevents+json, attributes in the body, no ce-*."""
    sub = Recording(200)
    asyncio.run(dispatcher(tmp_path, sub).attempt(claimed("structured")))
    [(headers, body)] = sub.seen
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert not [h for h in headers if h.lower().startswith("ce-")]
    doc = json.loads(body)
    assert (doc["id"], doc["data"]) == ("e1", {"n": 1}) and "knativebrokerttl" not in doc
    assert headers["Prefer"] == "reply" and headers["X-Request-Id"] == "req-1"


def test_a_dead_letter_is_binary_without_prefer_reply(tmp_path: Path) -> None:
    """The dead letter of a json-format Trigger goes binary, with Kn-Namespace and the
    pass-through headers but no Prefer: reply."""
    sub = Recording(200)
    asyncio.run(dispatcher(tmp_path, sub).attempt(claimed("structured", kind="dead-letter")))
    [(headers, _)] = sub.seen
    assert headers["ce-id"] == "e1" and "Prefer" not in headers
    assert headers["Kn-Namespace"] == "team" and headers["X-Request-Id"] == "req-1"


def test_a_reply_event_carries_the_responses_request_id_and_the_trace(tmp_path: Path) -> None:
    """The reply enters the broker with the subscriber's X-Request-Id and the trace context."""
    answer = {"ce-specversion": "1.0", "ce-id": "r1", "ce-source": "/sub", "ce-type": "demo",
              "X-Request-Id": "req-2"}  # fmt: skip
    outcome = asyncio.run(dispatcher(tmp_path, Recording(200, answer)).attempt(claimed("binary")))
    [reply] = outcome.replies
    assert dict(reply.headers) == {"X-Request-Id": "req-2", "Traceparent": "00-t-s-01"}

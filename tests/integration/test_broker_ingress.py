"""The broker ingress in-process against a real Postgres: bad input is a 4xx for itself alone.

The ingress is served by aiohttp on a free loopback port from a background thread, so requests
are plain HTTP from the test (concurrent ones too) and hypothesis can drive it example by
example. Nothing dispatches: the tests look at what was committed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knfn.backing import services
from knfn.eventing import cloudevent, filters
from knfn.eventing.broker import Ingress
from knfn.eventing.config import Broker, EventingConfig, Trigger
from knfn.eventing.delivery import DeliverySpec
from knfn.eventing.store import SCHEMA, Accept, Claimed, EventRejected, EventStore, NewDelivery
from knfn.ports import free_port
from tests.support import assert_json_error, binary, request

LIMIT = 64 * 1024  # a small body limit keeps the oversized examples cheap
PATH = "/default/default"
CONFIG = EventingConfig(
    brokers={("default", "default"): Broker("default", "default", DeliverySpec())},
    triggers=(
        Trigger("default", "all", "default", filters.match_all, "http://nowhere", DeliverySpec()),
    ),
)


class Served:
    """The ingress and its store on their own event loop in a thread."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.store = EventStore(database_url)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.call(self._start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> None:
        await self.store.open()
        app = web.Application(client_max_size=0)  # as the gateway: the ingress bounds reads
        app.router.add_route("*", "/{tail:.*}", Ingress(self.store, lambda: CONFIG, LIMIT).handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        await self.store.close()

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def post(
        self, headers: Mapping[str, str], body: bytes, *, chunked: bool = False
    ) -> tuple[int, str, bytes]:
        """(status, content type, body) of one POST, headers sent as given (latin-1)."""
        return request(
            self.port, "POST", PATH, headers, body, chunked=chunked, chunk_size=16 * 1024,
            timeout=30,
        )  # fmt: skip


@pytest.fixture(scope="module")
def served(backing: services.BackingEnv) -> Iterator[Served]:
    s = Served(backing.knfn_database_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def knfn_db(backing: services.BackingEnv) -> str:
    return backing.knfn_database_url


def stored_ids(database_url: str, source: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT attributes->>'id' FROM knfn_events WHERE attributes->>'source' = %s",
            (source,),
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_one_nul_event_among_63_fails_only_itself(served: Served, knfn_db: str) -> None:
    """64 concurrent posts sharing group commits: 63 x 202, the NUL one 400 naming 'id'."""
    source = f"/nul/{uuid.uuid4()}"
    ids = [f"ok-{i}" for i in range(63)] + ["a%00b"]
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda i: served.post(binary(source, i), b"{}"), ids))
    statuses = [r[0] for r in results]
    assert statuses.count(202) == 63 and statuses[-1] == 400, statuses
    message = assert_json_error(*results[-1])
    assert "'id'" in message and "NUL" in message
    assert stored_ids(knfn_db, source) == sorted(ids[:63])


def test_a_group_refused_for_its_data_is_committed_item_by_item(
    served: Served, knfn_db: str
) -> None:
    """Past validation, a NUL still fails only its own item: the others are committed."""
    source = f"/group/{uuid.uuid4()}"

    def item(event_id: str) -> Accept:
        attributes = {"specversion": "1.0", "id": event_id, "source": source, "type": "t"}
        return Accept("default", "default", attributes, None, [NewDelivery("all", "http://x")])

    async def accept_all() -> list[Any]:
        items = [item(f"ok-{i}") for i in range(20)] + [item("bad\x00")]
        return await asyncio.gather(
            *(served.store.accept(i) for i in items), return_exceptions=True
        )

    results = served.call(accept_all())
    assert all(isinstance(r, int) for r in results[:20]), results
    assert isinstance(results[20], EventRejected), results[20]
    assert stored_ids(knfn_db, source) == sorted(f"ok-{i}" for i in range(20))


def stored(database_url: str, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """(attributes, headers) of the one event stored with this source."""
    with psycopg.connect(database_url) as conn:
        [(attributes, headers)] = conn.execute(
            "SELECT attributes, headers FROM knfn_events WHERE attributes->>'source' = %s",
            (source,),
        ).fetchall()
    return attributes, headers


def test_options_and_405_answer_as_knatives_ingress(served: Served) -> None:
    """pkg/broker/ingress/ingress_handler.go: OPTIONS 200 with WebHook-Allowed-Origin and
    WebHook-Allowed-Rate "*" (cloudevents/spec http-webhook.md 4.2); GET 405; both, and
    every other answer, with Allow: POST, OPTIONS."""
    import http.client

    for method, status in (("OPTIONS", 200), ("GET", 405), ("PUT", 405), ("POST", 202)):
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        headers = binary("/methods", method) if method == "POST" else {}
        conn.request(method, PATH, body=b"{}" if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == status, method
        assert resp.getheader("Allow") == "POST, OPTIONS", method
        webhook = (resp.getheader("WebHook-Allowed-Origin"), resp.getheader("WebHook-Allowed-Rate"))
        assert webhook == (("*", "*") if method == "OPTIONS" else (None, None)), method


@pytest.mark.parametrize(
    ("ttl", "stored_ttl"),
    [(None, "255"), ("10", "9"), ("2", "1"), ("not-a-number", "255"), ("", "255")],
)
def test_the_ttl_is_lowered_or_reset(
    served: Served, knfn_db: str, ttl: str | None, stored_ttl: str
) -> None:
    """pkg/broker/ttl.go TTLDefaulter: absent or not an integer, 255; else lowered by one."""
    source = f"/ttl/{uuid.uuid4()}"
    headers = binary(source, "1")
    if ttl is not None:
        headers["ce-knativebrokerttl"] = ttl
    assert served.post(headers, b"{}")[0] == 202
    assert stored(knfn_db, source)[0]["knativebrokerttl"] == stored_ttl


@pytest.mark.parametrize("ttl", ["1", "0", "-3"])
def test_a_ttl_that_reaches_0_is_refused(served: Served, ttl: str) -> None:
    """1 lowered is 0, and 0 stays 0: the event has looped too often, 400."""
    status, content_type, body = served.post(
        {**binary("/ttl-end", "1"), "ce-knativebrokerttl": ttl}, b"{}"
    )
    assert status == 400
    assert "knativebrokerttl" in assert_json_error(status, content_type, body)


def test_the_pass_through_headers_are_stored_with_the_event(served: Served, knfn_db: str) -> None:
    """X-Request-Id, Knative-* and the trace context are kept (pkg/utils/headers.go); other
    headers are not."""
    source = f"/headers/{uuid.uuid4()}"
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {**binary(source, "1"), "X-Request-Id": "req-7", "traceparent": trace,
               "Knative-Custom": "k", "User-Agent": "test", "Prefer": "reply"}  # fmt: skip
    assert served.post(headers, b"{}")[0] == 202
    assert stored(knfn_db, source)[1] == {
        "X-Request-Id": "req-7",
        "Traceparent": trace,
        "Knative-Custom": "k",
    }


def test_a_0_3_event_is_accepted_and_stored_as_0_3(served: Served, knfn_db: str) -> None:
    """As the Go SDK reads it: specversion 0.3 kept, no conversion to 1.0."""
    source = f"/v03/{uuid.uuid4()}"
    headers = {**binary(source, "1"), "ce-specversion": "0.3", "ce-schemaurl": "http://s"}
    assert served.post(headers, b"{}")[0] == 202
    attributes, _ = stored(knfn_db, source)
    assert attributes["specversion"] == "0.3" and attributes["schemaurl"] == "http://s"


def test_a_store_made_before_the_headers_column_opens_and_delivers(
    backing: services.BackingEnv,
) -> None:
    """A state dir from before: knfn_events without ``headers`` gets the column on open, and
    its pending event is claimed with no headers."""
    name = f"old_{uuid.uuid4().hex[:12]}"
    admin_url = backing.knfn_database_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    old_schema = SCHEMA.split("ALTER TABLE knfn_events ADD COLUMN IF NOT EXISTS headers")[0]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(old_schema)
            conn.execute(
                "INSERT INTO knfn_events (namespace, broker, attributes)"
                " VALUES ('default', 'default', '{\"id\": \"old\"}')"
            )
            conn.execute(
                "INSERT INTO knfn_deliveries (event_id, namespace, trigger, destination)"
                " SELECT id, 'default', 't', 'http://x/' FROM knfn_events"
            )

        async def claim() -> list[Claimed]:
            store = EventStore(url)
            await store.open()
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    return await store.claim(conn, 10, timedelta(seconds=60))
            finally:
                await store.close()

        [claimed] = asyncio.run(claim())
        assert claimed.attributes == {"id": "old"} and claimed.headers == {}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_body_over_the_limit_is_413(served: Served) -> None:
    """Declared too large, or chunked past the limit: 413 with a JSON error naming the limit."""
    headers = binary("/big", "1")
    for chunked in (False, True):
        status, content_type, body = served.post(headers, b"x" * (LIMIT + 1), chunked=chunked)
        assert status == 413
        assert str(LIMIT) in assert_json_error(status, content_type, body)
    assert served.post(headers, b'"' + b"x" * (LIMIT - 2) + b'"')[0] == 202


# -- fuzz ------------------------------------------------------------------------------------

# What an HTTP parser takes in a header value: visible characters, space and obs-text (no DEL).
_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
_percent = st.lists(
    st.sampled_from(["%00", "%FF", "%C3%A9", "%E2%82", "%ED%A0%80", "%25", "%", "a", " ", '"']),
    max_size=10,
).map("".join)
# Up to what the HTTP parser takes (8190 bytes a line); its own 4xx are the gateway's part.
_huge = st.integers(4000, 8100).map(lambda n: "x" * n)
_value = st.one_of(_header_text, _percent, _huge, st.just(""))
_specversion = st.sampled_from(["1.0", "0.3", "1.0 ", "", "2.0", "1"]) | _value
_content_type = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json; charset=\u00e9",
        "nonsense",
        "",
    ]
)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


_data = st.one_of(
    st.binary(max_size=200),
    st.integers(0, 400).map(_nested),
    st.just(b"x" * (LIMIT + 1)),
    st.just(b'{"k": "\\u0000"}'),
    st.just(b'{"k": "\\ud800"}'),
    st.just(b"1" * 5000),
)


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    headers: dict[str, str] = {}
    for name in ("id", "source", "type"):
        if draw(st.booleans()) or draw(st.booleans()):
            headers[f"ce-{name}"] = draw(_value)
    if draw(st.integers(0, 3)):
        headers["ce-specversion"] = draw(_specversion)
    for name in draw(st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True), max_size=4)):
        headers[f"ce-{name}"] = draw(_value)
    if draw(st.integers(0, 20)) == 0:
        headers.update({f"ce-x{i}": "v" for i in range(70)})
    if draw(st.booleans()):
        headers["Content-Type"] = draw(_content_type)
    return headers, draw(_data)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8") | st.just("\ud800"), max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@st.composite
def structured_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    doc: dict[str, Any] = {}
    for name in ("specversion", "id", "source", "type"):
        if draw(st.integers(0, 5)):
            doc[name] = "1.0" if name == "specversion" and draw(st.booleans()) else draw(_json)
    doc.update(draw(st.dictionaries(st.text(max_size=8), _json, max_size=3)))
    if draw(st.booleans()):
        doc["data"] = draw(_json)
    if draw(st.integers(0, 4)) == 0:
        doc["data_base64"] = draw(st.text(max_size=10))
    body = json.dumps(doc).encode()
    tweak = draw(st.integers(0, 5))
    if tweak == 0:
        body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":' + draw(
            st.integers(100, 3000).map(_nested)
        )
    elif tweak == 1:
        body = body[: draw(st.integers(0, len(body)))] + draw(st.binary(max_size=5))
    return {"Content-Type": "application/cloudevents+json"}, body


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=st.one_of(binary_requests(), structured_requests()))
def test_fuzz_the_ingress_answers_202_or_a_json_4xx(
    served: Served, request: tuple[dict[str, str], bytes]
) -> None:
    """Any headers and body: 202, or a 4xx whose JSON body names the problem; never a 5xx."""
    headers, body = request
    status, content_type, answer = served.post(headers, body)
    assert status in (202, 400, 413), (status, answer[:300], headers, body[:200])
    if status != 202:
        assert_json_error(status, content_type, answer)


def test_the_ingress_still_accepts_after_the_fuzz(served: Served, knfn_db: str) -> None:
    """The committer survived whatever came before: a valid event is stored."""
    source = f"/after/{uuid.uuid4()}"
    assert served.post(binary(source, "1"), b"{}")[0] == 202
    assert stored_ids(knfn_db, source) == ["1"]


def test_every_accepted_event_converts_back_to_a_deliverable_request() -> None:
    """What the limits let in has header values under the line limit once encoded."""
    event = cloudevent.Event(
        {
            "specversion": "1.0",
            "id": "x" * cloudevent.MAX_ATTRIBUTE_BYTES,
            "source": "/s",
            "type": "t",
        }
    )
    headers, _ = cloudevent.to_binary(event)
    assert max(len(k) + 2 + len(v) for k, v in headers.items()) < 8190

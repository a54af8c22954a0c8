"""Bad input against `knfn dev` on the default project: a clear 4xx that hurts nobody else.

One `knfn dev` for the module (as tests/e2e/test_cli_dev.py starts it). The broker ingress:
one NUL event among 63 valid ones, a 50 MB event, a 200 KB event. Every function through the
gateway: a hypothesis fuzz of paths, query strings, headers and bodies.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support import assert_json_error, binary, knfn_dev, request

BROKER_HOST = "broker-ingress.knative-eventing.svc.cluster.local"
BROKER_PATH = "/default/default"
FUNCTIONS = (
    "hello", "ingest", "thumbnail", "catalog", "query", "event-display", "dead-letters",
    "minio-events",
)  # fmt: skip
pytestmark = pytest.mark.slow


class Dev:
    def __init__(self, proc: subprocess.Popen[str], port: int, admin_port: int) -> None:
        self.proc, self.port, self.admin_port = proc, port, admin_port

    def request(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str] = {},
        body: bytes = b"",
        *,
        chunked: bool = False,
    ) -> tuple[int, str, bytes]:
        """(status, content type, body); headers are sent as given."""
        return request(
            self.port, method, path, headers, body, host=host, chunked=chunked, timeout=60
        )

    def post_event(
        self, headers: Mapping[str, str], body: bytes, **kw: Any
    ) -> tuple[int, str, bytes]:
        return self.request("POST", BROKER_HOST, BROKER_PATH, headers, body, **kw)

    def deliveries(self) -> list[dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=30)
        try:
            conn.request("GET", "/events?limit=2000")
            return list(json.loads(conn.getresponse().read())["events"])
        finally:
            conn.close()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`knfn dev` on the default project, free ports, state in a temporary directory."""
    with knfn_dev(tmp_path_factory.mktemp("dev")) as run:
        yield Dev(run.proc, run.port, run.admin_port)


def wait_delivered(dev: Dev, ids: set[str], timeout: float = 60.0) -> set[str]:
    """The ids among these that event-display got, waiting up to timeout for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        done = {
            d["event_id"]
            for d in dev.deliveries()
            if d["trigger"] == "event-display-all" and d["state"] == "delivered"
        } & ids
        if done == ids or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def test_one_nul_event_among_63_is_refused_alone_and_the_rest_delivered(dev: Dev) -> None:
    """64 posted at once: 63 x 202, the ce-id a%00b one 400 naming id; the 63 delivered."""
    source = f"/nul/{uuid.uuid4()}"
    ids = [f"{uuid.uuid4()}" for _ in range(63)] + ["a%00b"]
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda i: dev.post_event(binary(source, i), b"{}"), ids))
    statuses = [r[0] for r in results]
    assert statuses.count(202) == 63 and statuses[-1] == 400, statuses
    assert "'id'" in assert_json_error(*results[-1])
    assert wait_delivered(dev, set(ids[:63])) == set(ids[:63])


def test_a_50_mb_event_is_413_and_memory_stays_flat(dev: Dev) -> None:
    """Declared or chunked, 50 MB is refused with 413; knfn's RSS grows by under 20 MiB."""
    dev.post_event(binary("/warm", "1"), b"{}")
    before = dev.rss_kib()
    big = b"x" * (50 * 1024 * 1024)
    for chunked in (False, True):
        status, content_type, body = dev.post_event(binary("/big", "1"), big, chunked=chunked)
        assert status == 413
        assert "1048576" in assert_json_error(status, content_type, body)
    after = dev.rss_kib()
    print(f"knfn VmRSS before {before} KiB, after {after} KiB")
    assert after - before < 20 * 1024


def test_a_200_kb_event_is_accepted_and_delivered(dev: Dev) -> None:
    """Under the 1 MiB default limit: 202, and event-display gets it."""
    event_id = str(uuid.uuid4())
    data = json.dumps({"blob": "y" * 200_000}).encode()
    status, _, body = dev.post_event(binary("/200kb", event_id), data)
    assert status == 202, body
    assert wait_delivered(dev, {event_id}) == {event_id}


# -- fuzz: every function through the gateway ------------------------------------------------

_hostile_text = st.one_of(
    st.sampled_from(
        [
            "%00",
            "a%00b",
            "%FF%FE",
            "%ED%A0%80",
            "9" * 5000,
            "-1",
            "99999999999999999999999",
            "1e9",
            "%C2%B2",
            "%5B" * 50,
            "%5B" * 2000,
            "",
            "null",
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
        lambda s: urllib.parse.quote(s, safe="")
    ),
)
_query_keys = st.sampled_from(
    ["limit", "offset", "cursor", "sleep", "prime", "bloat", "a%00b", "%00", "key"]
)
_path = st.lists(_hostile_text, max_size=3).map(lambda parts: "/" + "/".join(parts))
_path = _path | st.sampled_from(["/", "/objects", "/objects/a%00b", "/objects/" + "%00" * 100])


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


_body = st.one_of(
    st.binary(max_size=100),
    st.integers(500, 5000).map(_deep),
    st.just(b"9" * 5000),
    st.just(
        b'{"bucket": "b\\u0000", "key": "k\\u0000", "size": 99999999999999999999999,'
        b' "content_type": "x", "sha256": "' + b"a" * 64 + b'"}'
    ),
    st.just(b'{"Records": [' + b"[" * 3000 + b"]" * 3000 + b"]}"),
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "ce-specversion": st.sampled_from(["1.0", "0.3", ""]),
        "ce-id": _hostile_text,
        "ce-source": _hostile_text,
        "ce-type": st.sampled_from(["dev.knfn.object.stored", "dev.knfn.thumbnail.created", "x"]),
        "Content-Type": st.sampled_from(
            ["application/json", "application/cloudevents+json", "text/plain", "x/y", "image/png"]
        ),
        "Authorization": st.sampled_from(["Bearer x", "Bearer", "%00"]),
    },
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "OPTIONS"]))
    pairs = draw(st.lists(st.tuples(_query_keys, _hostile_text), max_size=3))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    path = draw(_path) + (f"?{query}" if query else "")
    # Within what an HTTP parser takes (8190 bytes a line); its own 4xx are the gateway's part.
    assume(len(path) < 8000)
    body = draw(_body) if method in ("POST", "PUT") else b""
    return method, path, draw(_headers), body


@pytest.mark.parametrize("function", FUNCTIONS)
def test_fuzz_every_function_never_answers_5xx(dev: Dev, function: str) -> None:
    """Hostile paths, queries, headers and bodies: never a 5xx; every 4xx body JSON with error."""

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(hostile_requests())
    def fuzz(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        host = f"{function}.default.svc.cluster.local"
        status, content_type, answer = dev.request(method, host, path, headers, body)
        assert status < 500, (status, method, path, headers, body[:200], answer[:500])
        if status >= 400:
            assert_json_error(status, content_type, answer)

    fuzz()

"""A replica forked from its revision's template behaves as a spawned one; the template's life.

Real processes: a template (knfn/serving/template_main.py) for a function, a replica forked from it
and one spawned with functions-framework, both started by knfn's own Replica with the same spec but
for the template. Both get the same requests and must give the same status, headers (but Date) and
body, and see the same process (env but PORT, argv, sys.path, cwd). Then what knfn relies on: a
forked replica's exit and code are reported, a dead template is replaced, and a function that
cannot be forked (an import error, a thread at import) gets spawned replicas.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from knfn import manifests
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.serving.replica import Replica, ReplicaSpec
from knfn.serving.replica_env import SecretValues, resolve
from knfn.serving.replica_records import ReplicaRecords
from knfn.serving.template import ForkedProcess, Template
from tests.support import REPO

pytestmark = pytest.mark.slow

FUNCTIONS_FRAMEWORK = str(Path(sys.executable).with_name("functions-framework"))
ECHO = Path(__file__).resolve().parent / "echo_function"
READY = 60.0

Response = tuple[int, list[tuple[str, str]], bytes]
EnvFor = Callable[[int], dict[str, str]]


def hello_env(tmp_path: Path) -> EnvFor:
    """hello's replica env from the real manifests, as knfn resolves it."""
    m = manifests.load(REPO / "knative" / "base", REPO / "functions")
    service = m.service("default", "hello")
    assert service is not None
    values = SecretValues({}, {}, tmp_path / "secrets.json")
    return lambda port: resolve(
        service, m, values, revision="hello-00001", port=port,
        proxy_url="http://127.0.0.1:9", host_env=os.environ,
    )  # fmt: skip


def echo_env(**extra: str) -> EnvFor:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "FUNCTION_TARGET": "echo",
        "FUNCTION_SIGNATURE_TYPE": "http",
        "HOST": "127.0.0.1",
        "K_SERVICE": "echo",
        "K_REVISION": "echo-00001",
        **extra,
    }
    return lambda port: {**base, "PORT": str(port)}


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> Response:
    """One request with fixed headers; status, headers without Date (sorted), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": "svc.default.localhost", "X-Parity": "1", "User-Agent": "parity"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        kept = sorted((k.lower(), v) for k, v in resp.getheaders() if k.lower() != "date")
        return resp.status, kept, resp.read()
    finally:
        conn.close()


def replica(
    directory: Path, env_for: EnvFor, index: int, template: Template | None, printer: Printer
) -> Replica:
    port = free_port()
    spec = ReplicaSpec(
        "svc", "svc-00001", index, (FUNCTIONS_FRAMEWORK,), directory, env_for(port), port,
        template=template,
    )  # fmt: skip
    return Replica(spec, printer)


def new_template(directory: Path, env_for: EnvFor, printer: Printer) -> Template:
    name = "svc/svc-00001/template"
    template = Template(name, FUNCTIONS_FRAMEWORK, directory, env_for(0), printer)
    template.start()
    return template


async def with_pair(
    directory: Path,
    env_for: EnvFor,
    check: Callable[[Replica, Replica, Template], Awaitable[None]],
    out: io.StringIO | None = None,
) -> None:
    """A template, a forked and a spawned replica of it, ready; check(forked, spawned, tpl)."""
    printer = Printer(out or io.StringIO())
    template = new_template(directory, env_for, printer)
    forked = replica(directory, env_for, 1, template, printer)
    spawned = replica(directory, env_for, 2, None, printer)
    try:
        await forked.start()
        await spawned.start()
        await asyncio.gather(forked.wait_ready(READY), spawned.wait_ready(READY))
        await check(forked, spawned, template)
    finally:
        await asyncio.gather(forked.stop(5), spawned.stop(5))
        await template.stop()


async def both(forked: Replica, spawned: Replica, *request: Any) -> tuple[Response, Response]:
    return (
        await asyncio.to_thread(fetch, forked.port, *request),
        await asyncio.to_thread(fetch, spawned.port, *request),
    )


def test_forked_hello_answers_as_a_spawned_one(tmp_path: Path) -> None:
    """hello forked and hello spawned: same status, headers and body for the same requests."""
    out = io.StringIO()

    async def check(forked: Replica, spawned: Replica, template: Template) -> None:
        assert template.state == "ready"
        assert isinstance(forked._proc, ForkedProcess)
        assert not isinstance(spawned._proc, ForkedProcess)
        # (no sleep=N: hello reports the time it slept, which differs from run to run)
        requests = [
            ("GET", "/"), ("GET", "/a/b?prime=1000"), ("GET", "/?sleep=x"), ("GET", "/?bloat=1"),
            ("POST", "/", b'{"a": 1}'), ("HEAD", "/"), ("GET", "/?prime=99999999999"),
        ]  # fmt: skip
        for request in requests:
            from_fork, from_spawn = await both(forked, spawned, *request)
            assert from_fork == from_spawn, request
        statuses = [(await asyncio.to_thread(fetch, forked.port, *r))[0] for r in requests]
        assert statuses == [200, 200, 400, 200, 405, 200, 400]

    asyncio.run(with_pair(REPO / "functions" / "hello", hello_env(tmp_path), check, out))
    lines = out.getvalue().splitlines()
    # Both replicas' output reaches the printer under their names: hello logs every request.
    for name in ("svc/svc-00001/1", "svc/svc-00001/2"):
        assert sum(1 for line in lines if line.startswith(name) and '"hello"' in line) >= 7


def test_forked_replica_sees_the_env_and_process_of_a_spawned_one() -> None:
    """The echo function forked and spawned: same env (but PORT), argv, sys.path, cwd, headers."""

    async def check(forked: Replica, spawned: Replica, template: Template) -> None:
        for request in (("GET", "/a/b?c=d"), ("POST", "/", b"body \xe2\x9c\x93")):
            from_fork, from_spawn = await both(forked, spawned, *request)
            seen = [json.loads(r[2]) for r in (from_fork, from_spawn)]
            for answer, rep in zip(seen, (forked, spawned), strict=True):
                assert answer["env"].pop("PORT") == str(rep.port)
                assert answer.pop("pid") != rep.pid  # gunicorn's worker answers
                # functions-framework's random id per request (random differs per process).
                assert len(answer["headers"].pop("Function-Execution-Id")) == 12
            # Imported once in the template, not in the forked replica itself.
            assert seen[0].pop("imported_in") == template_pid(template)
            assert seen[1].pop("imported_in") == spawned.pid
            assert seen[0] == seen[1]
            assert seen[0]["headers"]["X-Parity"] == "1"
            assert from_fork[:2] == from_spawn[:2]

    asyncio.run(with_pair(ECHO, echo_env(), check))


def template_pid(template: Template) -> int:
    assert template._proc is not None
    return template._proc.pid


def test_exits_are_reported_and_a_dead_template_is_replaced() -> None:
    """A forked replica's exit code arrives; a killed template's replicas go and it comes back."""

    async def scenario() -> None:
        env_for = echo_env()
        template = new_template(ECHO, env_for, Printer(io.StringIO()))
        try:
            first = await template.fork(env_for(free_port()))
            assert first is not None
            os.killpg(first.pid, signal.SIGKILL)
            assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL

            second = await template.fork(env_for(free_port()))
            assert second is not None and second.returncode is None
            old = template_pid(template)
            os.kill(old, signal.SIGKILL)
            assert await asyncio.wait_for(second.wait(), 10) == -signal.SIGKILL
            await until(lambda: not _alive(second.pid))
            third = await until_forked(template, env_for)
            assert template_pid(template) != old and third.returncode is None
            os.killpg(third.pid, signal.SIGTERM)
            assert await asyncio.wait_for(third.wait(), 30) == 0  # gunicorn's clean shutdown
        finally:
            await template.stop()

    asyncio.run(scenario())


async def until_forked(template: Template, env_for: EnvFor) -> ForkedProcess:
    for _ in range(300):
        child = await template.fork(env_for(free_port()))
        if child is not None:
            return child
        await asyncio.sleep(0.1)
    raise AssertionError(f"template not replaced: {template.state}")


async def until(check: Callable[[], bool]) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within 5 s")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [({"ECHO_THREAD_AT_IMPORT": "1"}, "fork unsafe"), ({"ECHO_FAIL_AT_IMPORT": "1"}, "import")],
)
def test_a_function_that_cannot_be_forked_gets_spawned_replicas(
    extra: Mapping[str, str], reason: str
) -> None:
    """A thread at import, or an import error: the template says so and replicas are spawned."""
    out = io.StringIO()

    async def scenario() -> None:
        env_for = echo_env(**extra)
        printer = Printer(out)
        template = new_template(ECHO, env_for, printer)
        rep = replica(ECHO, env_for, 1, template, printer)
        try:
            await rep.start()
            assert template.state == "failed"
            assert not isinstance(rep._proc, ForkedProcess)
            if "ECHO_FAIL_AT_IMPORT" not in extra:
                await rep.wait_ready(READY)
                assert (await asyncio.to_thread(fetch, rep.port, "GET", "/"))[0] == 200
        finally:
            await rep.stop(5)
            await template.stop()

    asyncio.run(scenario())
    assert "replicas are spawned" in out.getvalue()
    if reason == "fork unsafe":
        assert "fork unsafe" in out.getvalue() and "echo-idler" in out.getvalue()
    else:
        assert "told to fail at import" in out.getvalue()
    assert "code -9" not in out.getvalue()  # knfn's own SIGKILL is not the function's failure


def test_a_forked_replica_is_ready_on_its_ready_byte_and_answers_at_once() -> None:
    """No readiness probe in the manifest: the worker's ready byte makes it ready, no TCP probe
    (wait_ready takes no time at all), and the first request right after is answered."""

    async def scenario() -> None:
        printer = Printer(io.StringIO())
        template = new_template(ECHO, echo_env(), printer)
        forked = replica(ECHO, echo_env(), 1, template, printer)
        try:
            await forked.start()
            assert await forked.wait_ready(READY) == 0.0
            status, _, _ = await asyncio.to_thread(fetch, forked.port, "GET", "/")
            assert status == 200
        finally:
            await forked.stop(5)
            await template.stop()

    asyncio.run(scenario())


async def ready_spare(template: Template, *, after: int = 0) -> ForkedProcess:
    """The template's spare (not the one of pid after) once its worker serves."""
    for _ in range(300):
        spare = template._spare
        if spare is not None and spare.process.pid != after and spare.ready.done():
            assert spare.ready.result() is True
            return spare.process
        await asyncio.sleep(0.05)
    raise AssertionError(f"no spare ready within 15 s: {template.state}")


def test_a_spare_is_a_started_server_that_becomes_a_replica_when_taken(tmp_path: Path) -> None:
    """Ahead of need the spare listens on its own port with its worker up (warmed up without
    calling the function), recorded but no replica; taken, it is the replica at once (its port,
    its PORT); a new one follows, one that dies unused is replaced, and stopping the template
    takes the spare and its record with it."""

    async def scenario() -> None:
        records = ReplicaRecords(tmp_path / "replicas")
        printer = Printer(io.StringIO())
        env_for = echo_env()
        template = Template(
            "svc/svc-00001/template", FUNCTIONS_FRAMEWORK, ECHO, env_for(0), printer,
            records=records,
        )  # fmt: skip
        template.start()
        # The replica shares the records: it removes the spare's once it has stopped it.
        port = free_port()
        spec = ReplicaSpec("svc", "svc-00001", 1, (FUNCTIONS_FRAMEWORK,), ECHO, env_for(port),
                           port, template=template)  # fmt: skip
        forked = Replica(spec, printer, records)
        try:
            spare = await ready_spare(template)
            assert template.spare_pid == spare.pid and not template.spare_starting
            _, writer = await asyncio.open_connection("127.0.0.1", spare.port)  # it accepts
            writer.close()
            assert [(r.name, r.pid) for _, r in records.records() if r] == [
                ("svc/svc-00001/spare", spare.pid)
            ]

            await forked.start()
            assert forked.pid == spare.pid and forked.port == spare.port != forked.spec.port
            assert await forked.wait_ready(READY) == 0.0
            status, _, body = await asyncio.to_thread(fetch, forked.port, "GET", "/")
            answer = json.loads(body)
            assert status == 200 and answer["env"]["PORT"] == str(forked.port)
            assert answer["calls"] == 1  # its worker's warm-up request never reached echo

            second = await ready_spare(template, after=spare.pid)
            assert second.pid != spare.pid and second.port != spare.port
            os.killpg(second.pid, signal.SIGKILL)  # dies unused: replaced after a backoff
            third = await ready_spare(template, after=second.pid)
            assert third.pid not in (spare.pid, second.pid)
        finally:
            await forked.stop(5)
            await template.stop()
        await until(lambda: not _alive(third.pid))
        assert records.records() == []

    asyncio.run(scenario())

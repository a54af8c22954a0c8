"""Templates forked from the root template start as spawned ones would; the root's life.

Real processes: knfn's TemplateRoot (knfn/serving/template_root.py) with the project's functions'
requirements, a revision Template forked from it, a replica forked from that template and one
spawned with functions-framework. Both replicas must see the same process: env (but PORT), argv,
sys.path, cwd, and the working directory that modules kept at import. Then: a revision whose env
differs in a start-up variable gets a template of its own, and a killed root is replaced.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from knfn.logs import Printer
from knfn.ports import free_port
from knfn.serving.replica import Replica, ReplicaSpec
from knfn.serving.template import Template
from knfn.serving.template_root import TemplateRoot, requirement_files, root_env
from tests.integration.test_template_parity import fetch
from tests.support import REPO

pytestmark = pytest.mark.slow

FUNCTIONS_FRAMEWORK = str(Path(sys.executable).with_name("functions-framework"))
FUNCTION = Path(__file__).resolve().parent / "root_function"
READY = 60.0


def env_for(**extra: str) -> Callable[[int], dict[str, str]]:
    base = {
        **root_env(os.environ),
        "FUNCTION_TARGET": "root_echo",
        "FUNCTION_SIGNATURE_TYPE": "http",
        "HOST": "127.0.0.1",
        "K_SERVICE": "svc",
        **extra,
    }
    return lambda port: {**base, "PORT": str(port)}


def new_root(tmp_path: Path, out: io.StringIO) -> TemplateRoot:
    root = TemplateRoot(
        root_env(os.environ), requirement_files(REPO / "functions"), tmp_path / "root", Printer(out)
    )
    root.start()
    return root


def new_template(root: TemplateRoot, env: dict[str, str], out: io.StringIO) -> Template:
    template = Template("svc/svc-00001/template", FUNCTIONS_FRAMEWORK, FUNCTION, env, Printer(out),
                        root=root)  # fmt: skip
    template.start()
    return template


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def replica(env: Callable[[int], dict[str, str]], index: int, template: Template | None) -> Replica:
    port = free_port()
    spec = ReplicaSpec("svc", "svc-00001", index, (FUNCTIONS_FRAMEWORK,), FUNCTION, env(port),
                       port, template=template)  # fmt: skip
    return Replica(spec, Printer(io.StringIO()))


def test_a_template_forked_from_the_root_gives_replicas_that_see_what_spawned_ones_do(
    tmp_path: Path,
) -> None:
    """Same env (but PORT), argv, sys.path, cwd and import-time working directory."""
    out = io.StringIO()
    env = env_for()

    async def scenario() -> None:
        root = new_root(tmp_path, out)
        template = new_template(root, env(0), out)
        forked, spawned = replica(env, 1, template), replica(env, 2, None)
        try:
            await forked.start()
            await spawned.start()
            await asyncio.gather(forked.wait_ready(READY), spawned.wait_ready(READY))
            assert root.state == "ready" and template.state == "ready"
            assert template._proc is not None and root._proc is not None
            assert parent_of(template._proc.pid) == root._proc.pid
            seen = []
            for rep in (forked, spawned):
                answer = json.loads((await asyncio.to_thread(fetch, rep.spec.port, "GET", "/"))[2])
                assert answer["env"].pop("PORT") == str(rep.spec.port)
                answer.pop("imported_in")
                seen.append(answer)
            assert seen[0] == seen[1]
            assert seen[0]["cwd"] == str(FUNCTION)
            assert seen[0]["default_source"] == str(FUNCTION / "main.py")
            assert seen[0]["chdir_default"] == seen[0]["original_dir"] == str(FUNCTION)
        finally:
            await asyncio.gather(forked.stop(5), spawned.stop(5))
            await template.stop()
            await root.stop()

    asyncio.run(scenario())


def test_a_revision_whose_start_up_env_differs_gets_a_template_of_its_own(
    tmp_path: Path,
) -> None:
    """PYTHONHASHSEED is read as the interpreter starts: that template is spawned, and said."""
    out = io.StringIO()

    async def scenario() -> None:
        root = new_root(tmp_path, out)
        template = new_template(root, env_for(PYTHONHASHSEED="7")(0), out)
        try:
            assert await asyncio.wait_for(template._settled.wait(), READY)
            assert template.state == "ready" and template._proc is not None
            assert parent_of(template._proc.pid) == os.getpid()
        finally:
            await template.stop()
            await root.stop()

    asyncio.run(scenario())
    assert "env differs from template-root's in ['PYTHONHASHSEED']; started on its own" in (
        out.getvalue()
    )


def test_a_killed_root_is_replaced_and_its_templates_with_it(tmp_path: Path) -> None:
    """Its templates die with it (parent-death signal); each comes back forked by the new root."""
    out = io.StringIO()

    async def scenario() -> None:
        root = new_root(tmp_path, out)
        template = new_template(root, env_for()(0), out)
        try:
            await asyncio.wait_for(template._settled.wait(), READY)
            assert root._proc is not None and template._proc is not None
            old_root, old_template = root._proc.pid, template._proc.pid
            os.kill(old_root, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + READY
            while not (
                template.state == "ready"
                and template._proc is not None
                and template._proc.pid != old_template
                and root._proc.pid != old_root
            ):
                assert loop.time() < deadline, out.getvalue()
                await asyncio.sleep(0.05)
            assert parent_of(template._proc.pid) == root._proc.pid
            child = await template.fork(env_for()(free_port()))
            assert child is not None and child.returncode is None
            os.killpg(child.pid, signal.SIGKILL)
        finally:
            await template.stop()
            await root.stop()

    asyncio.run(scenario())
    assert "template-root exited with code -9; a new one follows" in out.getvalue()

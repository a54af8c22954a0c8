"""`knfn new` in a copy of the project: the new functions' own tests pass, the manifests render
and pass the manifest checks, `knfn dev` serves the HTTP one at its Knative host, and under
`knfn dev --watch` a CloudEvent consumer made while it runs gets the events of its type."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from knfn import manifests, schema
from tests.manifests import manifest_checks as mc
from tests.support import KNFN, REPO, DevRun, binary, knfn_dev, request

pytestmark = pytest.mark.slow

HTTP = "welcome"
EVENTS = "order-audit"
EVENT_TYPE = "com.example.order.created"
KUBECTL = Path(sys.executable).parent / "kubectl"
INSTALLED = (mc.External("ConfigMap", "config-br-default-channel", "knative-eventing"),)
OUT_OF_BAND = (
    *INSTALLED,
    *(
        mc.External("Secret", name)
        for name in ("postgres-credentials", "s3-credentials", "minio-webhook")
    ),
    mc.External("Secret", "minio-root-credentials"),
)


def copy_project(root: Path) -> Path:
    """The parts of the repository a project is made of, copied under root."""
    project = root / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for part in ("knative", "functions", "postgres", "minio"):
        shutil.copytree(REPO / part, project / part, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    return project


def knfn_new(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KNFN, "--project-dir", str(project), "new", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with an HTTP function made by `knfn new`."""
    made = copy_project(tmp_path_factory.mktemp("new"))
    done = knfn_new(made, HTTP, "--template", "http")
    assert done.returncode == 0, done.stderr
    assert f"created knative/base/service-{HTTP}.yaml" in done.stdout
    return made


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with one function of each template."""
    made = copy_project(tmp_path_factory.mktemp("both"))
    for args in ((HTTP, "--template", "http"), (EVENTS, "--template", "cloudevent")):
        done = knfn_new(made, *args, *(("--type", EVENT_TYPE) if EVENTS in args else ()))
        assert done.returncode == 0, done.stderr
    return made


def test_scaffolded_functions_tests_pass(both: Path) -> None:
    """pytest on the two new functions' own tests passes (and runs some)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(both / "functions" / HTTP), str(both / "functions" / EVENTS)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_scaffolded_code_passes_the_linter(both: Path) -> None:
    """ruff check and ruff format --check, with the project's settings, pass on the new code."""
    ruff = str(Path(sys.executable).parent / "ruff")
    folders = [f"functions/{HTTP}", f"functions/{EVENTS}"]
    for argv in ([ruff, "check", *folders], [ruff, "format", "--check", *folders]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=both, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_manifests_render_and_pass_the_checks(both: Path) -> None:
    """kubectl kustomize renders the base and both overlays with the new objects, and the
    offline checks (fields, Serving rules, function contract, references, hardening, images,
    quota, pinned requirements) and knfn's own loader find nothing wrong."""
    renders = {
        name: mc.render(KUBECTL, both / "knative" / name)
        for name in ("base", "overlays/dev", "overlays/prod")
    }
    for objs in renders.values():
        assert mc.find(objs, "Service", HTTP, mc.SERVING) is not None
        assert mc.find(objs, "Service", EVENTS, mc.SERVING) is not None
        trigger = mc.find(objs, "Trigger", "order-audit-order-created", mc.EVENTING)
        assert trigger is not None
        assert trigger["spec"]["filter"]["attributes"] == {"type": EVENT_TYPE}
        assert trigger["spec"]["subscriber"]["ref"]["name"] == EVENTS
    dev, prod = renders["overlays/dev"], renders["overlays/prod"]
    problems = [
        *mc.check_plain_base(both / "knative" / "base"),
        *mc.check_custom_schemas(dev),
        *mc.check_serving_rules(dev),
        *mc.check_function_contract(dev, both / "functions"),
        *mc.check_references(dev, INSTALLED),
        *mc.check_references(prod, OUT_OF_BAND),
        *mc.check_pod_security(dev),
        *mc.check_images(dev, require_digest=False),
        *mc.check_images(prod, require_digest=True),
        *mc.check_quota(prod),
        *mc.check_function_build_inputs(both / "functions", [HTTP, EVENTS]),
        *(
            f"{mc.describe(o)}: {u.path}: {u.problem}"
            for o in prod
            if (o.get("apiVersion"), o.get("kind")) in schema.KINDS
            for u in schema.unknown_fields(o)
        ),
    ]
    assert problems == []
    assert "dev.local/knfn/welcome:dev" in [image for _, image in mc.images(dev)]
    loaded = manifests.load(both / "knative" / "base", both / "functions")
    assert {HTTP, EVENTS} <= {s.name for s in loaded.services}


def test_name_taken_or_invalid_is_refused(project: Path) -> None:
    """A name that exists (a function folder or a Service) or is no DNS-1035 label is refused
    with the reason and exit 2, and nothing is written."""
    before = (project / "knative/base/kustomization.yaml").read_text()
    for name, reason in [
        (HTTP, "already exists"),
        ("hello", "already exists"),
        ("Hello", "not a DNS-1035 label"),
        ("2fast", "not a DNS-1035 label"),
        ("a" * 64, "at most 63"),
    ]:
        done = knfn_new(project, name, "--template", "http")
        assert done.returncode == 2, (name, done.stderr)
        assert reason in done.stderr, (name, done.stderr)
    assert (project / "knative/base/kustomization.yaml").read_text() == before
    assert not (project / "functions" / "Hello").exists()


@pytest.fixture(scope="module")
def running(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    with knfn_dev(tmp_path_factory.mktemp("dev"), project=project, args=["--watch"]) as run:
        yield run


def test_dev_serves_the_http_function_at_its_knative_host(running: DevRun) -> None:
    """`knfn dev` on the project serves the new function at welcome.default.localhost."""
    port = running.port
    status, _, body = request(port, "GET", "/?name=Ada", host=f"{HTTP}.default.localhost")
    assert status == 200, body
    assert json.loads(body) == {
        "message": "Hello, Ada!",
        "service": HTTP,
        "revision": f"{HTTP}-00001",
    }


def test_consumer_made_while_watching_gets_its_events(project: Path, running: DevRun) -> None:
    """Under `knfn dev --watch`, `knfn new --template cloudevent` adds a Service and Trigger
    that go live without a restart: an event of the chosen type sent to the broker reaches the
    new function (its log shows the event), an event of another type does not."""
    port, env = running.port, running.env
    done = knfn_new(project, EVENTS, "--template", "cloudevent", "--type", EVENT_TYPE)
    assert done.returncode == 0, done.stderr
    wanted, other = f"order-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
    broker = "broker-ingress.knative-eventing.localhost"
    deadline = time.monotonic() + 90
    # The new Trigger is live once the change is applied; until then the broker has no
    # subscriber for the type, so keep sending (each with its own id) until one arrives.
    sent: list[str] = []
    logs = ""
    while time.monotonic() < deadline:
        event_id = f"{wanted}-{len(sent)}"
        status, _, body = request(
            port, "POST", "/default/default", binary("/tests", event_id, EVENT_TYPE),
            b'{"n": 1}', host=broker,
        )  # fmt: skip
        assert status == 202, body
        sent.append(event_id)
        time.sleep(2)
        logs = subprocess.run(
            [KNFN, "--project-dir", str(project), "logs", EVENTS],
            capture_output=True, text=True, env=dict(env), timeout=30, check=False,
        ).stdout  # fmt: skip
        if any(e in logs for e in sent):
            break
    # `knfn logs` prints each line as `service/revision/replica | <the function's line>`.
    lines = [line.partition(" | ")[2] for line in logs.splitlines()]
    received = [json.loads(line) for line in lines if line.startswith("{")]
    handled = [r for r in received if r.get("message") == "event handled"]
    assert any(r["ce_id"] in sent and r["ce_type"] == EVENT_TYPE for r in handled), logs[-2000:]

    status, _, _ = request(
        port, "POST", "/default/default", binary("/tests", other, "com.example.other"),
        b"{}", host=broker,
    )  # fmt: skip
    assert status == 202
    time.sleep(3)
    logs = subprocess.run(
        [KNFN, "--project-dir", str(project), "logs", EVENTS],
        capture_output=True, text=True, env=dict(env), timeout=30, check=False,
    ).stdout  # fmt: skip
    assert other not in logs

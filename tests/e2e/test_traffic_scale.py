"""A revision at 0% in spec.traffic keeps its min-scale replica, as in Knative: `knfn dev --watch`
as a subprocess on a one-Service project, read through its admin /status.

Knative keeps every revision a route names active (knative/serving
pkg/reconciler/labeler/metasync.go sets serving.knative.dev/routingState=active on each, whatever
its percent), so the PodAutoscaler is reachable and min-scale holds
(pkg/reconciler/revision/resources/pa.go, pkg/apis/autoscaling/v1alpha1/pa_lifecycle.go
ScaleBounds). A revision no route names goes to "reserve" and scales to zero.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import KNFN, READY_LINE, REPO, dev_env, revisions_of, running

pytestmark = pytest.mark.slow

# The KPA's windows shortened (documented local-only settings), so "idle long enough to scale
# to zero" is seconds: what keeps the replica here is min-scale, not a long window.
FAST_AUTOSCALER = {
    "KNFN_AUTOSCALER_STABLE_WINDOW": "2s",
    "KNFN_AUTOSCALER_SCALE_TO_ZERO_GRACE": "0s",
    "KNFN_AUTOSCALER_TICK": "500ms",
}


def hello(version: str, traffic: str = "") -> str:
    """The hello Service: min-scale 1, a template that changes with version."""
    return textwrap.dedent(
        f"""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata: {{name: hello, namespace: default}}
        spec:
          template:
            metadata:
              annotations: {{autoscaling.knative.dev/min-scale: "1"}}
            spec:
              containers:
                - image: knfn/hello
                  env:
                    - {{name: FUNCTION_TARGET, value: hello}}
                    - {{name: FUNCTION_SIGNATURE_TYPE, value: http}}
                    - {{name: VERSION, value: "{version}"}}
        """
    ) + textwrap.indent(textwrap.dedent(traffic), "  ")


PINNED_AT_ZERO = """\
traffic:
  - {revisionName: hello-00001, percent: 0}
  - {latestRevision: true, percent: 100}
"""


@dataclass
class Dev:
    admin_port: int
    port: int
    project: Path
    log: Path
    alive: Callable[[], bool]

    def revisions(self) -> dict[str, dict[str, Any]]:
        return revisions_of(self.admin_port, "hello")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.alive(), self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.revisions()}"
            time.sleep(0.2)

    def write(self, manifest: str) -> None:
        (self.project / "knative" / "base" / "services.yaml").write_text(manifest)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    project = tmp_path / "project"
    (project / "knative" / "base").mkdir(parents=True)
    (project / "knative" / "base" / "kustomization.yaml").write_text("resources: [services.yaml]\n")
    ignore = shutil.ignore_patterns("tests", "__pycache__")
    shutil.copytree(REPO / "functions" / "hello", project / "functions" / "hello", ignore=ignore)
    (project / "knative" / "base" / "services.yaml").write_text(hello("1"))
    env = dev_env(tmp_path / ".knfn", **FAST_AUTOSCALER)
    log = tmp_path / "dev.log"
    argv = [KNFN, "--project-dir", str(project), "dev", "--watch"]
    with running(argv, env=env, log=log) as proc:
        running_dev = Dev(
            int(env["KNFN_ADMIN_PORT"]), int(env["KNFN_PORT"]), project, log,
            lambda: proc.poll() is None,
        )  # fmt: skip
        running_dev.wait_for("ready", lambda: READY_LINE in log.read_text(), timeout=120)
        yield running_dev


def served_by(dev: Dev) -> str:
    """The revision that answers a request to hello through the gateway."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{dev.port}/", headers={"Host": "hello.default.localhost"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.loads(resp.read())["revision"])


def test_a_revision_at_zero_percent_keeps_its_min_scale_replica(dev: Dev) -> None:
    """hello-00001 (min-scale 1) pinned at 0% without a tag beside the latest at 100%: it takes
    no requests and keeps its ready replica through many idle autoscaler ticks, marked active;
    once spec.traffic no longer names it, it is drained and gone."""
    dev.wait_for("hello-00001 ready", lambda: dev.revisions()["hello-00001"]["ready_replicas"] == 1)
    dev.write(hello("2", PINNED_AT_ZERO))
    dev.wait_for(
        "hello-00002 taking the traffic",
        lambda: (
            dev.revisions().get("hello-00002", {}).get("traffic_percent") == 100
            and dev.revisions()["hello-00002"]["ready_replicas"] >= 1
        ),
    )
    assert {served_by(dev) for _ in range(5)} == {"hello-00002"}
    # Idle for four stable windows of 2 s with a 0 s grace: a revision the autoscaler were free
    # to scale down would be at zero by now.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        old = dev.revisions()["hello-00001"]
        assert (old["traffic_percent"], old["routing_state"]) == (0, "active"), old
        assert old["ready_replicas"] == 1 and old["desired_replicas"] == 1, old
        time.sleep(0.5)
    dev.write(hello("2"))
    dev.wait_for("hello-00001 gone once unnamed", lambda: "hello-00001" not in dev.revisions())

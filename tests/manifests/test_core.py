"""Built-in Kubernetes objects validate strictly against the OpenAPI schema, and every pod is
hardened (non-root, read-only root filesystem, no privilege escalation, resources)."""

from __future__ import annotations

import copy

import manifest_checks as mc
import pytest

# The Kubernetes version the kind cluster in scripts/cluster.sh runs (kindest/node v1.34).
K8S_VERSION = "1.34.0"


@pytest.mark.parametrize(
    "name", ["knative/overlays/dev", "knative/overlays/prod", "minio/prod", "postgres/dev"]
)
def test_core_objects_validate_strictly(renders: dict[str, list[mc.Obj]], name: str) -> None:
    """Every built-in object (ConfigMap, Secret, Service, StatefulSet, Job, PDB, quota...)
    passes the strict schema: no unknown fields, right types."""
    objs = renders[name]
    assert [o for o in objs if mc.is_core(o)], "no built-in objects to check"
    assert mc.check_core_schemas(objs, K8S_VERSION) == []


def test_custom_resources_are_left_to_the_knative_checks(dev: list[mc.Obj]) -> None:
    """Knative kinds are not core; ConfigMaps, apps/v1 and policy/v1 are."""
    kinds = {(mc.group_of(o), o["kind"]) for o in dev if not mc.is_core(o)}
    assert kinds == {
        ("serving.knative.dev", "Service"),
        ("eventing.knative.dev", "Broker"),
        ("eventing.knative.dev", "Trigger"),
        ("sources.knative.dev", "SinkBinding"),
        ("sources.knative.dev", "PingSource"),
    }


def test_core_schema_rejects_unknown_field_and_wrong_type(dev: list[mc.Obj]) -> None:
    """A misspelt StatefulSet field and a string replica count are both caught."""
    objs = copy.deepcopy(dev)
    sts = mc.find(objs, "StatefulSet", "minio", "apps")
    assert sts is not None
    sts["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    job = mc.find(objs, "Job", "migrate", "batch")
    assert job is not None
    job["spec"]["backoffLimit"] = "ten"
    problems = mc.check_core_schemas(objs, K8S_VERSION)
    assert len(problems) == 2
    assert any("StatefulSet.apps default/minio" in p and "imagePullPolicyy" in p for p in problems)
    assert any("Job.batch default/migrate" in p and "backoffLimit" in p for p in problems)


def test_core_schema_rejects_unknown_kind() -> None:
    """A built-in group with a kind Kubernetes does not have is reported."""
    obj = {"apiVersion": "v1", "kind": "Secrets", "metadata": {"name": "x"}}
    problems = mc.check_core_schemas([obj], K8S_VERSION)
    assert len(problems) == 1
    assert "Secrets" in problems[0]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pods_are_hardened(renders: dict[str, list[mc.Obj]], overlay: str) -> None:
    """Every container of every Service, Job and StatefulSet is non-root, read-only,
    unprivileged and sized."""
    assert mc.check_pod_security(renders[f"knative/overlays/{overlay}"]) == []


def test_every_function_mounts_a_writable_tmp(dev: list[mc.Obj]) -> None:
    """With a read-only root filesystem, /tmp is an emptyDir in every function."""
    for ksvc in mc.knative_services(dev):
        spec = ksvc["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], ksvc["metadata"]["name"]


def test_pod_security_reports_each_gap(dev: list[mc.Obj]) -> None:
    """Removing the hardening from one container yields one problem per missing setting."""
    objs = copy.deepcopy(dev)
    ksvc = mc.find(objs, "Service", "query", mc.SERVING)
    assert ksvc is not None
    container = ksvc["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"allowPrivilegeEscalation": True}
    del container["resources"]["limits"]
    problems = mc.check_pod_security(objs)
    assert len(problems) == 5
    for fragment in (
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "capabilities.drop",
        "no memory limit",
    ):
        assert any(fragment in p and "default/query" in p for p in problems), fragment

"""Loading knative/base: the repository's manifests load; broken ones name file, object, field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from knfn import manifests
from knfn.serving.replica_env import SecretValues, resolve
from tests.support import REPO

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  template:
    spec:
      containerConcurrency: 2
      containers:
        - image: x
          env: [{name: GREETING, value: hi}, {name: SHARED, value: from-env}]
          envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: creds}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default}
data: {SHARED: from-configmap, ONLY_CM: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: default}
stringData: {DATABASE_URL: change-me, API_TOKEN: change-me}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: echo-sink, namespace: default}
spec:
  subject: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
  ceOverrides: {extensions: {origin: echo}}
"""


def write_base(tmp_path: Path, body: str) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(textwrap.dedent(body))
    return base


def test_repository_manifests_load_with_every_function() -> None:
    """knative/base loads, and every Service has its functions/<name>/main.py."""
    m = manifests.load(REPO / "knative" / "base")
    names = {s.name for s in m.services}
    assert {"hello", "ingest", "thumbnail", "catalog", "query"} <= names


def test_env_precedence_secrets_sink_and_contract(tmp_path: Path) -> None:
    """env beats envFrom; Secrets filled from backing, then user env; SinkBinding and K_* set."""
    m = manifests.load(write_base(tmp_path, SERVICE))
    values = SecretValues(
        {"DATABASE_URL": "postgresql://local"}, {"API_TOKEN": "user-token"}, tmp_path / "s.json"
    )
    env = resolve(
        m.services[0], m, values, revision="echo-00001", port=9123, proxy_url="http://gw",
        host_env={"PATH": "/bin", "SECRET_OF_HOST": "no"},
    )  # fmt: skip
    assert env["SHARED"] == "from-env" and env["ONLY_CM"] == "1" and env["GREETING"] == "hi"
    assert env["DATABASE_URL"] == "postgresql://local" and env["API_TOKEN"] == "user-token"
    assert env["K_SINK"] == (
        "http://broker-ingress.knative-eventing.svc.cluster.local/default/default"
    )
    assert env["K_CE_OVERRIDES"] == '{"extensions":{"origin":"echo"}}'
    assert (env["PORT"], env["K_SERVICE"], env["K_REVISION"]) == ("9123", "echo", "echo-00001")
    assert env["HTTP_PROXY"] == "http://gw" and "SECRET_OF_HOST" not in env


def test_unfilled_secret_key_is_generated_once(tmp_path: Path) -> None:
    """A Secret key with no local source gets a random value that stays the same."""
    values = SecretValues({}, {}, tmp_path / "secrets.json")
    first = values.value("MINIO_WEBHOOK_TOKEN")
    again = SecretValues({}, {}, tmp_path / "secrets.json").value("MINIO_WEBHOOK_TOKEN")
    assert first == again and len(first) >= 24


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("kind: Service", "kind: Servise", "apiVersion/kind"),
        ("containerConcurrency: 2", "containerConcurrency: 5000", "containerConcurrency"),
        ("{name: GREETING, value: hi}", "{name: PORT, value: '1'}", "env[0]"),
        ("metadata: {name: echo, namespace: default}", "metadata: {namespace: default}", "name"),
    ],
)
def test_invalid_manifest_names_file_object_and_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """Each broken object stops loading with the file, the object and the field in the message."""
    base = write_base(tmp_path, SERVICE.replace(old, new, 1))
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load(base)
    assert str(base / "objects.yaml") in str(info.value)
    assert field in info.value.field


def test_service_without_function_code_is_rejected(tmp_path: Path) -> None:
    """A Service with no functions/<name>/main.py is named as the problem."""
    base = write_base(tmp_path, SERVICE)
    (tmp_path / "functions").mkdir()
    with pytest.raises(manifests.ManifestError, match="no function code"):
        manifests.load(base, tmp_path / "functions")


def test_autoscaling_annotation_out_of_range_names_it(tmp_path: Path) -> None:
    """An autoscaling annotation outside its range stops loading, naming annotation and value."""
    broken = SERVICE.replace(
        "    spec:\n      containerConcurrency: 2",
        "    metadata:\n      annotations: {autoscaling.knative.dev/window: '2s'}\n"
        "    spec:\n      containerConcurrency: 2",
    )
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load(write_base(tmp_path, broken))
    assert info.value.field == "spec.template.metadata.annotations"
    assert "autoscaling.knative.dev/window" in str(info.value) and "2s" in str(info.value)


def test_traffic_that_does_not_sum_to_100_names_it(tmp_path: Path) -> None:
    """A traffic block summing to 90 stops loading with the sum in the message."""
    broken = SERVICE.replace(
        "spec:\n  template:",
        "spec:\n  traffic: [{latestRevision: true, percent: 90}]\n  template:",
        1,
    )
    with pytest.raises(manifests.ManifestError, match="sum to 90, not 100"):
        manifests.load(write_base(tmp_path, broken))

"""Strict manifests: a misspelled field in any Knative object stops loading, naming file, object,
field and the closest known name; the repository's own manifests load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from knfn import manifests, schema
from knfn.eventing import config as eventing_config
from tests.manifests.manifest_pipeline import FUNCTIONS
from tests.support import REPO

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  template:
    metadata: {annotations: {autoscaling.knative.dev/target: "5"}}
    spec:
      containerConcurrency: 1
      containers:
        - image: x
          env: [{name: A, value: b}]
          envFrom: [{configMapRef: {name: cfg}}]
          readinessProbe: {httpGet: {path: /}}
          resources: {limits: {memory: 1Gi, any-key: 1}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {sizeLimit: 64Mi}}]
  traffic: [{latestRevision: true, percent: 100}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default, labels: {free: form}}
data: {ANY_KEY: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: default}
stringData: {ANY_KEY: x}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
spec: {delivery: {retry: 2, deadLetterSink: {uri: "http://dl.example"}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: all, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: any.key.is.free}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}}
---
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: echo-sink, namespace: default}
spec:
  subject: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
  ceOverrides: {extensions: {free: form}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: beat, namespace: default}
spec:
  schedule: "* * * * *"
  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: seq, namespace: default}
spec:
  steps: [{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}}]
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: par, namespace: default}
spec:
  branches: [{subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: echo}}}]
"""


def write_base(tmp_path: Path, body: str) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(textwrap.dedent(body))
    return base


def test_the_valid_set_loads_with_free_form_keys(tmp_path: Path) -> None:
    """Every kind with its usual fields, and user keys in labels, data, limits, attributes."""
    m = manifests.load(write_base(tmp_path, SERVICE))
    config = eventing_config.load(m)
    assert m.services[0].container_concurrency == 1
    assert [t.name for t in config.triggers] == ["all"]


@pytest.mark.parametrize(
    ("good", "typo", "obj", "field", "suggestion"),
    [
        ("containerConcurrency: 1", "containerConcurency: 1", "Service echo",
         "spec.template.spec.containerConcurency", "containerConcurrency"),
        ("- image: x", "- imag: x", "Service echo",
         "spec.template.spec.containers[0].imag", "image"),
        ("{name: A, value: b}", "{name: A, vaule: b}", "Service echo",
         "spec.template.spec.containers[0].env[0].vaule", "value"),
        ("{configMapRef: {name: cfg}}", "{configMapref: {name: cfg}}", "Service echo",
         "spec.template.spec.containers[0].envFrom[0].configMapref", "configMapRef"),
        ("{httpGet: {path: /}}", "{httpGet: {paht: /}}", "Service echo",
         "spec.template.spec.containers[0].readinessProbe.httpGet.paht", "path"),
        ("[{name: tmp, mountPath: /tmp}]", "[{name: tmp, mountpath: /tmp}]", "Service echo",
         "spec.template.spec.containers[0].volumeMounts[0].mountpath", "mountPath"),
        ("emptyDir: {sizeLimit", "emptyDir: {sizelimit", "Service echo",
         "spec.template.spec.volumes[0].emptyDir.sizelimit", "sizeLimit"),
        ("metadata: {annotations:", "metadata: {anotations:", "Service echo",
         "spec.template.metadata.anotations", "annotations"),
        ("[{latestRevision: true", "[{latestRevison: true", "Service echo",
         "spec.traffic[0].latestRevison", "latestRevision"),
        ("data: {ANY_KEY", "date: {ANY_KEY", "ConfigMap cfg", "date", "data"),
        ("stringData: {ANY_KEY", "stringdata: {ANY_KEY", "Secret creds",
         "stringdata", "stringData"),
        ("spec: {delivery: {retry: 2,", "spec: {delivery: {retries: 2,", "Broker default",
         "spec.delivery.retries", "retry"),
        ("filter: {attributes:", "filter: {atributes:", "Trigger all",
         "spec.filter.atributes", "attributes"),
        ("  broker: default", "  brokr: default", "Trigger all", "spec.brokr", "broker"),
        ("subject: {apiVersion", "subjects: {apiVersion", "SinkBinding echo-sink",
         "spec.subjects", "subject"),
        ("ceOverrides: {extensions", "ceOverrides: {extension", "SinkBinding echo-sink",
         "spec.ceOverrides.extension", "extensions"),
        ('schedule: "*', 'scheduel: "*', "PingSource beat", "spec.scheduel", "schedule"),
        ("steps: [{ref:", "steps: [{reff:", "Sequence seq", "spec.steps[0].reff", "ref"),
        ("branches: [{subscriber:", "branches: [{subscribr:", "Parallel par",
         "spec.branches[0].subscribr", "subscriber"),
        ("metadata: {name: cfg, namespace: default, labels",
         "metadata: {name: cfg, namespace: default, label", "ConfigMap cfg",
         "metadata.label", "labels"),
    ],
)  # fmt: skip
def test_a_misspelled_field_is_refused_naming_it(
    tmp_path: Path, good: str, typo: str, obj: str, field: str, suggestion: str
) -> None:
    """The ManifestError names the file, the object, the field's path and the closest name."""
    assert SERVICE.count(good) == 1, good
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load(write_base(tmp_path, SERVICE.replace(good, typo)))
    err = info.value
    assert (err.path.name, err.obj, err.field) == ("objects.yaml", obj, field)
    assert f"did you mean {suggestion}?" in err.problem
    assert str(err).startswith(f"{err.path}: {obj}: {field}: unknown field")


def test_every_unknown_field_is_listed(tmp_path: Path) -> None:
    """Two typos in one object: the first is the error, the second is named too."""
    broken = SERVICE.replace("containerConcurrency: 1", "containerConcurency: 1\n      foo: 2")
    with pytest.raises(manifests.ManifestError) as info:
        manifests.load(write_base(tmp_path, broken))
    assert info.value.field == "spec.template.spec.containerConcurency"
    assert "also unknown: spec.template.spec.foo" in info.value.problem


def test_a_field_knative_masks_out_is_refused(tmp_path: Path) -> None:
    """Pod fields Knative does not let through (lifecycle, hostPort) are unknown here too."""
    broken = SERVICE.replace("- image: x", "- image: x\n          lifecycle: {}")
    with pytest.raises(manifests.ManifestError, match=r"containers\[0\]\.lifecycle"):
        manifests.load(write_base(tmp_path, broken))


def test_no_suggestion_when_nothing_is_close() -> None:
    """A name like no known one gets the list of known names, without a guess."""
    doc = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "spec": {"zzz": 1}}
    [unknown] = schema.unknown_fields(doc)
    assert (unknown.path, unknown.suggestion) == ("spec.zzz", None)
    assert unknown.problem == "unknown field; known here: config, delivery"


def test_the_repository_manifests_have_no_unknown_field() -> None:
    """knative/base loads as it is (the overlays are checked in tests/manifests)."""
    m = manifests.load(REPO / "knative" / "base")
    assert set(FUNCTIONS) <= {s.name for s in m.services}  # and any made by `knfn new`

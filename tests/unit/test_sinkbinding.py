"""SinkBindings: checked when the manifests are read, resolved once, given to the subject."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from knfn import manifests
from knfn.eventing.flows import sequence_host
from knfn.routing import BROKER_INGRESS
from knfn.serving.replica_env import SecretValues, resolve

SERVICES = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: ingest, namespace: default}
spec: {template: {spec: {containers: [{image: knfn/ingest}]}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: other, namespace: default}
spec: {template: {spec: {containers: [{image: knfn/other}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: chain, namespace: default}
spec:
  steps: [{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: other}}]
"""


def binding(subject: str, sink: str, extra: str = "") -> str:
    return f"""\
---
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {{name: ingest-sink, namespace: default}}
spec:
  subject: {subject}
  sink: {sink}
{extra}"""


TO_INGEST = "{apiVersion: serving.knative.dev/v1, kind: Service, name: ingest}"
TO_BROKER = "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}"


def load(tmp_path: Path, body: str) -> manifests.Manifests:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(SERVICES + textwrap.dedent(body))
    return manifests.load(base)


def test_a_binding_gives_its_subject_k_sink_and_overrides(tmp_path: Path) -> None:
    """K_SINK is the sink's address; K_CE_OVERRIDES the overrides as compact JSON."""
    m = load(tmp_path, binding(TO_INGEST, TO_BROKER, "  ceOverrides: {extensions: {a: b}}\n"))
    assert m.sink_env == {
        ("default", "ingest"): {
            "K_SINK": f"{BROKER_INGRESS}/default/default",
            "K_CE_OVERRIDES": '{"extensions":{"a":"b"}}',
        }
    }


def test_only_the_subjects_replicas_get_the_sink(tmp_path: Path) -> None:
    """The replica environment of the subject has K_SINK; another Service's has not."""
    m = load(tmp_path, binding(TO_INGEST, TO_BROKER))
    values = SecretValues({}, {}, tmp_path / "secrets.json")

    def env(name: str) -> dict[str, str]:
        service = m.service("default", name)
        assert service is not None
        return resolve(
            service, m, values, revision=f"{name}-00001", port=1, proxy_url="http://gw",
            host_env={},
        )  # fmt: skip

    assert env("ingest")["K_SINK"] == f"{BROKER_INGRESS}/default/default"
    assert "K_SINK" not in env("other")


@pytest.mark.parametrize(
    ("sink", "url"),
    [
        ("{uri: 'http://example.com/in'}", "http://example.com/in"),
        (
            "{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: other}, uri: /in}",
            "http://other.default.svc.cluster.local/in",
        ),
        (
            "{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: chain}}",
            "http://" + sequence_host("default", "chain"),
        ),
    ],
)
def test_the_sink_is_resolved_like_every_destination(tmp_path: Path, sink: str, url: str) -> None:
    """uri, ref + path and a flow are all resolved by destinations.py."""
    m = load(tmp_path, binding(TO_INGEST, sink))
    assert m.sink_env[("default", "ingest")]["K_SINK"] == url


@pytest.mark.parametrize(
    ("subject", "sink", "fld", "problem"),
    [
        (
            "{apiVersion: serving.knative.dev/v1, kind: Service, name: ingets}",
            TO_BROKER,
            "spec.subject",
            "no Service default/ingets in the manifests",
        ),
        (
            "{apiVersion: apps/v1, kind: Deployment, name: ingest}",
            TO_BROKER,
            "spec.subject",
            "must name a Knative Service",
        ),
        (
            "{apiVersion: serving.knative.dev/v1, kind: Service}",
            TO_BROKER,
            "spec.subject.name",
            "is required",
        ),
        (
            TO_INGEST,
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: defualt}}",
            "spec.sink",
            "no Broker default/defualt in the manifests",
        ),
        (TO_INGEST, "{uri: /relative}", "spec.sink.uri", "must be an absolute URL"),
        (TO_INGEST, "{}", "spec.sink", "needs a ref or a uri"),
    ],
)
def test_a_missing_subject_or_sink_stops_loading_naming_it(
    tmp_path: Path, subject: str, sink: str, fld: str, problem: str
) -> None:
    """The error names the file, the SinkBinding and the field."""
    with pytest.raises(manifests.ManifestError) as info:
        load(tmp_path, binding(subject, sink))
    assert info.value.path.name == "objects.yaml"
    assert (info.value.obj, info.value.field) == ("SinkBinding ingest-sink", fld)
    assert problem in info.value.problem


def test_bindings_are_resolved_once_per_load(tmp_path: Path) -> None:
    """The environment is computed when the manifests are read, not per replica: the same
    mapping serves every spawn until the manifests are read again."""
    m = load(tmp_path, binding(TO_INGEST, TO_BROKER))
    first = m.sink_env
    service = m.service("default", "ingest")
    assert service is not None
    values = SecretValues({}, {}, tmp_path / "secrets.json")
    for port in (1, 2):
        resolve(service, m, values, revision="r", port=port, proxy_url="p", host_env={})
    assert m.sink_env is first

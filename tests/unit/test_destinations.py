"""Destinations: every ref/uri form resolved as Knative resolves it, and each refusal named."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from knfn import manifests
from knfn.eventing import config as eventing_config
from knfn.eventing import destinations
from knfn.eventing.destinations import Destination, parse_destination
from knfn.eventing.errors import DeliveryError, Problem, UnresolvedDestination
from knfn.eventing.flows import parallel_host, sequence_host
from knfn.routing import BROKER_INGRESS

OBJECTS = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: default}
spec: {template: {spec: {containers: [{image: knfn/hello}]}}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: shop}
spec: {template: {spec: {containers: [{image: knfn/hello}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders, namespace: shop}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: chain, namespace: default}
spec:
  steps: [{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}}]
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fan, namespace: default}
spec:
  branches:
    - subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}}
"""


def load(tmp_path: Path, extra: str = "") -> manifests.Manifests:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(OBJECTS + textwrap.dedent(extra))
    return manifests.load(base)


@pytest.fixture
def m(tmp_path: Path) -> manifests.Manifests:
    return load(tmp_path)


def ref(kind: str, name: str, api: str, namespace: str | None = None) -> dict[str, str]:
    out = {"apiVersion": api, "kind": kind, "name": name}
    if namespace is not None:
        out["namespace"] = namespace
    return out


KSVC, BROKER, FLOWS = "serving.knative.dev/v1", "eventing.knative.dev/v1", "flows.knative.dev/v1"


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        # A uri alone is itself.
        ({"uri": "http://example.com/hook"}, "http://example.com/hook"),
        # A ref alone is its referent's address, in the owner's namespace by default...
        ({"ref": ref("Service", "hello", KSVC)}, "http://hello.default.svc.cluster.local"),
        # ...or in its own.
        ({"ref": ref("Service", "hello", KSVC, "shop")}, "http://hello.shop.svc.cluster.local"),
        # The Kubernetes Service Knative makes for a Knative Service (apiVersion v1).
        ({"ref": ref("Service", "hello", "v1")}, "http://hello.default.svc.cluster.local"),
        ({"ref": ref("Broker", "default", BROKER)}, f"{BROKER_INGRESS}/default/default"),
        ({"ref": ref("Broker", "orders", BROKER, "shop")}, f"{BROKER_INGRESS}/shop/orders"),
        (
            {"ref": ref("Sequence", "chain", FLOWS)},
            "http://" + sequence_host("default", "chain"),
        ),
        (
            {"ref": ref("Parallel", "fan", FLOWS)},
            "http://" + parallel_host("default", "fan"),
        ),
        # ref + relative uri: resolved against the ref's address (RFC 3986, as Go's
        # url.ResolveReference in AddressableFromDestinationV1).
        (
            {"ref": ref("Service", "hello", KSVC), "uri": "/my-path"},
            "http://hello.default.svc.cluster.local/my-path",
        ),
        (
            {"ref": ref("Service", "hello", KSVC), "uri": "my-path?x=1"},
            "http://hello.default.svc.cluster.local/my-path?x=1",
        ),
        # A relative path replaces the last segment of the Broker's /<namespace>/<name> path.
        (
            {"ref": ref("Broker", "default", BROKER), "uri": "other"},
            f"{BROKER_INGRESS}/default/other",
        ),
    ],
)
def test_every_destination_form_resolves(
    m: manifests.Manifests, raw: dict[str, Any], url: str
) -> None:
    """uri alone, ref alone (each addressable kind, own or owner's namespace), ref + path."""
    assert destinations.resolve(m, parse_destination(raw, "spec.sink"), "default") == url


@pytest.mark.parametrize(
    ("raw", "fld", "problem"),
    [
        ({}, "spec.sink", "needs a ref or a uri"),
        ("http://x", "spec.sink", "must be an object"),
        ({"uri": "/relative"}, "spec.sink.uri", "'/relative' must be an absolute URL"),
        ({"uri": "http:/no-host"}, "spec.sink.uri", "must be an absolute URL"),
        ({"uri": ""}, "spec.sink.uri", "must be a non-empty string"),
        ({"uri": 5}, "spec.sink.uri", "must be a non-empty string"),
        ({"ref": "hello"}, "spec.sink.ref", "must be an object"),
        ({"ref": {"kind": "Service", "name": "h"}}, "spec.sink.ref.apiVersion", "is required"),
        ({"ref": {"apiVersion": "v1", "kind": "Service"}}, "spec.sink.ref.name", "is required"),
        ({"ref": {"apiVersion": "v1", "name": "h"}}, "spec.sink.ref.kind", "is required"),
        (
            {"ref": {"apiVersion": "v1", "kind": "Service", "name": ""}},
            "spec.sink.ref.name",
            "must be a non-empty string",
        ),
        (
            {"ref": ref("Service", "h", "v1"), "uri": "http://x/y"},
            "spec.sink.uri",
            "'http://x/y' must be relative",
        ),
    ],
)
def test_refused_destinations_name_the_field(raw: Any, fld: str, problem: str) -> None:
    """What destination.go and knative_reference.go refuse, each with its field."""
    with pytest.raises(DeliveryError) as info:
        parse_destination(raw, "spec.sink")
    assert info.value.field == fld
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{fld}: ")


def test_every_ref_problem_is_reported_at_once() -> None:
    """A ref missing several fields names each of them in one error."""
    with pytest.raises(DeliveryError) as info:
        parse_destination({"ref": {"namespace": ""}}, "spec.subscriber")
    assert {p.field for p in info.value.problems} == {
        "spec.subscriber.ref.kind",
        "spec.subscriber.ref.name",
        "spec.subscriber.ref.apiVersion",
        "spec.subscriber.ref.namespace",
    }


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"ref": ref("Service", "helo", KSVC)}, "no Service default/helo in the manifests"),
        ({"ref": ref("Service", "hello", KSVC, "other")}, "no Service other/hello"),
        ({"ref": ref("Broker", "uploads", BROKER)}, "no Broker default/uploads"),
        ({"ref": ref("Sequence", "nope", FLOWS)}, "no Sequence default/nope"),
        ({"ref": ref("Parallel", "nope", FLOWS)}, "no Parallel default/nope"),
        (
            {"ref": ref("InMemoryChannel", "ch", "messaging.knative.dev/v1")},
            "cannot deliver to a InMemoryChannel (messaging.knative.dev/v1)",
        ),
        ({"ref": ref("Sequence", "chain", "example.com/v1")}, "cannot deliver to a Sequence"),
    ],
)
def test_refs_to_nothing_addressable_are_unresolved(
    m: manifests.Manifests, raw: dict[str, Any], problem: str
) -> None:
    """A valid ref whose referent is not in the manifests (or not addressable) is unresolved,
    naming the field it was read from."""
    dest = parse_destination(raw, "spec.steps[1]")
    with pytest.raises(UnresolvedDestination) as info:
        destinations.resolve(m, dest, "default")
    assert info.value.field == "spec.steps[1]"
    assert problem in info.value.problem


def test_a_destination_without_ref_or_uri_is_refused_when_resolved(m: manifests.Manifests) -> None:
    """A Destination built in code with neither part is refused like a manifest's."""
    with pytest.raises(DeliveryError, match="needs a ref or a uri"):
        destinations.resolve(m, Destination(where="spec.reply"), "default")


def test_where_is_not_part_of_a_destinations_identity() -> None:
    """Two destinations read from different fields are equal when they point the same way."""
    assert parse_destination({"uri": "http://a/b"}, "x") == Destination(uri="http://a/b")


def test_a_delivery_error_locates_itself_in_a_manifest(m: manifests.Manifests) -> None:
    """DeliveryError.at gives a ManifestError with file, object, field and problem apart."""
    obj = m.of_kind("Broker")[0]
    error = DeliveryError([Problem("spec.delivery.retry", "-1 is negative"), Problem("a", "b")])
    located = error.at(obj)
    assert (located.obj, located.field) == ("Broker default", "spec.delivery.retry")
    assert located.problem == "-1 is negative (also a: b)"
    assert located.path.name == "objects.yaml"


# -- the owners ------------------------------------------------------------------------------


def test_trigger_subscriber_and_dead_letter_sink_use_the_resolver(tmp_path: Path) -> None:
    """A Trigger's subscriber with a path and its dead-letter Sequence resolve at load."""
    m = load(
        tmp_path,
        f"""\
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: t, namespace: default}}
        spec:
          broker: default
          subscriber: {{ref: {{apiVersion: {KSVC}, kind: Service, name: hello}}, uri: /events}}
          delivery:
            deadLetterSink: {{ref: {{apiVersion: {FLOWS}, kind: Sequence, name: chain}}}}
        """,
    )
    (trigger,) = eventing_config.load(m).triggers
    assert trigger.subscriber == "http://hello.default.svc.cluster.local/events"
    assert trigger.dead_letter_url == "http://" + sequence_host("default", "chain")


def test_a_brokers_dead_letter_sink_is_resolved_for_its_triggers(tmp_path: Path) -> None:
    """A Trigger without its own sink gets its Broker's, resolved."""
    m = load(
        tmp_path,
        f"""\
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Broker
        metadata: {{name: with-dls, namespace: default}}
        spec:
          delivery: {{deadLetterSink: {{ref: {{apiVersion: {KSVC}, kind: Service, name: hello}}}}}}
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {{name: t, namespace: default}}
        spec:
          broker: with-dls
          subscriber: {{uri: http://example.com/}}
        """,
    )
    (trigger,) = eventing_config.load(m).triggers
    assert trigger.dead_letter_url == "http://hello.default.svc.cluster.local"


def test_a_brokers_missing_dead_letter_sink_stops_loading(tmp_path: Path) -> None:
    """The Broker's sink must exist; the error names the Broker and the field."""
    m = load(
        tmp_path,
        f"""\
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Broker
        metadata: {{name: with-dls, namespace: default}}
        spec:
          delivery: {{deadLetterSink: {{ref: {{apiVersion: {KSVC}, kind: Service, name: gone}}}}}}
        """,
    )
    with pytest.raises(manifests.ManifestError) as info:
        eventing_config.load(m)
    assert (info.value.obj, info.value.field) == (
        "Broker with-dls",
        "spec.delivery.deadLetterSink",
    )
    assert "no Service default/gone" in info.value.problem


def test_a_ping_sources_sink_uses_the_resolver(tmp_path: Path) -> None:
    """A PingSource's sink with ref and a relative uri resolves against the ref."""
    m = load(
        tmp_path,
        f"""\
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {{name: tick, namespace: default}}
        spec:
          sink: {{ref: {{apiVersion: {BROKER}, kind: Broker, name: default}}, uri: ticks}}
        """,
    )
    (source,) = eventing_config.load(m).pings
    assert source.sink_url == f"{BROKER_INGRESS}/default/ticks"


def test_a_ping_sources_invalid_sink_names_the_field(tmp_path: Path) -> None:
    """The field inside the sink is named, not just spec.sink."""
    m = load(
        tmp_path,
        """\
        ---
        apiVersion: sources.knative.dev/v1
        kind: PingSource
        metadata: {name: tick, namespace: default}
        spec:
          sink: {uri: /relative}
        """,
    )
    with pytest.raises(manifests.ManifestError) as info:
        eventing_config.load(m)
    assert (info.value.obj, info.value.field) == ("PingSource tick", "spec.sink.uri")

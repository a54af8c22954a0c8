"""The fields each Knative object may have, so that a misspelled one stops start-up.

Knative's webhook and the API server refuse an object with a field its type does not declare
(``containerConcurency: 0`` is an error there, not a zero). knfn does the same before anything
starts: every object of the manifests is walked against the known-field lists below, and the
first unknown field is reported with its file, its object, its path and the closest known name.

The lists are written from the Knative API reference: serving.knative.dev/v1 Service,
RevisionTemplateSpec and RevisionSpec (knative/serving pkg/apis/serving/v1/service_types.go,
revision_types.go, route_types.go), the subset of the Kubernetes PodSpec that Knative lets through
(pkg/apis/serving/fieldmask.go: PodSpecMask, ContainerMask, ProbeMask, VolumeMask and friends,
including the fields behind its kubernetes.podspec-* feature flags), eventing.knative.dev/v1 Broker
and Trigger, duck/v1 Destination, KReference and DeliverySpec, sources.knative.dev/v1 SinkBinding
and PingSource, and flows.knative.dev/v1 Sequence and Parallel. Values whose keys are the user's
(labels, annotations, ConfigMap and Secret data, resource quantities, filter attributes, CloudEvent
extensions) are free-form; so are Kubernetes objects Knative does not define (a Job's spec).
Only names are checked here; values are the loaders' business.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Free:
    """Any value: a scalar, or a mapping whose keys are the user's."""


@dataclass(frozen=True)
class Fields:
    """A mapping with these known keys; each value is checked against its own node."""

    known: Mapping[str, Node]


@dataclass(frozen=True)
class Each:
    """A list whose items are each checked against ``item``."""

    item: Node


Node = Free | Fields | Each
FREE = Free()


def _fields(*names: str, **nested: Node) -> Fields:
    """Known keys: plain names take any value, keyword ones their own node."""
    return Fields({**dict.fromkeys(names, FREE), **nested})


# -- Kubernetes and duck types ----------------------------------------------------------------

OBJECT_META = _fields(
    "name", "generateName", "namespace", "labels", "annotations", "finalizers",
    "ownerReferences", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
)  # fmt: skip
K_REFERENCE = _fields("apiVersion", "kind", "name", "namespace", "group", "address")
DESTINATION = _fields("uri", "CACerts", "audience", ref=K_REFERENCE)
DELIVERY = _fields(
    "retry", "backoffPolicy", "backoffDelay", "timeout", "retryAfterMax", "format",
    deadLetterSink=DESTINATION,
)  # fmt: skip
CE_OVERRIDES = _fields("extensions")

# -- the PodSpec subset of a Revision (fieldmask.go) ------------------------------------------

_NAME_OPTIONAL = _fields("name", "optional")
_KEY_SELECTOR = _fields("name", "key", "optional")
_KEY_TO_PATH = _fields("key", "path", "mode")
_HTTP_HEADER = _fields("name", "value")
_PROBE = _fields(
    "initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
    "failureThreshold",
    exec=_fields("command"),
    httpGet=_fields("host", "path", "port", "scheme", httpHeaders=Each(_HTTP_HEADER)),
    tcpSocket=_fields("host", "port"),
    grpc=_fields("port", "service"),
)  # fmt: skip
_SECURITY_CONTEXT = _fields(
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    capabilities=_fields("add", "drop"),
    seccompProfile=_fields("type", "localhostProfile"),
)  # fmt: skip
CONTAINER = _fields(
    "name", "image", "imagePullPolicy", "args", "command", "workingDir",
    "terminationMessagePath", "terminationMessagePolicy",
    env=Each(
        _fields(
            "name", "value",
            valueFrom=_fields(
                "fieldRef", "resourceFieldRef",
                configMapKeyRef=_KEY_SELECTOR, secretKeyRef=_KEY_SELECTOR,
            ),
        )
    ),
    envFrom=Each(_fields("prefix", configMapRef=_NAME_OPTIONAL, secretRef=_NAME_OPTIONAL)),
    ports=Each(_fields("name", "containerPort", "protocol")),
    resources=_fields("limits", "requests"),
    readinessProbe=_PROBE,
    livenessProbe=_PROBE,
    securityContext=_SECURITY_CONTEXT,
    volumeMounts=Each(_fields("name", "mountPath", "readOnly", "subPath")),
)  # fmt: skip
_PROJECTION = _fields("name", "items", "optional")
VOLUME = _fields(
    "name",
    secret=_fields("secretName", "defaultMode", "optional", items=Each(_KEY_TO_PATH)),
    configMap=_fields("name", "defaultMode", "optional", items=Each(_KEY_TO_PATH)),
    projected=_fields(
        "defaultMode",
        sources=Each(
            _fields(
                secret=_PROJECTION,
                configMap=_PROJECTION,
                serviceAccountToken=_fields("audience", "expirationSeconds", "path"),
            )
        ),
    ),
    emptyDir=_fields("medium", "sizeLimit"),  # kubernetes.podspec-emptydir
    persistentVolumeClaim=_fields("claimName", "readOnly"),  # kubernetes.podspec-persistent-...
)  # fmt: skip
REVISION_SPEC = _fields(
    # RevisionSpec's own fields
    "containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    # PodSpec fields Knative allows, and those behind its kubernetes.podspec-* feature flags
    "serviceAccountName", "imagePullSecrets", "enableServiceLinks", "affinity", "hostAliases",
    "nodeSelector", "runtimeClassName", "tolerations", "securityContext", "schedulerName",
    "priorityClassName", "topologySpreadConstraints", "dnsPolicy", "dnsConfig", "initContainers",
    "shareProcessNamespace", "hostIPC", "hostPID", "hostNetwork",
    containers=Each(CONTAINER),
    volumes=Each(VOLUME),
)  # fmt: skip
SERVICE_SPEC = _fields(
    template=_fields(metadata=OBJECT_META, spec=REVISION_SPEC),
    traffic=Each(
        _fields("revisionName", "configurationName", "latestRevision", "percent", "tag", "url")
    ),
)

# -- eventing ---------------------------------------------------------------------------------

BROKER_SPEC = _fields(config=K_REFERENCE, delivery=DELIVERY)
TRIGGER_SPEC = _fields(
    "broker",
    "filters",  # SubscriptionsAPI dialects: checked by the filter compiler (filters.py)
    filter=_fields("attributes"),
    subscriber=DESTINATION,
    delivery=DELIVERY,
)
SINK_BINDING_SPEC = _fields(
    subject=_fields("apiVersion", "kind", "namespace", "name", "selector"),
    sink=DESTINATION,
    ceOverrides=CE_OVERRIDES,
)
PING_SOURCE_SPEC = _fields(
    "schedule", "timezone", "contentType", "data", "dataBase64",
    sink=DESTINATION, ceOverrides=CE_OVERRIDES,
)  # fmt: skip
_CHANNEL_TEMPLATE = _fields("apiVersion", "kind", "spec")
SEQUENCE_SPEC = _fields(
    steps=Each(_fields("uri", "CACerts", "audience", ref=K_REFERENCE, delivery=DELIVERY)),
    channelTemplate=_CHANNEL_TEMPLATE,
    reply=DESTINATION,
)
PARALLEL_SPEC = _fields(
    branches=Each(
        _fields(filter=DESTINATION, subscriber=DESTINATION, reply=DESTINATION, delivery=DELIVERY)
    ),
    channelTemplate=_CHANNEL_TEMPLATE,
    reply=DESTINATION,
)


def _object(**body: Node) -> Fields:
    return _fields("apiVersion", "kind", "status", metadata=OBJECT_META, **body)


KINDS: Mapping[tuple[str, str], Fields] = {
    ("serving.knative.dev/v1", "Service"): _object(spec=SERVICE_SPEC),
    ("eventing.knative.dev/v1", "Broker"): _object(spec=BROKER_SPEC),
    ("eventing.knative.dev/v1", "Trigger"): _object(spec=TRIGGER_SPEC),
    ("sources.knative.dev/v1", "SinkBinding"): _object(spec=SINK_BINDING_SPEC),
    ("sources.knative.dev/v1", "PingSource"): _object(spec=PING_SOURCE_SPEC),
    ("flows.knative.dev/v1", "Sequence"): _object(spec=SEQUENCE_SPEC),
    ("flows.knative.dev/v1", "Parallel"): _object(spec=PARALLEL_SPEC),
    ("v1", "ConfigMap"): _fields("apiVersion", "kind", "data", "binaryData", "immutable",
                                 metadata=OBJECT_META),
    ("v1", "Secret"): _fields("apiVersion", "kind", "data", "stringData", "type", "immutable",
                              metadata=OBJECT_META),
    ("batch/v1", "Job"): _object(spec=FREE),
}  # fmt: skip


@dataclass(frozen=True)
class UnknownField:
    """A key the object's type does not have, where it is, and what was probably meant."""

    path: str  # e.g. spec.template.spec.containerConcurency
    known: tuple[str, ...]
    suggestion: str | None

    @property
    def problem(self) -> str:
        hint = f"did you mean {self.suggestion}? " if self.suggestion else ""
        return f"unknown field; {hint}known here: {', '.join(self.known)}"


def unknown_fields(doc: Mapping[str, Any]) -> list[UnknownField]:
    """Every unknown field of one object, in document order ([] for a kind not listed)."""
    schema = KINDS.get((str(doc.get("apiVersion", "")), str(doc.get("kind", ""))))
    found: list[UnknownField] = []
    if schema is not None:
        _walk(doc, schema, "", found)
    return found


def _walk(value: Any, node: Node, where: str, found: list[UnknownField]) -> None:
    # A value of the wrong shape is skipped: the loaders say what it should be.
    if isinstance(node, Fields) and isinstance(value, Mapping):
        for key, child in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in node.known:
                _walk(child, node.known[key], path, found)
            else:
                known = tuple(sorted(node.known))
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                found.append(UnknownField(path, known, close[0] if close else None))
    elif isinstance(node, Each) and isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, node.item, f"{where}[{i}]", found)

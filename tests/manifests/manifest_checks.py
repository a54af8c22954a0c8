"""Offline checks for the cluster manifests (knative/, minio/, postgres/) and functions/Dockerfile.

No cluster and no Docker here, so what Kubernetes and Knative would refuse at `kubectl apply`
time is checked from the rendered YAML instead. Every check is a pure function over parsed
objects (plain dicts) that returns a list of problems; an empty list means the check passed.
Each problem names the object (or file), the field and the value, so a failing test reads like
the error the API server would have given.

The Knative rules are written from upstream source (cited next to each rule) for the default
configuration of a fresh install: config-features, config-defaults and config-autoscaler at
their shipped values. Nothing here is copied from upstream; it restates what upstream accepts.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from knfn import schema as knfn_schema
from knfn.serving import autoscaler_config, autoscaling

Obj = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Loading and naming
# --------------------------------------------------------------------------------------------


class RenderError(Exception):
    """`kubectl kustomize` failed; the message carries its stderr."""


def load_documents(text: str) -> list[Obj]:
    """Every non-empty YAML document in `text`, in order."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(kubectl: Path, kustomize_dir: Path) -> list[Obj]:
    """Render a kustomization with `kubectl kustomize` (kustomize is built into kubectl)."""
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(kustomize_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {kustomize_dir} failed:\n{proc.stderr.strip()}")
    return load_documents(proc.stdout)


def group_of(obj: Mapping[str, Any]) -> str:
    """The API group of an object ("" for the core group)."""
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def describe(obj: Mapping[str, Any]) -> str:
    """A short, unique name for messages: Kind.group namespace/name."""
    meta = obj.get("metadata") or {}
    group = group_of(obj)
    kind = f"{obj.get('kind', '?')}.{group}" if group else str(obj.get("kind", "?"))
    return f"{kind} {meta.get('namespace', '-')}/{meta.get('name', '?')}"


def of_kind(objs: Iterable[Obj], kind: str, group: str | None = None) -> list[Obj]:
    """Objects of one kind (and, when given, one API group)."""
    return [o for o in objs if o.get("kind") == kind and (group is None or group_of(o) == group)]


def find(objs: Iterable[Obj], kind: str, name: str, group: str | None = None) -> Obj | None:
    """The object of that kind and name, or None."""
    for obj in of_kind(objs, kind, group):
        if (obj.get("metadata") or {}).get("name") == name:
            return obj
    return None


SERVING = "serving.knative.dev"
EVENTING = "eventing.knative.dev"
SOURCES = "sources.knative.dev"
CNPG = "postgresql.cnpg.io"


def knative_services(objs: Iterable[Obj]) -> list[Obj]:
    """The Knative Services (serving.knative.dev Service, not core v1 Service)."""
    return of_kind(objs, "Service", SERVING)


def is_core(obj: Mapping[str, Any]) -> bool:
    """Built-in Kubernetes API (core group or a *.k8s.io group), so the OpenAPI schema applies."""
    group = group_of(obj)
    return group == "" or "." not in group or group.endswith(".k8s.io")


# --------------------------------------------------------------------------------------------
# The base directory stays plain YAML (knfn reads it without kustomize)
# --------------------------------------------------------------------------------------------

CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
)


def check_plain_base(base_dir: Path) -> list[str]:
    """kustomization.yaml lists plain files under resources: and nothing else; objects name
    their namespace explicitly, because knfn reads these files without kustomize."""
    problems: list[str] = []
    kfile = base_dir / "kustomization.yaml"
    if not kfile.is_file():
        return [f"{kfile}: missing"]
    kust = yaml.safe_load(kfile.read_text()) or {}
    extra = sorted(set(kust) - {"apiVersion", "kind", "resources"})
    if extra:
        problems.append(f"{kfile}: only resources: is allowed in base, found {extra}")
    resources = kust.get("resources") or []
    if not resources:
        problems.append(f"{kfile}: resources: is empty")
    for entry in resources:
        path = base_dir / str(entry)
        if not path.is_file():
            problems.append(f"{kfile}: resource {entry!r} is not a plain file")
            continue
        try:
            docs = load_documents(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not YAML: {exc}")
            continue
        if not docs:
            problems.append(f"{path}: no objects")
        for obj in docs:
            meta = obj.get("metadata") or {}
            if obj.get("kind") not in CLUSTER_SCOPED_KINDS and not meta.get("namespace"):
                problems.append(f"{path}: {describe(obj)} has no metadata.namespace")
    return problems


# --------------------------------------------------------------------------------------------
# Built-in kinds: the Kubernetes OpenAPI schema, strictly (no unknown fields)
# --------------------------------------------------------------------------------------------


def check_core_schemas(objs: Iterable[Obj], k8s_version: str) -> list[str]:
    """Validate every built-in object against the Kubernetes schema of `k8s_version`, strict."""
    problems: list[str] = []
    for obj in objs:
        if not is_core(obj):
            continue
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(root)"
            problems.append(f"{describe(obj)}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{describe(obj)}: {exc.message}")
    return problems


# --------------------------------------------------------------------------------------------
# Custom resources. Knative kinds: the field names are knfn's own (knfn/schema.py, which knfn
# applies when it loads the manifests), so knfn and these checks cannot disagree on a name; on
# top of them, what a fresh install also refuses (value types, required fields, fields behind a
# config-features flag that is off). Kinds knfn does not load (the CloudNativePG Cluster) keep a
# small schema of their own here.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A scalar: `types` are the Python types YAML may give it."""

    types: tuple[type, ...]
    name: str


@dataclass(frozen=True)
class Fields:
    """A mapping with a closed set of keys."""

    allowed: Mapping[str, Schema]
    required: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ListOf:
    """A list whose items all follow one schema."""

    item: Schema


@dataclass(frozen=True)
class MapOf:
    """A mapping with free keys and values of one schema (labels, data, ...)."""

    value: Schema


@dataclass(frozen=True)
class Anything:
    """Not checked further (a field this repository does not use)."""


Schema = Leaf | Fields | ListOf | MapOf | Anything

STR = Leaf((str,), "string")
INT = Leaf((int,), "integer")
BOOL = Leaf((bool,), "boolean")
QUANTITY = Leaf((str, int, float), "quantity")
INT_OR_STR = Leaf((int, str), "integer or string")
ANY = Anything()


def req(allowed: Mapping[str, Schema], *required: str) -> Fields:
    """Fields with some of them required."""
    return Fields(allowed, frozenset(required))


# -- Knative kinds: knfn's names, and what else a default install refuses ----------------------

# The type of a value knfn's schema leaves free, by field name: a name means the same thing
# wherever a Knative or Kubernetes type uses it (Kubernetes API conventions).
VALUE_TYPES: Mapping[str, Schema] = {
    **dict.fromkeys(
        ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
         "idleTimeoutSeconds", "initialDelaySeconds", "periodSeconds", "successThreshold",
         "failureThreshold", "containerPort", "runAsUser", "runAsGroup", "percent", "retry",
         "defaultMode", "mode", "expirationSeconds"),
        INT,
    ),
    **dict.fromkeys(
        ("name", "namespace", "image", "imagePullPolicy", "workingDir", "value", "key",
         "mountPath", "subPath", "protocol", "prefix", "serviceAccountName", "revisionName",
         "tag", "broker", "schedule", "timezone", "contentType", "data", "dataBase64",
         "timeout", "backoffPolicy", "backoffDelay", "format", "uri", "apiVersion", "kind",
         "path", "host", "scheme", "audience", "medium", "secretName", "claimName"),
        STR,
    ),
    **dict.fromkeys(
        ("optional", "readOnly", "latestRevision", "enableServiceLinks", "runAsNonRoot",
         "readOnlyRootFilesystem", "allowPrivilegeEscalation"),
        BOOL,
    ),
    "port": INT_OR_STR,
    "sizeLimit": QUANTITY,
    "args": ListOf(STR),
    "command": ListOf(STR),
    "labels": MapOf(STR),
    "annotations": MapOf(STR),
    "extensions": MapOf(STR),
    "attributes": MapOf(STR),
    "limits": MapOf(QUANTITY),
    "requests": MapOf(QUANTITY),
}  # fmt: skip

_REF = ("kind", "name")  # duck/v1 KReference (knative.dev/pkg apis/duck/v1/knative_reference.go)
_CONTAINER = "spec.template.spec.containers[]"
_KEY_REFS = ("configMapKeyRef", "secretKeyRef")
_LOCAL_REFS = ("configMapRef", "secretRef")
_PROBES = ("readinessProbe", "livenessProbe")
# Required fields: the parent (a path, `[]` for every item of a list) and the keys it must have.
REQUIRED_OF_EVERY: Mapping[str, tuple[str, ...]] = {
    "": ("apiVersion", "kind", "metadata", "spec"),
    "metadata": ("name",),
}
REQUIRED: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "Service": {  # revision_types.go, and the PodSpec fields Kubernetes requires
        "spec": ("template",),
        "spec.template": ("spec",),
        "spec.template.spec": ("containers",),
        _CONTAINER: ("image",),
        f"{_CONTAINER}.env[]": ("name",),
        **{f"{_CONTAINER}.env[].valueFrom.{ref}": ("name", "key") for ref in _KEY_REFS},
        **{f"{_CONTAINER}.envFrom[].{ref}": ("name",) for ref in _LOCAL_REFS},
        f"{_CONTAINER}.ports[]": ("containerPort",),
        f"{_CONTAINER}.volumeMounts[]": ("name", "mountPath"),
        **{f"{_CONTAINER}.{probe}.httpGet.httpHeaders[]": ("name", "value") for probe in _PROBES},
        f"{_CONTAINER}.securityContext.seccompProfile": ("type",),
        "spec.template.spec.volumes[]": ("name",),
    },
    "Broker": {"spec.config": _REF, "spec.delivery.deadLetterSink.ref": _REF},  # broker_types.go
    "Trigger": {  # trigger_types.go
        "spec": ("subscriber",),
        "spec.subscriber.ref": _REF,
        "spec.delivery.deadLetterSink.ref": _REF,
    },
    "SinkBinding": {  # sinkbinding_types.go: a tracker.Reference subject and a duck Sink
        "spec": ("subject", "sink"),
        "spec.subject": ("apiVersion", "kind"),
        "spec.sink.ref": _REF,
    },
    "PingSource": {"spec": ("schedule", "sink"), "spec.sink.ref": _REF},  # ping_types.go
}

# Fields knfn's schema knows because a config-features flag can turn them on, but whose flag is
# "disabled" in a fresh install (knative/serving config/core/configmaps/features.yaml, flag
# names in pkg/apis/config/features.go); emptyDir's flag is enabled there.
_POD = "spec.template.spec"
OFF_BY_DEFAULT: Mapping[str, str] = {
    **{
        f"{_POD}.{name}": f"kubernetes.podspec-{flag}"
        for name, flag in (
            ("affinity", "affinity"), ("hostAliases", "hostaliases"),
            ("nodeSelector", "nodeselector"), ("runtimeClassName", "runtimeclassname"),
            ("tolerations", "tolerations"), ("securityContext", "securitycontext"),
            ("schedulerName", "schedulername"), ("priorityClassName", "priorityclassname"),
            ("topologySpreadConstraints", "topologyspreadconstraints"),
            ("dnsPolicy", "dnspolicy"), ("dnsConfig", "dnsconfig"),
            ("initContainers", "init-containers"),
            ("shareProcessNamespace", "shareprocessnamespace"), ("hostIPC", "hostipc"),
            ("hostPID", "hostpid"), ("hostNetwork", "hostnetwork"),
            ("volumes[].persistentVolumeClaim", "persistent-volume-claim"),
            ("containers[].env[].valueFrom.fieldRef", "fieldref"),
            ("containers[].env[].valueFrom.resourceFieldRef", "fieldref"),
        )
    },
    f"{_CONTAINER}.securityContext.capabilities.add": "kubernetes.containerspec-addcapabilities",
}  # fmt: skip


def at(value: Any, pattern: str, path: str = "$") -> Iterator[tuple[str, Any]]:
    """(path, value) of every place `pattern` names in `value` ("" is `value` itself, `x[]`
    every item of the list x); absent places are skipped."""
    if not pattern:
        yield path, value
        return
    head, _, rest = pattern.partition(".")
    if not isinstance(value, Mapping):
        return
    if head.endswith("[]"):
        items = value.get(head[:-2])
        if isinstance(items, list):
            for i, item in enumerate(items):
                yield from at(item, rest, f"{path}.{head[:-2]}[{i}]")
    elif head in value:
        yield from at(value[head], rest, f"{path}.{head}")


def names_known_fields(root: knfn_schema.Fields, pattern: str) -> bool:
    """Whether every step of `pattern` (as :func:`at` reads it) is a field knfn's schema knows."""
    node: knfn_schema.Node = root
    for step in pattern.split(".") if pattern else []:
        name = step.removesuffix("[]")
        if not isinstance(node, knfn_schema.Fields):
            return False
        if name not in node.known:
            return False
        node = node.known[name]
        if step.endswith("[]"):
            if not isinstance(node, knfn_schema.Each):
                return False
            node = node.item
    return True


def _value_problems(value: Any, node: knfn_schema.Node, path: str) -> list[str]:
    """Where `value` has the wrong shape for knfn's node, or a free value the wrong type."""
    if isinstance(node, knfn_schema.Each):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [
            p for i, v in enumerate(value) for p in _value_problems(v, node.item, f"{path}[{i}]")
        ]
    if isinstance(node, knfn_schema.Fields):
        if not isinstance(value, Mapping):
            return [f"{path}: expected a mapping, got {value!r}"]
        problems: list[str] = []
        for key, child in value.items():
            sub = node.known.get(key)
            if isinstance(sub, knfn_schema.Free) and key in VALUE_TYPES:
                problems.extend(shape_problems(child, VALUE_TYPES[key], f"{path}.{key}"))
            elif sub is not None:
                problems.extend(_value_problems(child, sub, f"{path}.{key}"))
        return problems
    return []


def knative_problems(obj: Mapping[str, Any], root: knfn_schema.Fields) -> list[str]:
    """A Knative object against knfn's known fields and what a default install refuses."""
    problems: list[str] = []
    for unknown in knfn_schema.unknown_fields(obj):
        parent, _, key = unknown.path.rpartition(".")
        where = f"$.{parent}" if parent else "$"
        hint = f" (did you mean {unknown.suggestion}?)" if unknown.suggestion else ""
        problems.append(f"{where}: unknown field {key!r}{hint}")
    problems.extend(_value_problems(obj, root, "$"))
    required = {**REQUIRED_OF_EVERY, **REQUIRED.get(str(obj.get("kind")), {})}
    for pattern, keys in required.items():
        for path, value in at(obj, pattern):
            if isinstance(value, Mapping):
                problems.extend(
                    f"{path}: missing required field {key!r}" for key in keys if key not in value
                )
    if obj.get("kind") == "Service":
        for pattern, flag in OFF_BY_DEFAULT.items():
            key = pattern.rpartition(".")[2]
            problems.extend(
                f"{path.rpartition('.')[0]}: field {key!r} needs the {flag} feature, which is "
                "off by default"
                for path, _ in at(obj, pattern)
            )
    return problems


# -- CloudNativePG: knfn does not load it, so its schema is here -------------------------------

OBJECT_META = req(
    {"name": STR, "namespace": STR, "labels": MapOf(STR), "annotations": MapOf(STR)}, "name"
)
LOCAL_REF = req({"name": STR, "optional": BOOL}, "name")

# cloudnative-pg api/v1/cluster_types.go ClusterSpec: top-level keys, and the parts used here.
_CNPG_TOP = (
    "description",
    "inheritedMetadata",
    "imageName",
    "imageCatalogRef",
    "imagePullPolicy",
    "schedulerName",
    "postgresUID",
    "postgresGID",
    "instances",
    "minSyncReplicas",
    "maxSyncReplicas",
    "podSelectorRefs",
    "replicationSlots",
    "replica",
    "superuserSecret",
    "enableSuperuserAccess",
    "certificates",
    "imagePullSecrets",
    "serviceAccountTemplate",
    "serviceAccountName",
    "ephemeralVolumeSource",
    "startDelay",
    "stopDelay",
    "smartShutdownTimeout",
    "switchoverDelay",
    "failoverDelay",
    "livenessProbeTimeout",
    "topologySpreadConstraints",
    "ephemeralVolumesSizeLimit",
    "priorityClassName",
    "primaryUpdateStrategy",
    "primaryUpdateMethod",
    "backup",
    "nodeMaintenanceWindow",
    "monitoring",
    "externalClusters",
    "logLevel",
    "projectedVolumeTemplate",
    "env",
    "envFrom",
    "managed",
    "seccompProfile",
    "podSecurityContext",
    "securityContext",
    "tablespaces",
    "enablePDB",
    "plugins",
    "probes",
    "primaryLease",
    "resources",
)
CNPG_STORAGE = Fields(
    {"storageClass": STR, "size": STR, "resizeInUseVolumes": BOOL, "pvcTemplate": ANY}
)
CNPG_CLUSTER_SPEC = req(
    {
        **{key: ANY for key in _CNPG_TOP},
        "instances": INT,
        "imageName": STR,
        "storage": CNPG_STORAGE,
        "walStorage": CNPG_STORAGE,
        "bootstrap": Fields(
            {
                "initdb": Fields(
                    {
                        "database": STR,
                        "owner": STR,
                        "secret": LOCAL_REF,
                        "dataChecksums": BOOL,
                        "encoding": STR,
                        "postInitSQL": ListOf(STR),
                        "postInitApplicationSQL": ListOf(STR),
                    }
                ),
                "recovery": ANY,
                "pg_basebackup": ANY,
            }
        ),
        "postgresql": Fields(
            {
                "parameters": MapOf(STR),
                "synchronous": req(
                    {
                        "method": STR,
                        "number": INT,
                        "dataDurability": STR,
                        "maxStandbyNamesFromCluster": INT,
                        "failoverQuorum": BOOL,
                    },
                    "method",
                    "number",
                ),
                "pg_hba": ListOf(STR),
                "pg_ident": ListOf(STR),
                "shared_preload_libraries": ListOf(STR),
                "enableAlterSystem": BOOL,
            }
        ),
        "affinity": Fields(
            {
                "enablePodAntiAffinity": BOOL,
                "topologyKey": STR,
                "podAntiAffinityType": STR,
                "nodeSelector": MapOf(STR),
                "tolerations": ANY,
                "nodeAffinity": ANY,
                "additionalPodAntiAffinity": ANY,
                "additionalPodAffinity": ANY,
            }
        ),
    },
    "instances",
)


def _resource(spec: Schema) -> Fields:
    return req(
        {"apiVersion": STR, "kind": STR, "metadata": OBJECT_META, "spec": spec},
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    )


CUSTOM_SCHEMAS: Mapping[tuple[str, str], Fields] = {
    (f"{CNPG}/v1", "Cluster"): _resource(CNPG_CLUSTER_SPEC),
}


def shape_problems(value: Any, schema: Schema, path: str) -> list[str]:
    """Where `value` strays from `schema`: unknown keys, missing required keys, wrong types."""
    if isinstance(schema, Anything):
        return []
    if isinstance(schema, Leaf):
        # bool is an int in Python; a YAML true is never a valid integer here.
        if isinstance(value, bool) and bool not in schema.types:
            return [f"{path}: expected {schema.name}, got {value!r}"]
        if not isinstance(value, schema.types):
            return [f"{path}: expected {schema.name}, got {value!r}"]
        return []
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [
            p
            for i, item in enumerate(value)
            for p in shape_problems(item, schema.item, f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {value!r}"]
    if isinstance(schema, MapOf):
        return [p for k, v in value.items() for p in shape_problems(v, schema.value, f"{path}.{k}")]
    problems: list[str] = []
    for key in sorted(schema.required - set(value)):
        problems.append(f"{path}: missing required field {key!r}")
    for key, item in value.items():
        if key not in schema.allowed:
            allowed = ", ".join(sorted(schema.allowed))
            problems.append(f"{path}: unknown field {key!r} (known: {allowed})")
        else:
            problems.extend(shape_problems(item, schema.allowed[key], f"{path}.{key}"))
    return problems


def check_custom_schemas(objs: Iterable[Obj]) -> list[str]:
    """Every non-built-in object is a kind knfn loads (checked against knfn's own known fields)
    or one with a schema here, and follows it."""
    problems: list[str] = []
    for obj in objs:
        if is_core(obj):
            continue
        kind = (str(obj.get("apiVersion")), str(obj.get("kind")))
        if kind in knfn_schema.KINDS:
            found = knative_problems(obj, knfn_schema.KINDS[kind])
        elif kind in CUSTOM_SCHEMAS:
            found = shape_problems(obj, CUSTOM_SCHEMAS[kind], "$")
        else:
            found = [f"no schema for {kind[0]} {kind[1]}"]
        problems.extend(f"{describe(obj)}: {p}" for p in found)
    return problems


# --------------------------------------------------------------------------------------------
# Knative Serving rules beyond the shape
# --------------------------------------------------------------------------------------------

AUTOSCALING = autoscaler_config.GROUP
MAX_CONTAINER_CONCURRENCY = 1000  # config-defaults container-concurrency-max-limit
MAX_TIMEOUT_SECONDS = 600  # config-defaults max-revision-timeout-seconds
# k8s_validation.go reservedEnvVars / reservedPorts (knative.dev/networking constants: 8012,
# 8013 backend, 8022 queue admin, 9090/9091 queue metrics; 8008 profiling).
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go time.ParseDuration string ("60s", "1m30s", "0"), or None if invalid."""
    try:
        return autoscaler_config.parse_duration(text)
    except ValueError:
        return None


def _int32(value: str) -> int | None:
    if not re.fullmatch(r"[+-]?\d+", value.strip()):
        return None
    number = int(value)
    return number if -(2**31) <= number < 2**31 else None


def check_autoscaling_annotations(
    annotations: Mapping[str, str], where: str, allow_zero_initial_scale: bool = False
) -> list[str]:
    """Revision-template autoscaling annotations as Knative's webhook checks them (the same
    validation knfn applies when it loads the manifests, knfn.serving.autoscaling), and, this
    repository's own rule, none of the keys Knative lets through and ignores."""
    cfg = autoscaler_config.AutoscalerConfig(allow_zero_initial_scale=allow_zero_initial_scale)
    problems = autoscaling.validate_annotations(annotations, cfg)
    problems += autoscaling.annotation_warnings(annotations)
    return [f"{where}: {p}" for p in problems]


def _containers(pod_spec: Mapping[str, Any]) -> list[Obj]:
    return list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])


def check_serving_rules(objs: Iterable[Obj]) -> list[str]:
    """Knative Service rules the schema cannot express: annotation placement and values,
    containerConcurrency and timeout bounds, reserved env vars and ports."""
    problems: list[str] = []
    for ksvc in knative_services(objs):
        name = describe(ksvc)
        for key in (ksvc.get("metadata") or {}).get("annotations") or {}:
            if key.startswith(AUTOSCALING + "/"):
                # metadata_validation.go ValidateHasNoAutoscalingAnnotation
                problems.append(
                    f"{name}: metadata.annotations.{key}: autoscaling annotations belong in "
                    "spec.template.metadata.annotations"
                )
        template = (ksvc.get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        problems.extend(
            check_autoscaling_annotations(annotations, f"{name}: spec.template.metadata")
        )
        spec = template.get("spec") or {}
        cc = spec.get("containerConcurrency")
        if cc is not None and not (isinstance(cc, int) and 0 <= cc <= MAX_CONTAINER_CONCURRENCY):
            problems.append(
                f"{name}: containerConcurrency={cc!r} must be in [0, {MAX_CONTAINER_CONCURRENCY}]"
            )
        timeout = spec.get("timeoutSeconds")
        for key in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
            value = spec.get(key)
            if value is not None and not (
                isinstance(value, int) and 0 <= value <= MAX_TIMEOUT_SECONDS
            ):
                problems.append(f"{name}: {key}={value!r} must be in [0, {MAX_TIMEOUT_SECONDS}]")
        start = spec.get("responseStartTimeoutSeconds")
        if isinstance(start, int) and isinstance(timeout, int) and start > timeout:
            problems.append(
                f"{name}: responseStartTimeoutSeconds={start} exceeds timeoutSeconds={timeout}"
            )
        containers = _containers(spec)
        if not containers:
            problems.append(f"{name}: no containers")
        for container in containers:
            for env in container.get("env") or []:
                if env.get("name") in RESERVED_ENV:
                    problems.append(
                        f"{name}: container {container.get('name')}: env {env['name']} is "
                        "reserved (set by Knative)"
                    )
            for port in container.get("ports") or []:
                if port.get("containerPort") in RESERVED_PORTS:
                    problems.append(
                        f"{name}: container {container.get('name')}: port "
                        f"{port['containerPort']} is reserved for queue-proxy"
                    )
    return problems


# --------------------------------------------------------------------------------------------
# Function contract: each Service runs functions/<name>/main.py's FUNCTION_TARGET
# --------------------------------------------------------------------------------------------


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(e.get("name")): str(e["value"]) for e in container.get("env") or [] if "value" in e}


def image_repository(image: str) -> str:
    """The repository part of an image reference (no tag, no digest)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def check_function_contract(objs: Iterable[Obj], functions_dir: Path) -> list[str]:
    """A Service named X runs functions/X/: its image is knfn/X, its FUNCTION_TARGET is a
    function defined in functions/X/main.py, and it uses the http signature type."""
    problems: list[str] = []
    for ksvc in knative_services(objs):
        name = str((ksvc.get("metadata") or {}).get("name"))
        where = describe(ksvc)
        spec = ((ksvc.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = spec.get("containers") or []
        if len(containers) != 1:
            problems.append(f"{where}: expected one container, found {len(containers)}")
            continue
        container = containers[0]
        repo = image_repository(str(container.get("image", "")))
        if repo.rsplit("/", 1)[-1] != name:
            problems.append(
                f"{where}: image {container.get('image')!r} is not built from functions/{name}/"
            )
        env = _env(container)
        if env.get("FUNCTION_SIGNATURE_TYPE") != "http":
            problems.append(
                f"{where}: env FUNCTION_SIGNATURE_TYPE={env.get('FUNCTION_SIGNATURE_TYPE')!r}, "
                "expected 'http'"
            )
        target = env.get("FUNCTION_TARGET")
        if not target:
            problems.append(f"{where}: env FUNCTION_TARGET is not set")
            continue
        main = functions_dir / name / "main.py"
        if not main.is_file():
            problems.append(f"{where}: {main} does not exist")
            continue
        if not re.search(rf"^(async\s+)?def\s+{re.escape(target)}\s*\(", main.read_text(), re.M):
            problems.append(f"{where}: {main} defines no top-level def {target}(")
    return problems


# --------------------------------------------------------------------------------------------
# References: everything a manifest points at exists in the same render
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class External:
    """Objects that a render may point at without containing them (made by an installer or
    created out of band). Kind is "Secret", "ConfigMap", ...; namespace "default" unless set."""

    kind: str
    name: str
    namespace: str = "default"


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def _exists(
    objs: list[Obj],
    kind: str,
    name: str,
    namespace: str,
    group: str | None,
    external: frozenset[External],
) -> bool:
    if External(kind, name, namespace) in external:
        return True
    return any(
        (o.get("metadata") or {}).get("name") == name and _namespace(o) == namespace
        for o in of_kind(objs, kind, group)
    )


def _pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, Obj]]:
    """(field path, pod spec) for workloads that carry one."""
    spec = obj.get("spec") or {}
    if obj.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        yield "spec.template.spec", (spec.get("template") or {}).get("spec") or {}
    elif obj.get("kind") == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield "spec.jobTemplate.spec.template.spec", (job.get("template") or {}).get("spec") or {}
    elif obj.get("kind") == "Service" and group_of(obj) == SERVING:
        yield "spec.template.spec", (spec.get("template") or {}).get("spec") or {}


def check_references(objs: list[Obj], external: Iterable[External] = ()) -> list[str]:
    """Trigger subscribers and brokers, dead-letter sinks, SinkBinding subjects and sinks,
    PingSource sinks, envFrom/valueFrom Secrets and ConfigMaps (and their keys), StatefulSet
    governing Services and Broker configs all exist in the render (or are declared external)."""
    ext = frozenset(external)
    problems: list[str] = []

    def need_ref(owner: Obj, path: str, ref: Mapping[str, Any] | None) -> None:
        if not ref:
            return
        group = (
            str(ref.get("apiVersion", "")).split("/", 1)[0]
            if "/" in str(ref.get("apiVersion", ""))
            else ""
        )
        namespace = str(ref.get("namespace") or _namespace(owner))
        if not _exists(objs, str(ref.get("kind")), str(ref.get("name")), namespace, group, ext):
            problems.append(
                f"{describe(owner)}: {path} points at {ref.get('kind')} "
                f"{namespace}/{ref.get('name')}, which is not in the render"
            )

    def need_destination(owner: Obj, path: str, dest: Mapping[str, Any] | None) -> None:
        if not dest:
            problems.append(f"{describe(owner)}: {path} is missing")
        elif "ref" in dest:
            need_ref(owner, f"{path}.ref", dest["ref"])
        elif not dest.get("uri"):
            problems.append(f"{describe(owner)}: {path} has neither ref nor uri")

    def need_delivery(owner: Obj, path: str, delivery: Mapping[str, Any] | None) -> None:
        if delivery and "deadLetterSink" in delivery:
            need_destination(owner, f"{path}.deadLetterSink", delivery["deadLetterSink"])

    for broker in of_kind(objs, "Broker", EVENTING):
        spec = broker.get("spec") or {}
        need_delivery(broker, "spec.delivery", spec.get("delivery"))
        need_ref(broker, "spec.config", spec.get("config"))
    for trigger in of_kind(objs, "Trigger", EVENTING):
        spec = trigger.get("spec") or {}
        broker_name = spec.get("broker")
        if not broker_name:
            problems.append(f"{describe(trigger)}: spec.broker is not set")
        elif not _exists(objs, "Broker", str(broker_name), _namespace(trigger), EVENTING, ext):
            problems.append(
                f"{describe(trigger)}: spec.broker {broker_name!r} is not in the render"
            )
        need_destination(trigger, "spec.subscriber", spec.get("subscriber"))
        need_delivery(trigger, "spec.delivery", spec.get("delivery"))
    for binding in of_kind(objs, "SinkBinding", SOURCES):
        spec = binding.get("spec") or {}
        subject = spec.get("subject") or {}
        if "name" in subject:
            need_ref(binding, "spec.subject", subject)
        need_destination(binding, "spec.sink", spec.get("sink"))
    for ping in of_kind(objs, "PingSource", SOURCES):
        need_destination(ping, "spec.sink", (ping.get("spec") or {}).get("sink"))
    for sts in of_kind(objs, "StatefulSet", "apps"):
        service = (sts.get("spec") or {}).get("serviceName")
        if service and not _exists(objs, "Service", str(service), _namespace(sts), "", ext):
            problems.append(f"{describe(sts)}: spec.serviceName {service!r} is not in the render")
    for obj in objs:
        for path, pod in _pod_specs(obj):
            for container in _containers(pod):
                where = f"{path} container {container.get('name')}"
                for source in container.get("envFrom") or []:
                    for field_name, kind in (
                        ("secretRef", "Secret"),
                        ("configMapRef", "ConfigMap"),
                    ):
                        ref = source.get(field_name)
                        if ref and not ref.get("optional"):
                            _need_local(
                                objs, ext, obj, f"{where} envFrom", kind, ref, None, problems
                            )
                for env in container.get("env") or []:
                    value_from = env.get("valueFrom") or {}
                    for field_name, kind in (
                        ("secretKeyRef", "Secret"),
                        ("configMapKeyRef", "ConfigMap"),
                    ):
                        ref = value_from.get(field_name)
                        if ref and not ref.get("optional"):
                            _need_local(
                                objs,
                                ext,
                                obj,
                                f"{where} env {env.get('name')}",
                                kind,
                                ref,
                                str(ref.get("key")),
                                problems,
                            )
    return problems


def _need_local(
    objs: list[Obj],
    ext: frozenset[External],
    owner: Obj,
    where: str,
    kind: str,
    ref: Mapping[str, Any],
    key: str | None,
    problems: list[str],
) -> None:
    name = str(ref.get("name"))
    namespace = _namespace(owner)
    if External(kind, name, namespace) in ext:
        return
    target = next(
        (
            o
            for o in of_kind(objs, kind, "")
            if (o.get("metadata") or {}).get("name") == name and _namespace(o) == namespace
        ),
        None,
    )
    if target is None:
        problems.append(
            f"{describe(owner)}: {where}: {kind} {namespace}/{name} is not in the render"
        )
    elif key is not None:
        keys = set(target.get("data") or {}) | set(target.get("stringData") or {})
        if key not in keys:
            problems.append(f"{describe(owner)}: {where}: {kind} {name} has no key {key!r}")


# --------------------------------------------------------------------------------------------
# Secrets carry placeholders, never real-looking credentials
# --------------------------------------------------------------------------------------------

PLACEHOLDER_WORDS = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replace_me",
    "replaceme",
    "placeholder",
    "example",
    "dummy",
    "not-a-secret",
    "xxxx",
)
SENSITIVE_KEY = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|_KEY|KEY_|PRIVATE|CREDENTIAL|DSN|DATABASE_URL", re.I
)
KNOWN_SECRET_FORMATS = (
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."),  # JWT
)
_BASE64ISH = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]*)@", re.I)


def shannon_entropy(text: str) -> float:
    """Bits per character."""
    if not text:
        return 0.0
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def is_placeholder(value: str) -> bool:
    """Does the value say plainly that it is not a real credential?"""
    lowered = value.lower()
    return any(word in lowered for word in PLACEHOLDER_WORDS)


def secret_value_problems(key: str, value: str) -> list[str]:
    """Why `value` under `key` looks like a real credential (empty if it does not)."""
    problems: list[str] = []
    for pattern in KNOWN_SECRET_FORMATS:
        if pattern.search(value):
            problems.append(f"{key}: matches the format of a real credential")
    url = _URL_PASSWORD.match(value)
    if url and not is_placeholder(url.group(1)):
        problems.append(f"{key}: URL carries a password that is not a placeholder")
    if is_placeholder(value):
        return problems
    if SENSITIVE_KEY.search(key):
        problems.append(f"{key}: sensitive key whose value is not a marked placeholder")
    for run in _BASE64ISH.findall(value):
        if shannon_entropy(run) >= 3.5:
            problems.append(f"{key}: high-entropy string of {len(run)} characters")
            break
    return problems


def check_secret_placeholders(objs: Iterable[Obj]) -> list[str]:
    """Secrets in git are templates: every value is a marked placeholder or plainly harmless
    (an endpoint URL, a region, a user name), never something that looks like a credential."""
    problems: list[str] = []
    for secret in of_kind(objs, "Secret", ""):
        values: dict[str, str] = {}
        for key, raw in (secret.get("data") or {}).items():
            try:
                values[key] = base64.b64decode(str(raw), validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                problems.append(f"{describe(secret)}: data.{key} is not valid base64")
        for key, raw in (secret.get("stringData") or {}).items():
            values[key] = str(raw)
        if not values:
            problems.append(f"{describe(secret)}: has no values")
        problems.extend(
            f"{describe(secret)}: {p}"
            for k, v in values.items()
            for p in secret_value_problems(k, v)
        )
    return problems


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def images(objs: Iterable[Obj]) -> list[tuple[str, str]]:
    """(where, image reference) for every container image and CNPG imageName in the render."""
    found: list[tuple[str, str]] = []
    for obj in objs:
        for path, pod in _pod_specs(obj):
            for container in _containers(pod):
                found.append(
                    (
                        f"{describe(obj)}: {path} container {container.get('name')}",
                        str(container.get("image", "")),
                    )
                )
        if obj.get("kind") == "Cluster" and group_of(obj) == CNPG:
            found.append(
                (
                    f"{describe(obj)}: spec.imageName",
                    str((obj.get("spec") or {}).get("imageName", "")),
                )
            )
    return found


def check_images(objs: Iterable[Obj], require_digest: bool) -> list[str]:
    """No untagged or :latest image; with require_digest, every image pinned by sha256 digest."""
    problems: list[str] = []
    for where, image in images(objs):
        name = image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        has_digest = "@" in image
        if has_digest and not _DIGEST.search(image):
            problems.append(f"{where}: image {image!r} has a malformed digest")
        if not image:
            problems.append(f"{where}: no image")
        elif tag == "latest":
            problems.append(f"{where}: image {image!r} uses :latest")
        elif tag is None and not has_digest:
            problems.append(f"{where}: image {image!r} has neither tag nor digest")
        if require_digest and not _DIGEST.search(image):
            problems.append(f"{where}: image {image!r} is not pinned by sha256 digest")
    return problems


# --------------------------------------------------------------------------------------------
# Pod hardening
# --------------------------------------------------------------------------------------------


def check_pod_security(objs: Iterable[Obj]) -> list[str]:
    """Every container runs as non-root on a read-only root filesystem, without privilege
    escalation, with all capabilities dropped, and declares requests and a memory limit."""
    problems: list[str] = []
    for obj in objs:
        for path, pod in _pod_specs(obj):
            pod_sc = pod.get("securityContext") or {}
            for container in _containers(pod):
                where = f"{describe(obj)}: {path} container {container.get('name')}"
                sc = container.get("securityContext") or {}
                if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                    problems.append(f"{where}: runAsNonRoot is not true")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{where}: readOnlyRootFilesystem is not true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{where}: allowPrivilegeEscalation is not false")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                    problems.append(f"{where}: capabilities.drop does not include ALL")
                resources = container.get("resources") or {}
                if not (resources.get("requests") or {}).get("cpu"):
                    problems.append(f"{where}: no CPU request")
                if not (resources.get("requests") or {}).get("memory"):
                    problems.append(f"{where}: no memory request")
                if not (resources.get("limits") or {}).get("memory"):
                    problems.append(f"{where}: no memory limit")
    return problems


# --------------------------------------------------------------------------------------------
# Disruption budgets and the namespace quota
# --------------------------------------------------------------------------------------------


def _pod_labels(obj: Mapping[str, Any]) -> dict[str, str] | None:
    """Labels the pods of a workload carry (None if `obj` makes no pods)."""
    spec = obj.get("spec") or {}
    template_labels = dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})
    if obj.get("kind") == "Service" and group_of(obj) == SERVING:
        # Knative labels every revision pod with serving.knative.dev/service=<name>.
        template_labels[f"{SERVING}/service"] = str((obj.get("metadata") or {}).get("name"))
        return template_labels
    if obj.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        return template_labels
    return None


def _min_scale(ksvc: Mapping[str, Any]) -> int:
    annotations = (((ksvc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    for key in (f"{AUTOSCALING}/min-scale", f"{AUTOSCALING}/minScale"):
        if key in annotations:
            return _int32(str(annotations[key])) or 0
    return 0


def check_disruption_budgets(objs: list[Obj]) -> list[str]:
    """Each PodDisruptionBudget selects the pods of some workload in the render; one guarding a
    Knative Service leaves room for a drain (min-scale above minAvailable)."""
    problems: list[str] = []
    for pdb in of_kind(objs, "PodDisruptionBudget", "policy"):
        spec = pdb.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if not selector:
            problems.append(f"{describe(pdb)}: spec.selector.matchLabels is empty")
            continue
        matched = [
            o
            for o in objs
            if _namespace(o) == _namespace(pdb)
            and (labels := _pod_labels(o)) is not None
            and all(labels.get(k) == v for k, v in selector.items())
        ]
        if not matched:
            problems.append(f"{describe(pdb)}: selector {selector} matches no pods in the render")
        min_available = spec.get("minAvailable")
        for workload in matched:
            if workload.get("kind") == "Service" and isinstance(min_available, int):
                floor = _min_scale(workload)
                if floor <= min_available:
                    problems.append(
                        f"{describe(pdb)}: minAvailable={min_available} but {describe(workload)} "
                        f"min-scale={floor}: a node drain could never evict its pods"
                    )
    return problems


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("250m", "4Gi", 2) as a plain number."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


QUEUE_PROXY_CPU_REQUEST = "25m"  # config-deployment queue-sidecar-cpu-request default


@dataclass
class Usage:
    """Resource totals: what the render may ask of a namespace at most."""

    cpu_requests: float = 0.0
    memory_requests: float = 0.0
    memory_limits: float = 0.0
    pods: int = 0
    unbounded: list[str] = field(default_factory=list)

    def add(self, per_pod: Usage, replicas: int) -> None:
        self.cpu_requests += per_pod.cpu_requests * replicas
        self.memory_requests += per_pod.memory_requests * replicas
        self.memory_limits += per_pod.memory_limits * replicas
        self.pods += replicas


def _container_usage(
    resources: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]
) -> Usage:
    requests = {**(defaults.get("defaultRequest") or {}), **(resources.get("requests") or {})}
    limits = {**(defaults.get("default") or {}), **(resources.get("limits") or {})}
    # Kubernetes defaults a missing request to the limit.
    cpu = requests.get("cpu", limits.get("cpu", 0))
    memory = requests.get("memory", limits.get("memory", 0))
    return Usage(quantity(cpu), quantity(memory), quantity(limits.get("memory", 0)), 1)


def maximum_usage(objs: list[Obj]) -> Usage:
    """Totals with every Knative Service at its max-scale (plus a queue-proxy per pod), every
    StatefulSet and CNPG Cluster at its size and every Job running once; LimitRange defaults
    fill in containers that declare nothing."""
    defaults: dict[str, Any] = {}
    for limit_range in of_kind(objs, "LimitRange", ""):
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            if item.get("type") == "Container":
                defaults = item
    total = Usage()
    for obj in objs:
        pod_usage = Usage()
        replicas = 0
        if obj.get("kind") == "Cluster" and group_of(obj) == CNPG:
            spec = obj.get("spec") or {}
            pod_usage = _container_usage(spec.get("resources") or {}, defaults)
            total.add(pod_usage, int(spec.get("instances", 1)))
            continue
        for _path, pod in _pod_specs(obj):
            per_pod = Usage()
            for container in pod.get("containers") or []:
                one = _container_usage(container.get("resources") or {}, defaults)
                per_pod.cpu_requests += one.cpu_requests
                per_pod.memory_requests += one.memory_requests
                per_pod.memory_limits += one.memory_limits
            pod_usage = per_pod
        if obj.get("kind") == "Service" and group_of(obj) == SERVING:
            sidecar = _container_usage({"requests": {"cpu": QUEUE_PROXY_CPU_REQUEST}}, defaults)
            pod_usage.cpu_requests += sidecar.cpu_requests
            pod_usage.memory_requests += sidecar.memory_requests
            pod_usage.memory_limits += sidecar.memory_limits
            annotations = (
                ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
            ).get("annotations") or {}
            raw = annotations.get(
                f"{AUTOSCALING}/max-scale", annotations.get(f"{AUTOSCALING}/maxScale")
            )
            replicas = (_int32(str(raw)) or 0) if raw is not None else 0
            if replicas == 0:
                total.unbounded.append(describe(obj))
        elif obj.get("kind") in ("StatefulSet", "Deployment", "ReplicaSet"):
            replicas = int((obj.get("spec") or {}).get("replicas", 1))
        elif obj.get("kind") == "Job":
            replicas = int((obj.get("spec") or {}).get("parallelism", 1))
        else:
            continue
        total.add(pod_usage, replicas)
    return total


def check_quota(objs: list[Obj]) -> list[str]:
    """Where a ResourceQuota exists, the render at full scale fits inside it, and every Knative
    Service has a max-scale (an unbounded Service would make the quota a guess)."""
    problems: list[str] = []
    usage = maximum_usage(objs)
    for quota in of_kind(objs, "ResourceQuota", ""):
        hard = (quota.get("spec") or {}).get("hard") or {}
        for service in usage.unbounded:
            problems.append(f"{describe(quota)}: {service} has no max-scale")
        for key, used in (
            ("requests.cpu", usage.cpu_requests),
            ("requests.memory", usage.memory_requests),
            ("limits.memory", usage.memory_limits),
            ("pods", float(usage.pods)),
        ):
            if key in hard and used > quantity(hard[key]):
                problems.append(
                    f"{describe(quota)}: spec.hard.{key}={hard[key]} is below the {used:g} "
                    "the render needs at full scale"
                )
    return problems


# --------------------------------------------------------------------------------------------
# Required objects
# --------------------------------------------------------------------------------------------


def check_required(objs: list[Obj], required: Iterable[tuple[str, str, str]]) -> list[str]:
    """Each (kind, API group, name) is in the render."""
    return [
        f"missing {kind}{'.' + group if group else ''} {name}"
        for kind, group, name in required
        if find(objs, kind, name, group) is None
    ]


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


_REQUIREMENT_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^=\s]+")


def check_function_build_inputs(functions_dir: Path, names: Iterable[str]) -> list[str]:
    """What functions/Dockerfile copies for each function exists: main.py and a
    requirements.txt whose every package is pinned with == (factor 2: explicit, pinned
    dependencies; local paths such as ../kit and pip options are allowed as they are)."""
    problems: list[str] = []
    for name in names:
        folder = functions_dir / name
        if not (folder / "main.py").is_file():
            problems.append(f"{folder}/main.py: missing")
        requirements = folder / "requirements.txt"
        if not requirements.is_file():
            problems.append(f"{requirements}: missing (the image build installs it)")
            continue
        for number, raw in enumerate(requirements.read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith(("-", ".", "/")):
                continue
            if not _REQUIREMENT_PIN.match(line):
                problems.append(f"{requirements}:{number}: {line!r} is not pinned with ==")
    return problems


def check_hadolint(hadolint: Path, dockerfile: Path) -> list[str]:
    """hadolint's findings, one problem per line."""
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not lines:
        lines = [f"hadolint exited {proc.returncode}"]
    return lines if proc.returncode != 0 or lines else []


def check_dockerfile_contract(text: str, where: str = "functions/Dockerfile") -> list[str]:
    """The image contract the manifests rely on: one Dockerfile parameterised by FUNCTION,
    multi-stage, a pinned slim Python 3.11, non-root numeric user, the function in
    /app/function, migrations in /app/migrations, plain functions-framework as the command."""
    problems: list[str] = []
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    args = {
        m.group(1): m.group(2) for line in lines if (m := re.match(r"ARG\s+(\w+)(?:=(\S+))?", line))
    }
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    if "FUNCTION" not in args:
        problems.append(f"{where}: no ARG FUNCTION")
    if len(froms) < 2:
        problems.append(f"{where}: not multi-stage ({len(froms)} FROM)")
    bases = {
        args.get(m.group(1), m.group(0))
        if (m := re.fullmatch(r"\$\{?(\w+)\}?", f.split()[1]))
        else f.split()[1]
        for f in froms
    }
    for base in bases - {"builder"}:
        if not re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base):
            problems.append(f"{where}: base image {base!r} is not a pinned python:3.11.x-slim")
    users = [line.split(None, 1)[1] for line in lines if line.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(
            f"{where}: final USER is not a numeric non-root user ({users[-1:] or 'none'})"
        )
    workdirs = [line.split(None, 1)[1] for line in lines if line.upper().startswith("WORKDIR ")]
    if not workdirs or workdirs[-1] != "/app/function":
        problems.append(f"{where}: final WORKDIR is not /app/function")
    if not any(
        re.match(r"COPY\s+postgres/migrations/?\s+/app/migrations/?$", line) for line in lines
    ):
        problems.append(f"{where}: postgres/migrations is not copied to /app/migrations")
    cmds = [line for line in lines if line.upper().startswith("CMD ")]
    if not cmds or cmds[-1] != 'CMD ["functions-framework"]':
        problems.append(f'{where}: CMD is not ["functions-framework"]')
    if not re.search(r"PYTHONUNBUFFERED=1", text):
        problems.append(f"{where}: PYTHONUNBUFFERED=1 is not set")
    return problems

"""The Knative manifests in knative/base, read as the one source of truth.

Only what knfn acts on is modelled (Services, ConfigMaps, Secrets); every other object must still
be of a known kind, and every object may hold only the fields its type has (schema.py), so that a
typo stops start-up as Knative's webhook would. Errors name the file, the object and the field.

What is accepted or refused follows the webhook's defaulting then validation (knative/serving
pkg/apis/serving/v1/service_validation.go, revision_defaults.go, revision_validation.go,
route_validation.go, pkg/apis/serving/metadata_validation.go,
pkg/apis/autoscaling/annotation_validation.go, with ``config-autoscaler`` from these manifests).
What Knative accepts but ignores (an unknown ``autoscaling.knative.dev/*`` key, say) loads,
with a warning in :attr:`Manifests.warnings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from knfn import schema
from knfn.errors import KnfnError
from knfn.serving import autoscaling, traffic
from knfn.serving.autoscaler_config import GROUP, AutoscalerConfig, AutoscalingError
from knfn.serving.template import validate_annotations as validate_replica_start
from knfn.serving.traffic import TrafficTarget

KNOWN_KINDS: frozenset[tuple[str, str]] = frozenset(schema.KINDS)
# The runtime contract reserves these; Knative rejects a Service that sets them.
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
# config-defaults' revision-timeout-seconds and max-revision-timeout-seconds, as shipped
# (pkg/apis/config/defaults.go); knfn does not read config-defaults.
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 600
AUTOSCALER_CONFIGMAP = ("knative-serving", "config-autoscaler")


class ManifestError(KnfnError):
    """An object in knative/base that knfn (and Knative) would reject."""

    def __init__(self, path: Path, obj: str, fld: str, problem: str) -> None:
        super().__init__(f"{path}: {obj}: {fld}: {problem}")
        self.path, self.obj, self.field, self.problem = path, obj, fld, problem


@dataclass(frozen=True)
class Manifest:
    """One object of the manifests, as every loader receives it: kind, namespace (defaulted to
    ``default``, as the API server does), name, the file it came from and the whole document."""

    kind: str
    namespace: str
    name: str
    file: Path
    document: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        """How errors name the object: ``Trigger on-upload``."""
        return f"{self.kind} {self.name}"

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.document.get("metadata") or {}

    @property
    def spec(self) -> Any:
        """``spec`` as written (loaders check that it is an object)."""
        return self.document.get("spec") or {}

    def error(self, fld: str, problem: str) -> ManifestError:
        return ManifestError(self.file, self.label, fld, problem)


@dataclass(frozen=True)
class EnvFrom:
    kind: str  # ConfigMap | Secret
    name: str
    optional: bool = False


@dataclass(frozen=True)
class Container:
    env: tuple[tuple[str, str], ...]
    env_from: tuple[EnvFrom, ...]
    # None: a TCP connect probe (Knative's default); else an HTTP GET of this path, 2xx/3xx.
    readiness_path: str | None = None


@dataclass(frozen=True)
class Service:
    """A Knative Service, as far as knfn runs it."""

    name: str
    namespace: str
    source: Path
    annotations: Mapping[str, str]
    container: Container
    container_concurrency: int = 0
    timeout_seconds: int = 300
    response_start_timeout_seconds: int = 300
    template: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    traffic: tuple[TrafficTarget, ...] = (TrafficTarget(100),)
    idle_timeout_seconds: int = 0  # 0: none
    # config-autoscaler as the annotations were checked against (at_template checks again).
    autoscaler: AutoscalerConfig = field(
        default_factory=AutoscalerConfig, compare=False, repr=False
    )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Manifests:
    services: tuple[Service, ...]
    config_maps: Mapping[tuple[str, str], Mapping[str, str]]
    secrets: Mapping[tuple[str, str], tuple[str, ...]]
    # Every object of the manifests, in the order the kustomization lists them (the Services,
    # ConfigMaps and Secrets modelled above too).
    objects: tuple[Manifest, ...]
    # What Knative accepts and ignores, each naming file, object, field and value.
    warnings: tuple[str, ...] = ()
    # K_SINK and K_CE_OVERRIDES per (namespace, Service), from the SinkBindings
    # (knfn/eventing/sinkbinding.py), resolved once when the manifests are read.
    sink_env: Mapping[tuple[str, str], Mapping[str, str]] = field(
        default_factory=dict, compare=False
    )

    def service(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.services if (s.namespace, s.name) == (namespace, name)), None)

    def of_kind(self, kind: str) -> tuple[Manifest, ...]:
        return tuple(o for o in self.objects if o.kind == kind)

    def find(self, kind: str, namespace: str, name: str) -> Manifest | None:
        """The object of that kind, namespace and name, if the manifests declare it."""
        return self._index.get((kind, namespace, name))

    @cached_property
    def _index(self) -> dict[tuple[str, str, str], Manifest]:
        return {(o.kind, o.namespace, o.name): o for o in self.objects}


def load(base: Path, functions_dir: Path | None = None) -> Manifests:
    """Read every file kustomization.yaml lists; validate what knfn relies on."""
    kustomization = base / "kustomization.yaml"
    if not kustomization.exists():
        raise KnfnError(f"{kustomization} does not exist: no Knative manifests to run")
    listed = _yaml_docs(kustomization)[0].get("resources") or []
    objects: list[tuple[Path, dict[str, Any]]] = []
    for entry in listed:
        path = base / str(entry)
        if not path.is_file():
            raise ManifestError(kustomization, "Kustomization", "resources", f"{entry} not found")
        objects.extend((path, doc) for doc in _yaml_docs(path))
    m = _build(objects, functions_dir)
    # Imported here: eventing reads the objects of these manifests.
    from knfn.eventing import sinkbinding

    return replace(m, sink_env=sinkbinding.load(m))


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(path, "(file)", "(yaml)", f"not valid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError(path, "(file)", "(document)", "each document must be a mapping")
    return docs


def _build(objects: Iterable[tuple[Path, dict[str, Any]]], functions_dir: Path | None) -> Manifests:
    service_docs: list[tuple[Path, str, str, str, dict[str, Any]]] = []
    config_maps: dict[tuple[str, str], Mapping[str, str]] = {}
    config_map_files: dict[tuple[str, str], Path] = {}
    secrets: dict[tuple[str, str], tuple[str, ...]] = {}
    read: list[Manifest] = []
    for path, doc in objects:
        api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", ""))
        label = f"{kind or '?'} {name or '?'}"
        if (api, kind) not in KNOWN_KINDS:
            raise ManifestError(path, label, "apiVersion/kind", f"unknown kind {api!r}/{kind!r}")
        unknown = schema.unknown_fields(doc)
        if unknown:
            first, rest = unknown[0], [u.path for u in unknown[1:]]
            more = f" (also unknown: {', '.join(rest)})" if rest else ""
            raise ManifestError(path, label, first.path, first.problem + more)
        if not name:
            raise ManifestError(path, label, "metadata.name", "is required")
        namespace = str(meta.get("namespace") or "default")
        read.append(Manifest(kind, namespace, name, path, doc))
        if kind == "Service":
            service_docs.append((path, label, name, namespace, doc))
        elif kind == "ConfigMap":
            data = doc.get("data") or {}
            config_maps[(namespace, name)] = {str(k): str(v) for k, v in data.items()}
            config_map_files[(namespace, name)] = path
        elif kind == "Secret":
            keys = {*(doc.get("stringData") or {}), *(doc.get("data") or {})}
            secrets[(namespace, name)] = tuple(sorted(str(k) for k in keys))
    # Services last: their annotations are checked against config-autoscaler, as the webhook
    # checks them against the cluster's.
    try:
        scaler = AutoscalerConfig.from_configmap(config_maps.get(AUTOSCALER_CONFIGMAP, {}))
    except AutoscalingError as exc:
        where = config_map_files.get(AUTOSCALER_CONFIGMAP, Path("?"))
        raise ManifestError(where, "ConfigMap config-autoscaler", "data", str(exc)) from exc
    warnings: list[str] = []
    services = [
        _service(path, label, name, namespace, doc, functions_dir, scaler, warnings)
        for path, label, name, namespace, doc in service_docs
    ]
    return Manifests(tuple(services), config_maps, secrets, tuple(read), tuple(warnings))


def _service(
    path: Path,
    label: str,
    name: str,
    namespace: str,
    doc: Mapping[str, Any],
    functions_dir: Path | None,
    scaler: AutoscalerConfig,
    warnings: list[str] | None = None,
) -> Service:
    own = (doc.get("metadata") or {}).get("annotations") or {}
    misplaced = sorted(str(k) for k in own if str(k).startswith(GROUP))
    if misplaced:
        # metadata_validation.go ValidateHasNoAutoscalingAnnotation: refused on the Service.
        raise ManifestError(
            path, label, "metadata.annotations",
            f"{', '.join(misplaced)}: autoscaling annotations belong under "
            "spec.template.metadata.annotations (Knative refuses them on the Service itself)",
        )  # fmt: skip
    template = (doc.get("spec") or {}).get("template") or {}
    spec = template.get("spec") or {}
    annotations = {
        str(k): str(v)
        for k, v in ((template.get("metadata") or {}).get("annotations") or {}).items()
    }
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise ManifestError(
            path, label, "spec.template.spec.containers", "exactly one container is supported"
        )
    container = _container(path, label, containers[0])
    cc = _int_field(path, label, spec, "containerConcurrency", 0, 0, 1000)
    # revision_defaults.go: 0 (or none) is the default; revision_validation.go bounds the rest.
    timeout = (
        _int_field(
            path, label, spec, "timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, 0, MAX_TIMEOUT_SECONDS
        )
        or DEFAULT_TIMEOUT_SECONDS
    )
    # 0 (or none) sets no response-start timer in queue-proxy (resources/queue.go): only
    # timeoutSeconds then bounds the wait for the first byte.
    response_start = (
        _int_field(path, label, spec, "responseStartTimeoutSeconds", 0, 0, MAX_TIMEOUT_SECONDS)
        or timeout
    )
    idle = _int_field(path, label, spec, "idleTimeoutSeconds", 0, 0, 600)
    explicit = (template.get("metadata") or {}).get("name")
    if explicit is not None:
        # revision_validation.go validateRevisionName: a DNS-1035 label, the Service's prefix.
        if (problem := traffic.dns_1035_problem(explicit)) is not None:
            raise ManifestError(
                path, label, "spec.template.metadata.name", f"{explicit!r} {problem}"
            )
        if not str(explicit).startswith(name + "-"):
            raise ManifestError(
                path, label, "spec.template.metadata.name", f"{explicit!r} must start with {name}-"
            )
    problems = autoscaling.validate_annotations(annotations, scaler)
    problems += validate_replica_start(annotations)
    if problems:
        raise ManifestError(path, label, "spec.template.metadata.annotations", "; ".join(problems))
    if warnings is not None:
        warnings.extend(
            f"{path}: {label}: spec.template.metadata.annotations: {w}"
            for w in autoscaling.annotation_warnings(annotations)
        )
    targets, problems = traffic.parse((doc.get("spec") or {}).get("traffic"))
    if problems:
        raise ManifestError(path, label, "spec.traffic", "; ".join(problems))
    if functions_dir is not None and not (functions_dir / name / "main.py").is_file():
        raise ManifestError(
            path, label, "metadata.name", f"no function code at {functions_dir / name}/main.py"
        )
    return Service(
        name, namespace, path, annotations, container, cc, timeout, response_start, template,
        tuple(targets), idle_timeout_seconds=idle, autoscaler=scaler,
    )  # fmt: skip


def at_template(service: Service, template: Mapping[str, Any]) -> Service:
    """The Service as it was when a recorded revision's template was current."""
    doc = {
        "metadata": {"name": service.name, "namespace": service.namespace},
        "spec": {"template": template},
    }
    return _service(service.source, f"Service {service.name}", service.name, service.namespace,
                    doc, None, service.autoscaler)  # fmt: skip


def _container(path: Path, label: str, raw: Mapping[str, Any]) -> Container:
    env: list[tuple[str, str]] = []
    for i, item in enumerate(raw.get("env") or []):
        where = f"spec.template.spec.containers[0].env[{i}]"
        var = str(item.get("name", ""))
        if not var:
            raise ManifestError(path, label, where + ".name", "is required")
        if var in RESERVED_ENV:
            raise ManifestError(path, label, where, f"{var} is reserved by the runtime contract")
        if "valueFrom" in item:
            raise ManifestError(path, label, where, "valueFrom is not supported; use envFrom")
        env.append((var, str(item.get("value", ""))))
    env_from: list[EnvFrom] = []
    for i, item in enumerate(raw.get("envFrom") or []):
        where = f"spec.template.spec.containers[0].envFrom[{i}]"
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in item:
                ref = item[key] or {}
                env_from.append(EnvFrom(kind, str(ref.get("name", "")), bool(ref.get("optional"))))
                break
        else:
            raise ManifestError(path, label, where, "needs configMapRef or secretRef")
    http_get = (raw.get("readinessProbe") or {}).get("httpGet")
    probe = None if http_get is None else str(http_get.get("path") or "/")
    return Container(tuple(env), tuple(env_from), probe)


def _int_field(
    path: Path, label: str, spec: Mapping[str, Any], key: str, default: int, lo: int, hi: int
) -> int:
    raw = spec.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not lo <= raw <= hi:
        raise ManifestError(
            path, label, f"spec.template.spec.{key}", f"{raw!r} must be an integer {lo}..{hi}"
        )
    return raw

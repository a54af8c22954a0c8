"""The environment of a replica: what a pod of this revision would see, resolved locally.

Order as in Kubernetes: ``envFrom`` sources in order, then ``env`` (which wins), then the
runtime contract's variables (PORT, K_SERVICE, K_CONFIGURATION, K_REVISION), the SinkBinding's
K_SINK / K_CE_OVERRIDES, and HOST, the address functions-framework binds. Secrets hold templates
in the repository, never values: locally each key is filled from the running backing services,
else from the user's environment, else with a random value generated once and kept in
``.knfn/secrets.json``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knfn.manifests import ManifestError, Manifests, Service
from knfn.routing import BROKER_INGRESS

# The address a replica listens on (functions-framework reads HOST; its default is 0.0.0.0).
# In Knative the user container listens on every interface of its pod's own network namespace,
# which only the pod's queue-proxy and the cluster network reach; on one machine without
# namespaces, loopback plays that role: a replica is reachable through the gateway only.
REPLICA_HOST = "127.0.0.1"

# Passed through from knfn's own environment so the function can run at all.
PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV")


@dataclass(frozen=True)
class SecretValues:
    """Where Secret values come from locally, in order of precedence."""

    backing: Mapping[str, str]
    user_env: Mapping[str, str]
    generated_file: Path

    def value(self, key: str) -> str:
        if key in self.backing:
            return self.backing[key]
        if key in self.user_env:
            return self.user_env[key]
        return self._generated(key)

    def _generated(self, key: str) -> str:
        store: dict[str, str] = {}
        if self.generated_file.exists():
            store = json.loads(self.generated_file.read_text())
        if key not in store:
            store[key] = secrets.token_urlsafe(24)
            self.generated_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.generated_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(store, out)
        return store[key]


def sink_bindings(manifests: Manifests) -> dict[tuple[str, str], dict[str, str]]:
    """K_SINK (and K_CE_OVERRIDES) per (namespace, Service) from the SinkBindings."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for path, doc in manifests.others:
        if doc.get("kind") != "SinkBinding":
            continue
        meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
        ns = str(meta.get("namespace") or "default")
        label = f"SinkBinding {meta.get('name')}"
        subject = spec.get("subject") or {}
        if subject.get("kind") != "Service" or not subject.get("name"):
            raise ManifestError(path, label, "spec.subject", "must name a Knative Service")
        env = {"K_SINK": _sink_url(path, label, ns, spec.get("sink") or {})}
        if spec.get("ceOverrides"):
            env["K_CE_OVERRIDES"] = json.dumps(spec["ceOverrides"], separators=(",", ":"))
        out[(str(subject.get("namespace") or ns), str(subject["name"]))] = env
    return out


def _sink_url(path: Path, label: str, ns: str, sink: Mapping[str, Any]) -> str:
    if sink.get("uri"):
        return str(sink["uri"])
    ref = sink.get("ref") or {}
    ref_ns = str(ref.get("namespace") or ns)
    if ref.get("kind") == "Broker":
        return f"{BROKER_INGRESS}/{ref_ns}/{ref.get('name')}"
    if ref.get("kind") == "Service":
        return f"http://{ref.get('name')}.{ref_ns}.svc.cluster.local"
    raise ManifestError(path, label, "spec.sink", "needs uri, or a ref to a Broker or Service")


def resolve(
    service: Service,
    manifests: Manifests,
    values: SecretValues,
    *,
    revision: str,
    port: int,
    proxy_url: str,
    host_env: Mapping[str, str],
) -> dict[str, str]:
    """The full environment of one replica of service's revision."""
    env = {k: host_env[k] for k in PASSTHROUGH if k in host_env}
    env["PYTHONUNBUFFERED"] = "1"
    for source in service.container.env_from:
        key = (service.namespace, source.name)
        if source.kind == "ConfigMap":
            data = manifests.config_maps.get(key)
            if data is None and not source.optional:
                raise ManifestError(
                    service.source,
                    f"Service {service.name}",
                    "envFrom",
                    f"no ConfigMap {source.name}",
                )
            env.update(data or {})
        else:
            keys = manifests.secrets.get(key)
            if keys is None and not source.optional:
                raise ManifestError(
                    service.source, f"Service {service.name}", "envFrom", f"no Secret {source.name}"
                )
            env.update({k: values.value(k) for k in keys or ()})
    env.update(dict(service.container.env))
    env.update(sink_bindings(manifests).get((service.namespace, service.name), {}))
    env.update(
        HOST=REPLICA_HOST,
        PORT=str(port),
        K_SERVICE=service.name,
        K_CONFIGURATION=service.name,
        K_REVISION=revision,
        HTTP_PROXY=proxy_url,
        http_proxy=proxy_url,
        NO_PROXY="127.0.0.1,localhost,::1",
        no_proxy="127.0.0.1,localhost,::1",
    )
    return env

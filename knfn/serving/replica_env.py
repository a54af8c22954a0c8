"""The environment of a replica: what a pod of this revision would see, resolved locally.

Order as in Kubernetes: ``envFrom`` sources in order, then ``env`` (which wins), then the
runtime contract's variables (PORT, K_SERVICE, K_CONFIGURATION, K_REVISION), the SinkBinding's
K_SINK / K_CE_OVERRIDES (resolved when the manifests were read: eventing/sinkbinding.py), and
HOST, the address functions-framework binds. Secrets hold templates in the repository, never
values: locally each key is filled from the running backing services, else from the user's
environment, else with a random value generated once and kept in ``.knfn/secrets.json``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from knfn.manifests import ManifestError, Manifests, Service

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
    env.update(manifests.sink_env.get((service.namespace, service.name), {}))
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

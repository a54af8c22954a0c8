"""``knfn status``: the running runtime's /status, as JSON or as a table."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from knfn.errors import KnfnError


def fetch(admin_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{admin_port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
    except OSError as exc:
        raise KnfnError(f"no knfn dev answers at {url} ({exc}); is it running?") from exc
    return data


def _activator(rev: dict[str, Any]) -> str:
    """Whether the revision's requests go through the activator (in path) or straight to it."""
    in_path = rev.get("autoscaler", {}).get("activator_in_path")
    return "-" if in_path is None else ("in path" if in_path else "no")


def table(data: dict[str, Any]) -> str:
    header = ("SERVICE", "REVISION", "TRAFFIC", "TAG", "DESIRED", "READY", "IN FLIGHT", "ACTIVATOR")
    rows: list[tuple[str, ...]] = [header]
    for svc in data.get("services", []):
        for rev in svc["revisions"]:
            rows.append(
                (
                    f"{svc['name']}.{svc['namespace']}",
                    rev["name"],
                    f"{rev['traffic_percent']}%",
                    rev.get("tag") or "-",
                    str(rev["desired_replicas"]),
                    str(rev["ready_replicas"]),
                    str(rev.get("in_flight", 0)),
                    _activator(rev),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    replicas = data.get("replicas", {})
    if replicas.get("capped"):
        why = replicas.get("capped_by", {})
        held = ", ".join(f"{name} ({why.get(name, 'cap')})" for name in replicas["capped"])
        lines.append(f"replica budget binds: {held}; {replicas.get('limits', '')}".rstrip("; "))
    return "\n".join(lines)

"""knfn's strict field check (knfn/schema.py) accepts every object both overlays render."""

from __future__ import annotations

import manifest_checks as mc
import pytest

from knfn import schema


@pytest.mark.parametrize("overlay", ["knative/overlays/dev", "knative/overlays/prod"])
def test_rendered_overlays_have_no_field_knfn_refuses(
    renders: dict[str, list[mc.Obj]], overlay: str
) -> None:
    """Every Knative object, ConfigMap and Secret of the render passes the known-field check."""
    checked = [o for o in renders[overlay] if (o.get("apiVersion"), o.get("kind")) in schema.KINDS]
    assert {o["kind"] for o in checked} >= {"Service", "Broker", "Trigger", "SinkBinding"}
    problems = [
        f"{mc.describe(o)}: {u.path}: {u.problem}"
        for o in checked
        for u in schema.unknown_fields(o)
    ]
    assert problems == []

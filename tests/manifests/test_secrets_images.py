"""Secret templates carry placeholders only; images are tagged, never :latest, and pinned by
digest in prod."""

from __future__ import annotations

import base64
import copy

import manifest_checks as mc
import pytest


@pytest.mark.parametrize(
    "name", ["knative/base", "knative/overlays/dev", "minio/dev", "postgres/dev"]
)
def test_secret_templates_hold_placeholders(renders: dict[str, list[mc.Obj]], name: str) -> None:
    """Every Secret in git has marked placeholders or harmless values (endpoint, region)."""
    objs = renders[name]
    assert mc.of_kind(objs, "Secret", ""), f"{name} has no Secret to check"
    assert mc.check_secret_placeholders(objs) == []


def secret(**values: str) -> mc.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"},
        "stringData": values,
    }


@pytest.mark.parametrize(
    "values",
    [
        {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzK3j9sQ2vT"},
        {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7QWERTYZ"},
        {"DATABASE_URL": "postgresql://app:Tr0ub4dor3xyz@db.internal:5432/app"},
        {"MINIO_WEBHOOK_TOKEN": "hunter2"},
        {"NOTE": "c2VjcmV0LXZhbHVlLXRoYXQtbG9va3MtcmVhbC0xMjM0"},
        {"TLS": "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."},
        {"GITHUB": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"},
    ],
)
def test_real_looking_secret_values_fail(values: dict[str, str]) -> None:
    """Long random strings, known key formats, URL passwords and unmarked sensitive keys fail."""
    problems = mc.check_secret_placeholders([secret(**values)])
    assert problems, values
    assert all(p.startswith("Secret default/s: ") for p in problems)


@pytest.mark.parametrize(
    "values",
    [
        {"AWS_SECRET_ACCESS_KEY": "change-me-secret-key"},
        {"MINIO_WEBHOOK_TOKEN": "REPLACE_ME"},
        {"DATABASE_URL": "postgresql://app:change-me@postgres.default.svc.cluster.local:5432/app"},
        {
            "S3_ENDPOINT_URL": "http://minio.default.svc.cluster.local:9000",
            "AWS_REGION": "us-east-1",
        },
        {"POSTGRES_USER": "app"},
    ],
)
def test_placeholder_values_pass(values: dict[str, str]) -> None:
    """Marked placeholders and plain non-secret settings pass."""
    assert mc.check_secret_placeholders([secret(**values)]) == []


def test_base64_data_is_decoded_before_judging(dev: list[mc.Obj]) -> None:
    """A real-looking value hidden in data: (base64) is found, and invalid base64 is reported."""
    objs = copy.deepcopy(dev)
    hook = mc.find(objs, "Secret", "minio-webhook", "")
    assert hook is not None
    hook.pop("stringData")
    real = base64.b64encode(b"9f8e7d6c5b4a39281706f5e4d3c2b1a0").decode()
    hook["data"] = {"MINIO_WEBHOOK_TOKEN": real, "OTHER": "not base64!"}
    problems = mc.check_secret_placeholders(objs)
    assert any("MINIO_WEBHOOK_TOKEN" in p for p in problems)
    assert any("data.OTHER is not valid base64" in p for p in problems)


# ---- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_images_are_tagged(renders: dict[str, list[mc.Obj]], overlay: str) -> None:
    """No image is untagged or :latest."""
    objs = renders[f"knative/overlays/{overlay}"]
    assert len(mc.images(objs)) >= 12
    assert mc.check_images(objs, require_digest=False) == []


def test_prod_images_are_pinned_by_digest(prod: list[mc.Obj]) -> None:
    """In prod every image, the CNPG imageName included, carries a sha256 digest."""
    assert any("spec.imageName" in where for where, _ in mc.images(prod))
    assert mc.check_images(prod, require_digest=True) == []


def test_dev_images_are_not_digest_pinned(dev: list[mc.Obj]) -> None:
    """The digest requirement bites: dev's tag-only images fail it."""
    problems = mc.check_images(dev, require_digest=True)
    assert len(problems) == len(mc.images(dev))


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("knfn/hello", "neither tag nor digest"),
        ("knfn/hello:latest", ":latest"),
        ("registry.local:5000/knfn/hello", "neither tag nor digest"),
        ("knfn/hello@sha256:abc", "malformed digest"),
    ],
)
def test_bad_image_references_fail(dev: list[mc.Obj], image: str, fragment: str) -> None:
    """Untagged, :latest (also behind a registry port) and malformed digests are reported."""
    objs = copy.deepcopy(dev)
    hello = mc.find(objs, "Service", "hello", mc.SERVING)
    assert hello is not None
    hello["spec"]["template"]["spec"]["containers"][0]["image"] = image
    problems = mc.check_images(objs, require_digest=False)
    assert len(problems) == 1
    assert fragment in problems[0]
    assert "default/hello" in problems[0]

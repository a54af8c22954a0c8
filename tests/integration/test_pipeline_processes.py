"""The sample pipeline as real processes: ingest -> thumbnail -> catalog -> query.

Each function runs under the real `functions-framework` command (gunicorn) on a free loopback
port, with the env the platform gives it, against the session's real Postgres and S3. The test
plays the broker: it takes the event ingest sent to its K_SINK (a recording HTTP server),
delivers it to thumbnail, and delivers both events to catalog. Processes are stopped with
SIGTERM (SIGKILL after a grace period) however the test ends.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kit.testing import RecordingSink
from PIL import Image

from tests.support import REPO, free_port, running, stop_process, wait_http

pytestmark = pytest.mark.slow

FUNCTIONS_FRAMEWORK = Path(sys.executable).with_name("functions-framework")
TARGETS = {"ingest": "ingest", "thumbnail": "thumbnail", "catalog": "catalog", "query": "query"}


@dataclass
class Function:
    """One running function: its URL, its process and its log file."""

    url: str
    process: Any
    log: Path


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


def start_function(stack: ExitStack, name: str, env: Mapping[str, str], logs: Path) -> Function:
    """Start functions/<name> as its container would, and wait until it answers HTTP."""
    port = free_port()
    log = logs / f"{name}.log"
    process_env = {
        "PATH": os.environ.get("PATH", ""),
        "NO_PROXY": "127.0.0.1,localhost",
        "FUNCTION_TARGET": TARGETS[name],
        "FUNCTION_SIGNATURE_TYPE": "http",
        "PORT": str(port),
        "K_SERVICE": name,
        "K_REVISION": f"{name}-00001",
        **env,
    }
    process = stack.enter_context(
        running(
            [str(FUNCTIONS_FRAMEWORK)],
            env=process_env,
            cwd=REPO / "functions" / name,
            log=log,
        )
    )
    url = f"http://127.0.0.1:{port}/"
    wait_http(url, timeout=20)
    return Function(url=url, process=process, log=log)


@pytest.fixture
def pipeline(
    tmp_path: Path, database_url: str, s3_env: dict[str, str], bucket: str
) -> Iterator[tuple[dict[str, Function], RecordingSink]]:
    """The four functions running, ingest's K_SINK pointing at a recording server."""
    env = {"DATABASE_URL": database_url, **s3_env, "S3_BUCKET": bucket, "LOG_LEVEL": "INFO"}
    with ExitStack() as stack:
        sink = stack.enter_context(RecordingSink())
        functions = {
            "ingest": start_function(stack, "ingest", {**env, "K_SINK": sink.url}, tmp_path),
            "thumbnail": start_function(stack, "thumbnail", env, tmp_path),
            "catalog": start_function(stack, "catalog", env, tmp_path),
            "query": start_function(stack, "query", env, tmp_path),
        }
        yield functions, sink


def forward(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a broker passes on when delivering a binary CloudEvent."""
    return {k: v for k, v in headers.items() if k.startswith("ce-") or k == "content-type"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_upload_flows_through_the_pipeline(
    pipeline: tuple[dict[str, Function], RecordingSink], s3_client: Any, bucket: str
) -> None:
    """A PNG posted to ingest ends up thumbnailed, catalogued and fetchable through query."""
    functions, sink = pipeline
    original = png(320, 240)

    # 1. ingest stores the upload and sends object.stored to its K_SINK.
    answer = requests.post(
        functions["ingest"].url,
        data=original,
        headers={"Content-Type": "image/png"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    uploaded = answer.json()
    key = uploaded["key"]
    [stored] = sink.requests
    assert stored.headers["ce-specversion"] == "1.0"
    assert stored.headers["ce-type"] == "dev.knfn.object.stored"
    assert stored.headers["ce-source"] == "/functions/ingest"
    assert stored.headers["ce-subject"] == key
    assert stored.headers["ce-id"] == uploaded["event_id"]
    announced = stored.event().get_data()
    assert isinstance(announced, dict)
    assert announced == {k: v for k, v in uploaded.items() if k != "event_id"}

    # 2. The broker would deliver it to thumbnail, whose reply is thumbnail.created.
    reply = requests.post(
        functions["thumbnail"].url, data=stored.body, headers=forward(stored.headers), timeout=10
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["ce-type"] == "dev.knfn.thumbnail.created"
    assert reply.headers["ce-subject"] == key
    created = reply.json()
    assert (created["width"], created["height"]) == (128, 96)
    thumbnail = s3_client.get_object(Bucket=bucket, Key=created["thumbnail_key"])
    with Image.open(io.BytesIO(thumbnail["Body"].read())) as image:
        assert image.size == (128, 96)

    # 3. Both events reach catalog; each is acknowledged with an empty answer.
    for body, headers in ((stored.body, stored.headers), (reply.content, reply.headers)):
        delivered = requests.post(
            functions["catalog"].url, data=body, headers=forward(headers), timeout=10
        )
        assert delivered.status_code == 204, delivered.text
        assert delivered.content == b""

    # 4. query lists it with its thumbnail, and the presigned URLs fetch the bytes.
    listing = requests.get(functions["query"].url + "objects", timeout=10).json()
    [item] = listing["items"]
    assert item["key"] == key
    assert item["thumbnail_key"] == created["thumbnail_key"]
    assert item["sha256"] == uploaded["sha256"]
    assert requests.get(item["url"], timeout=10).content == original
    assert requests.get(item["thumbnail_url"], timeout=10).status_code == 200

    # 5. SIGTERM: the worker drains, closes its pool, and the process exits cleanly.
    catalog = functions["catalog"]
    stop_process(catalog.process)
    assert catalog.process.returncode == 0
    lines = json_lines(catalog.log)
    assert any(
        line["message"] == "resource closed" and line["resource"] == "postgres pool catalog"
        for line in lines
    )
    assert all(line["service"] == "catalog" for line in lines)

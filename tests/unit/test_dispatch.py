"""The dispatcher's decisions per attempt, with an injected clock and a scripted subscriber,
and the eventing configuration loaded from manifests (errors naming file, object, field)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from knfn import manifests
from knfn.eventing import config as eventing_config
from knfn.eventing.dispatcher import Dispatcher
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Claimed, EventStore
from knfn.manifests import ManifestError

EVENTING = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
spec:
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.2S
    deadLetterSink: {uri: 'http://sink.example/dead'}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: demo}}
  subscriber: {uri: 'http://subscriber.example/'}
"""


def load(tmp_path: Path, body: str) -> eventing_config.EventingConfig:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(textwrap.dedent(body))
    return eventing_config.load(manifests.load(base))


class Subscriber:
    """Answers each attempt with the next scripted status (and body)."""

    def __init__(self, *answers: tuple[int | None, bytes, Mapping[str, str]]) -> None:
        self.answers = list(answers)
        self.seen: list[Mapping[str, str]] = []

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> SendResult:
        self.seen.append(headers)
        status, reply, reply_headers = self.answers.pop(0)
        return status, reply_headers, reply, None if status else "connection refused"


def claimed(attempts: int, kind: str = "subscriber") -> Claimed:
    return Claimed(
        id=1, event_id=1, namespace="default", trigger="t", kind=kind,
        destination="http://subscriber.example/", extensions={}, attempts=attempts,
        attributes={"specversion": "1.0", "id": "e1", "source": "/s", "type": "demo",
                    "knativebrokerttl": "255"},
        data=b"{}", broker="default", accepted_at=datetime.now(UTC),
    )  # fmt: skip


def dispatcher(tmp_path: Path, subscriber: Subscriber, now: float) -> Dispatcher:
    config = load(tmp_path, EVENTING)
    store = EventStore("postgresql://unused")
    return Dispatcher("postgresql://unused", store, lambda: config, subscriber, clock=lambda: now)


def test_500_500_200_waits_backoff_x1_then_x2(tmp_path: Path) -> None:
    """Two 500s are retried after 0.2 s then 0.4 s; the third attempt's 200 delivers."""
    sub = Subscriber((500, b"", {}), (500, b"", {}), (200, b"", {}))
    d = dispatcher(tmp_path, sub, now=1000.0)
    first = asyncio.run(d.attempt(claimed(1)))
    second = asyncio.run(d.attempt(claimed(2)))
    third = asyncio.run(d.attempt(claimed(3)))
    assert (first.state, second.state, third.state) == ("pending", "pending", "delivered")
    assert first.retry_at == datetime.fromtimestamp(1000.2, UTC)
    assert second.retry_at == datetime.fromtimestamp(1000.4, UTC)
    assert "ce-knativebrokerttl" not in sub.seen[0]


def test_400_is_dead_lettered_at_once_with_the_error_extensions(tmp_path: Path) -> None:
    """A 400 is not retried: the dead-letter delivery carries dest, code and base64 data."""
    d = dispatcher(tmp_path, Subscriber((400, b"bad field", {})), now=0.0)
    outcome = asyncio.run(d.attempt(claimed(1)))
    assert outcome.state == "dead"
    [dead] = outcome.followups
    assert (dead.kind, dead.destination) == ("dead-letter", "http://sink.example/dead")
    assert dead.extensions["knativeerrordest"] == "http://subscriber.example/"
    assert dead.extensions["knativeerrorcode"] == "400"
    assert dead.extensions["knativeerrordata"] == "YmFkIGZpZWxk"


def test_last_retry_failing_goes_to_the_dead_letter_sink(tmp_path: Path) -> None:
    """After retry 2 (three attempts) a 503 is dead-lettered; a dead-letter delivery that
    fails for good is given up, not dead-lettered again."""
    d = dispatcher(tmp_path, Subscriber((503, b"", {}), (503, b"", {})), now=0.0)
    assert asyncio.run(d.attempt(claimed(3))).state == "dead"
    assert asyncio.run(d.attempt(claimed(3, kind="dead-letter"))).state == "failed"


def test_non_cloudevent_body_is_a_failure_and_a_reply_event_re_enters(tmp_path: Path) -> None:
    """A 200 "OK" counts as 502 and is retried; a 200 CloudEvent reply is published with the
    TTL lowered by one."""
    reply = {"ce-specversion": "1.0", "ce-id": "r1", "ce-source": "/sub", "ce-type": "demo"}
    sub = Subscriber((200, b"OK", {"Content-Type": "text/plain"}), (200, b"", reply))
    d = dispatcher(tmp_path, sub, now=0.0)
    failed = asyncio.run(d.attempt(claimed(1)))
    assert (failed.state, failed.status) == ("pending", 502)
    delivered = asyncio.run(d.attempt(claimed(2)))
    [published] = delivered.replies
    assert published.attributes["id"] == "r1"
    assert published.attributes["knativebrokerttl"] == "254"
    assert [x.trigger for x in published.deliveries] == ["t"]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("broker: default", "broker: missing", "spec.broker"),
        ("retry: 2", "retry: -1", "spec.delivery"),
        ("filter: {attributes: {type: demo}}", "filters: [{cesql: 'type ='}]", "spec.filter(s)"),
        ("subscriber: {uri: 'http://subscriber.example/'}",
         "subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: nope}}",
         "spec.subscriber"),
    ],
)  # fmt: skip
def test_invalid_eventing_objects_name_file_object_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """A bad Broker or Trigger stops loading with file, object and field in the message."""
    with pytest.raises(ManifestError) as info:
        load(tmp_path, EVENTING.replace(old, new))
    assert info.value.field == field and "objects.yaml" in str(info.value)

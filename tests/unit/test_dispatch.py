"""The dispatcher's decisions per attempt, with an injected clock and a scripted subscriber; its
isolation of attempts (a hung one delays no other), driven by asyncio events; and the eventing
configuration loaded from manifests (errors naming file, object, field)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from knfn import manifests
from knfn.eventing import config as eventing_config
from knfn.eventing import worker
from knfn.eventing.broker import fan_out
from knfn.eventing.cloudevent import Event
from knfn.eventing.dispatcher import Dispatcher, InFlight, Limits
from knfn.eventing.sending import SendResult
from knfn.eventing.store import Claimed, EventStore, Outcome
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


def write_base(tmp_path: Path, body: str) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (base / "objects.yaml").write_text(textwrap.dedent(body))
    return base


def load(tmp_path: Path, body: str) -> eventing_config.EventingConfig:
    return eventing_config.load(manifests.load(write_base(tmp_path, body)))


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


def claimed(
    attempts: int,
    kind: str = "subscriber",
    *,
    id: int = 1,
    trigger: str = "t",
    destination: str = "http://subscriber.example/",
) -> Claimed:
    return Claimed(
        id=id, event_id=id, namespace="default", trigger=trigger, kind=kind,
        destination=destination, extensions={}, attempts=attempts,
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
        ("retry: 2", "retry: -1", "spec.delivery.retry"),
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


class Subscribers:
    """Attempts by destination: ``hung`` never answers until released; others answer at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.done: list[tuple[int, str]] = []

    async def attempt(self, c: Claimed) -> Outcome:
        self.started.append(c.id)
        if c.destination == "http://hung/":
            await self.release.wait()
        return Outcome(c.id, "delivered", 200, None)

    def ended(self, c: Claimed, outcome: Outcome) -> None:
        self.done.append((c.id, outcome.state))


async def settle() -> None:
    """Let every task that can run, run (no clock involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_hung_subscriber_delays_no_other_triggers_deliveries() -> None:
    """While one Trigger's attempts hang, every attempt of another Trigger claimed after them
    ends and is reported at once; the hung ones only hold their own destination's slots."""

    async def scenario() -> None:
        subs = Subscribers()
        inflight = InFlight(subs.attempt, subs.ended, Limits(total=50, per_destination=3))
        for n in range(5):
            inflight.add(claimed(1, id=n, trigger="slow", destination="http://hung/"))
        for n in range(100, 120):
            inflight.add(claimed(1, id=n, trigger="fast", destination="http://fast/"))
        await settle()
        assert subs.done == [(n, "delivered") for n in range(100, 120)]
        # Three hung attempts run, two wait for a slot of theirs; none of them is done.
        assert [i for i in subs.started if i < 100] == [0, 1, 2]
        assert sorted(inflight.held) == [0, 1, 2, 3, 4]
        assert inflight.saturated() == ["http://hung/"]
        assert inflight.room() == 45
        subs.release.set()
        await settle()
        assert sorted(i for i, _ in subs.done if i < 100) == [0, 1, 2, 3, 4]
        assert inflight.held == {} and inflight.saturated() == []

    asyncio.run(scenario())


def test_draining_waits_for_attempts_then_cut_returns_the_rest_unreported() -> None:
    """drain lets attempts end until cut; what is still held is cancelled and handed back to
    be released, never reported as an outcome."""

    async def scenario() -> None:
        subs = Subscribers()
        inflight = InFlight(subs.attempt, subs.ended, Limits(total=10, per_destination=1))
        inflight.add(claimed(1, id=1, destination="http://hung/"))
        inflight.add(claimed(1, id=2, destination="http://hung/"))  # waits for the slot
        inflight.add(claimed(1, id=3, destination="http://fast/"))
        cut = asyncio.Event()
        draining = asyncio.create_task(inflight.drain(cut))
        await settle()
        assert subs.done == [(3, "delivered")] and not draining.done()
        cut.set()
        left = await draining
        assert sorted(c.id for c in left) == [1, 2]
        assert subs.done == [(3, "delivered")]
        assert inflight.held == {} and inflight.room() == 10

    asyncio.run(scenario())


# -- dispatcher processes and ordered Triggers -------------------------------------------------
def test_processes_default_to_one_per_two_cores_from_one_to_four() -> None:
    """default_processes: half the cores, never 0, at most 4; unknown core count gives 1."""
    assert [worker.default_processes(n) for n in (None, 1, 2, 3, 4, 8, 64)] == [1, 1, 1, 1, 2, 4, 4]


def test_the_in_flight_bounds_are_split_between_processes_rounding_up() -> None:
    """share: each of N processes gets total/N and per_destination/N (rounded up), so all of
    them together hold what one dispatcher would; the claim batch is kept."""
    assert worker.share(Limits(256, 32, 64), 1) == Limits(256, 32, 64)
    assert worker.share(Limits(256, 32, 64), 3) == Limits(86, 11, 64)
    assert worker.share(Limits(4, 1, 8), 8) == Limits(1, 1, 8)


def test_frames_round_trip_and_end_of_file_reads_as_none(tmp_path: Path) -> None:
    """A worker reads the parent's frames back whole, manifests included; EOF is None."""
    m = manifests.load(write_base(tmp_path, EVENTING))

    async def read_all() -> list[tuple[str, object] | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(worker.frame(("config", m)) + worker.frame(("stop", None)))
        reader.feed_eof()
        return [await worker.read_frame(reader) for _ in range(3)]

    first, second, third = asyncio.run(read_all())
    assert first is not None and first[0] == "config"
    assert eventing_config.load(first[1]).trigger("default", "t") is not None  # type: ignore[arg-type]
    assert second == ("stop", None) and third is None


ORDERED = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: ordered
  namespace: default
  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}
spec: {broker: default, subscriber: {uri: 'http://one.example/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: plain
  namespace: default
  annotations: {kafka.eventing.knative.dev/delivery.order: unordered}
spec: {broker: default, subscriber: {uri: 'http://two.example/'}}
"""


def test_an_ordered_trigger_keys_its_deliveries_by_partitionkey(tmp_path: Path) -> None:
    """fan_out gives an ordered Trigger's delivery the event's partitionkey as its order key;
    an unordered Trigger's, and an event without partitionkey, get none."""
    config = load(tmp_path, ORDERED)
    keyed = Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                   "partitionkey": "customer-7"}, None)  # fmt: skip
    loose = Event({"specversion": "1.0", "id": "2", "source": "/s", "type": "t"}, None)
    assert {d.trigger: d.order_key for d in fan_out(config, "default", "default", keyed)} == {
        "ordered": "customer-7",
        "plain": None,
    }
    assert [d.order_key for d in fan_out(config, "default", "default", loose)] == [None, None]


def test_a_delivery_order_other_than_ordered_or_unordered_names_the_annotation(
    tmp_path: Path,
) -> None:
    """The annotation takes 'ordered' or 'unordered' (the Kafka broker's two consumers)."""
    with pytest.raises(ManifestError) as info:
        load(tmp_path, ORDERED.replace("delivery.order: ordered", "delivery.order: sorted"))
    message = str(info.value)
    assert "Trigger ordered" in message and "'sorted'" in message
    assert "metadata.annotations.kafka.eventing.knative.dev/delivery.order" in message

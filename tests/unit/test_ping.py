"""PingSource: next fire (the grammar is in test_cron.py), the event, validation, the scheduler."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from knfn import manifests
from knfn.eventing import cloudevent, ping
from knfn.eventing.delivery import Destination
from knfn.eventing.sending import SendResult
from knfn.manifests import ManifestError
from tests.support import REPO

NEW_YORK = ZoneInfo("America/New_York")
SINK = "http://event-display.default.svc.cluster.local"


def source(schedule: str, timezone: str = "", **changes: object) -> ping.PingSource:
    fields: dict[str, object] = {
        "namespace": "default",
        "name": "heartbeat",
        "schedule": schedule,
        "timezone": timezone,
        "content_type": "",
        "data": None,
        "sink": Destination(uri=SINK),
        "sink_url": SINK,
    }
    fields.update(changes)
    return ping.PingSource(**fields)  # type: ignore[arg-type]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# -- next fire (the schedule itself: tests/unit/test_cron.py) ---------------------------------


def test_next_fire_of_an_empty_schedule_is_every_minute() -> None:
    """An empty schedule is ping_defaults.go's * * * * *."""
    assert ping.next_fire(source(""), utc(2025, 1, 1, 12, 5, 0, 1)) == utc(2025, 1, 1, 12, 6)


def test_next_fire_uses_the_source_timezone() -> None:
    """spec.timezone sets the zone the schedule is read in: 9:00 in Paris is 8:00Z in winter."""
    fired = ping.next_fire(source("0 9 * * *", "Europe/Paris"), utc(2025, 1, 1))
    assert fired == utc(2025, 1, 1, 8) and fired is not None
    assert str(fired.tzinfo) == "Europe/Paris"


# -- the event -------------------------------------------------------------------------------


def test_event_attributes_are_those_of_the_mtping_adapter() -> None:
    """specversion, id, source, type, time (UTC, RFC 3339), extensions, data and its type."""
    src = source(
        "* * * * *",
        content_type="application/json",
        data=b'{"message": "hi"}',
        ce_overrides=(("team", "a"),),
    )
    event = ping.build_event(src, datetime(2025, 1, 1, 9, 30, tzinfo=NEW_YORK), "id-1")
    assert dict(event.attributes) == {
        "specversion": "1.0",
        "id": "id-1",
        "source": "/apis/v1/namespaces/default/pingsources/heartbeat",
        "type": "dev.knative.sources.ping",
        "time": "2025-01-01T14:30:00Z",
        "datacontenttype": "application/json",
        "team": "a",
    }
    assert event.data == b'{"message": "hi"}'
    headers, body = cloudevent.to_binary(event)
    assert headers["ce-type"] == "dev.knative.sources.ping"
    assert headers["Content-Type"] == "application/json" and body == event.data


def test_event_without_data_has_no_datacontenttype() -> None:
    """contentType alone sets nothing: upstream sets it together with the data."""
    event = ping.build_event(source("* * * * *", content_type="text/plain"), utc(2025, 1, 1), "x")
    assert "datacontenttype" not in event.attributes and event.data is None


def test_event_time_keeps_a_fraction_only_when_there_is_one() -> None:
    """Go's RFC3339Nano: whole seconds have no fraction, trailing zeros are dropped."""
    assert ping.rfc3339(utc(2025, 1, 1, 0, 0, 1, 250000)) == "2025-01-01T00:00:01.25Z"


# -- validation ------------------------------------------------------------------------------

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: event-display, namespace: default}
spec: {template: {spec: {containers: [{image: x}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
"""


def load(tmp_path: Path, spec: str, extra: str = "") -> list[ping.PingSource]:
    base = tmp_path / f"base{len(list(tmp_path.iterdir()))}"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    doc = (
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\n"
        "metadata: {name: beat, namespace: default}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
    )
    (base / "objects.yaml").write_text(SERVICE + extra + "---\n" + doc)
    return ping.load(manifests.load(base))


SINK_REF = "sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: event-display}}\n"


def test_repository_pingsource_loads() -> None:
    """knative/base's heartbeat loads, with its sink resolved to event-display."""
    sources = ping.load(manifests.load(REPO / "knative" / "base"))
    beat = next(s for s in sources if s.name == "heartbeat")
    assert beat.sink_url == SINK and beat.data == b'{"message": "heartbeat"}'
    assert ping.next_fire(beat, utc(2025, 1, 1, 0, 0, 30)) == utc(2025, 1, 1, 0, 1)


def test_full_spec_loads(tmp_path: Path) -> None:
    """Every field: schedule, timezone, contentType, dataBase64, sink, ceOverrides."""
    (src,) = load(
        tmp_path,
        f"""\
        schedule: "0 9 * * *"
        timezone: Europe/Paris
        contentType: text/plain
        dataBase64: {base64.b64encode(b"hello").decode()}
        ceOverrides: {{extensions: {{Team: payments}}}}
        {SINK_REF}""",
    )
    assert (src.schedule, src.timezone, src.content_type) == (
        "0 9 * * *",
        "Europe/Paris",
        "text/plain",
    )
    assert src.data == b"hello" and src.ce_overrides == (("team", "payments"),)


def test_empty_schedule_defaults_to_every_minute(tmp_path: Path) -> None:
    """No schedule is * * * * * (ping_defaults.go)."""
    (src,) = load(tmp_path, SINK_REF)
    assert src.schedule == "* * * * *"


def test_sink_may_be_a_broker_or_a_sequence(tmp_path: Path) -> None:
    """A Broker sink is its ingress URL; a Sequence sink its first channel's address."""
    (src,) = load(
        tmp_path, "sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}"
    )
    assert (
        src.sink_url == "http://broker-ingress.knative-eventing.svc.cluster.local/default/default"
    )
    sequence = (
        "---\napiVersion: flows.knative.dev/v1\nkind: Sequence\n"
        "metadata: {name: seq, namespace: default}\n"
        "spec: {steps: [{uri: 'http://example.com/'}]}\n"
    )
    (src,) = load(
        tmp_path,
        "sink: {ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: seq}}",
        sequence,
    )
    assert src.sink_url == "http://seq-kn-sequence-0-kn-channel.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ('schedule: "61 * * * *"\n' + SINK_REF, "spec.schedule", "above the maximum 59"),
        ('schedule: "@every 1m"\n' + SINK_REF, "spec.schedule", "@every"),
        ("timezone: Mars/Olympus\n" + SINK_REF, "spec.timezone", "not an IANA time zone"),
        (
            'schedule: "CRON_TZ=UTC * * * * *"\ntimezone: UTC\n' + SINK_REF,
            "spec.schedule",
            "spec.timezone is set too",
        ),
        ("data: a\ndataBase64: YQ==\n" + SINK_REF, "spec.data", "mutually exclusive"),
        ("dataBase64: 'not base64!'\n" + SINK_REF, "spec.dataBase64", "not valid base64"),
        ("dataBase64: YQ\n" + SINK_REF, "spec.dataBase64", "not valid base64"),
        ("contentType: application/json\ndata: '[1]'\n" + SINK_REF, "spec.data", "not an object"),
        ("contentType: application/json\ndata: '{'\n" + SINK_REF, "spec.data", "not JSON"),
        (
            "contentType: application/json\ndataBase64: "
            + base64.b64encode(b"7").decode()
            + "\n"
            + SINK_REF,
            "spec.dataBase64",
            "not an object",
        ),
        ("contentType: json\ndata: x\n" + SINK_REF, "spec.contentType", "not a media type"),
        ("data: 5\n" + SINK_REF, "spec.data", "must be a string"),
        ('schedule: "* * * * *"\n', "spec.sink", "is required"),
        ("sink: {uri: /relative}\n", "spec.sink.uri", "must be an absolute URL"),
        ("sink: {ref: {kind: Service, name: x}}\n", "spec.sink.ref.apiVersion", "is required"),
        (
            "sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: nope}}\n",
            "spec.sink",
            "no Service default/nope",
        ),
        (
            "sink: {ref: {apiVersion: flows.knative.dev/v1, kind: Parallel, name: nope}}\n",
            "spec.sink",
            "no Parallel default/nope",
        ),
        (
            "ceOverrides: {extensions: {bad-name: x}}\n" + SINK_REF,
            "spec.ceOverrides.extensions.bad-name",
            "letters and digits",
        ),
        (
            "ceOverrides: {extensions: {type: x}}\n" + SINK_REF,
            "spec.ceOverrides.extensions.type",
            "context attribute",
        ),
        (
            "ceOverrides: {extensions: {n: 1}}\n" + SINK_REF,
            "spec.ceOverrides.extensions.n",
            "must be a string",
        ),
        (
            "ceOverrides: {other: {}}\n" + SINK_REF,
            "spec.ceOverrides.other",
            "known here: extensions",
        ),
        ('scheduel: "* * * * *"\n' + SINK_REF, "spec.scheduel", "unknown field"),
    ],
)
def test_validation_errors_name_file_object_and_field(
    tmp_path: Path, spec: str, field: str, problem: str
) -> None:
    """Each invalid PingSource stops loading with the file, the object and the field."""
    with pytest.raises(ManifestError) as info:
        load(tmp_path, spec)
    err = info.value
    assert err.path.name == "objects.yaml" and err.obj == "PingSource beat"
    assert err.field == field
    assert problem in err.problem


# -- the scheduler ---------------------------------------------------------------------------


class FakeTime:
    """A clock and a sleep that advances it; stops the loop once ``until`` is reached."""

    def __init__(self, start: datetime, until: datetime, stop: asyncio.Event) -> None:
        self.now, self.until, self.stop = start, until, stop
        self.waits: list[float] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.now >= self.until:
            self.stop.set()
        for _ in range(3):  # let the send tasks run
            await asyncio.sleep(0)


class Sink:
    """Stands for the HTTP sink: answers each send with the next scripted status."""

    def __init__(self, *statuses: int | None) -> None:
        self.statuses = list(statuses)
        self.sent: list[tuple[str, cloudevent.Event]] = []

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> SendResult:
        self.sent.append((url, cloudevent.from_http(headers, body)))
        status = self.statuses.pop(0) if self.statuses else 202
        if status is None:
            return None, {}, b"", "ConnectionRefusedError: refused"
        return status, {}, b"", None


def drive(
    sources: list[ping.PingSource] | Callable[[datetime], list[ping.PingSource]],
    sink: Sink,
    start: datetime,
    minutes: float,
) -> tuple[list[str], FakeTime]:
    """Run the scheduler on fake time for ``minutes``; the reports and the fake time."""
    reports: list[str] = []

    async def body() -> FakeTime:
        stop = asyncio.Event()
        fake = FakeTime(start, start + timedelta(minutes=minutes), stop)
        ids = iter(range(1000))

        def current() -> list[ping.PingSource]:
            return sources(fake.now) if callable(sources) else sources

        await ping.run(
            current, sink, stop, report=reports.append, clock=fake.clock, sleep=fake.sleep,
            new_id=lambda: f"id-{next(ids)}",
        )  # fmt: skip
        return fake

    return reports, asyncio.run(body())


def test_scheduler_fires_each_minute_with_the_tick_time() -> None:
    """* * * * * for five minutes from 00:00:30: five events, at 00:01 .. 00:05, to the sink."""
    sink = Sink()
    reports, _ = drive([source("* * * * *")], sink, utc(2025, 1, 1, 0, 0, 30), 5)
    assert reports == []
    assert [url for url, _ in sink.sent] == [SINK] * 5
    assert [e.attributes["time"] for _, e in sink.sent] == [
        f"2025-01-01T00:0{m}:00Z" for m in range(1, 6)
    ]
    assert len({e.id for _, e in sink.sent}) == 5


def test_scheduler_runs_sources_on_their_own_schedules() -> None:
    """Every minute and every other minute over ten minutes: ten and five events."""
    sink = Sink()
    every = source("* * * * *")
    other = source("*/2 * * * *", name="other")
    drive([every, other], sink, utc(2025, 1, 1), 10.01)
    by_source = [e.source.rsplit("/", 1)[1] for _, e in sink.sent]
    assert by_source.count("heartbeat") == 10 and by_source.count("other") == 5


def test_scheduler_sleeps_until_the_next_fire_at_most_poll_seconds() -> None:
    """Between ticks the loop sleeps no more than a second, so manifest changes are seen."""
    _, fake = drive([source("0 * * * *")], Sink(), utc(2025, 1, 1), 3)
    assert fake.waits and max(fake.waits) <= 1.0


def test_scheduler_follows_added_and_removed_sources() -> None:
    """A source added at 00:02 starts then; one removed at 00:04 stops then."""
    sink = Sink()
    late, gone = source("* * * * *", name="late"), source("* * * * *", name="gone")

    def current(now: datetime) -> list[ping.PingSource]:
        out = [late] if now >= utc(2025, 1, 1, 0, 2) else []
        return out + ([gone] if now < utc(2025, 1, 1, 0, 4) else [])

    drive(current, sink, utc(2025, 1, 1, 0, 0, 30), 6)
    names = [e.source.rsplit("/", 1)[1] for _, e in sink.sent]
    assert names.count("gone") == 3  # 00:01, 00:02, 00:03
    assert names.count("late") == 4  # 00:03 .. 00:06


def test_send_retries_retryable_failures_with_exponential_backoff() -> None:
    """503 and no answer are retried after 0.1 s, 0.2 s, ...; then the 202 ends it quietly."""
    sink = Sink(503, None, 202)
    reports, fake = drive([source("* * * * *")], sink, utc(2025, 1, 1, 0, 0, 59), 0.1)
    assert len(sink.sent) == 3 and reports == []
    assert [e.id for _, e in sink.sent] == ["id-0"] * 3
    assert 0.1 in fake.waits and 0.2 in fake.waits


def test_send_gives_up_after_five_retries_and_reports() -> None:
    """An unreachable sink: six attempts (waits 0.1 .. 1.6 s), then one report naming it."""
    sink = Sink(*([None] * 10))
    reports, fake = drive([source("* * * * *")], sink, utc(2025, 1, 1, 0, 0, 59), 0.1)
    assert len(sink.sent) == 6
    assert [w for w in fake.waits if w in (0.1, 0.2, 0.4, 0.8, 1.6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert len(reports) == 1
    assert "PingSource default/heartbeat" in reports[0] and SINK in reports[0]
    assert "6 attempts" in reports[0] and "ConnectionRefusedError" in reports[0]


def test_send_does_not_retry_a_client_error() -> None:
    """A 400 is final: one attempt, one report with the status."""
    sink = Sink(400)
    reports, _ = drive([source("* * * * *")], sink, utc(2025, 1, 1, 0, 0, 59), 0.1)
    assert len(sink.sent) == 1
    assert len(reports) == 1 and "status 400" in reports[0] and "1 attempt:" in reports[0]


def test_source_that_never_fires_is_reported_once() -> None:
    """February 30th is accepted, as upstream does, and reported instead of fired."""
    sink = Sink()
    reports, _ = drive([source("0 0 30 2 *")], sink, utc(2025, 1, 1), 2)
    assert sink.sent == [] and len(reports) == 1 and "never fires" in reports[0]

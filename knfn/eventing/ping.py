"""PingSource (sources.knative.dev/v1): a cron schedule that sends one CloudEvent to a sink.

Pure cores (:func:`next_fire`, :func:`build_event`) and a thin scheduler (:func:`run`) with the
clock, the sleep and the event ids injected. What each rule follows (knative/eventing unless
named):

* Fields and defaults: ``pkg/apis/sources/v1/ping_types.go`` and ``ping_defaults.go`` (an empty
  ``schedule`` is ``* * * * *``).
* Validation: ``pkg/apis/sources/v1/ping_validation.go``. The schedule is parsed as the
  adapter parses it (:mod:`knfn.eventing.cron`); the ``timezone`` must be an IANA name.
  ``data`` and ``dataBase64`` exclude each other; ``dataBase64`` must be standard, padded
  base64; with ``contentType: application/json`` the data must be a JSON object.
  ``ceOverrides.extensions`` names are ASCII letters and digits (knative.dev/pkg
  ``apis/duck/v1/source_types.go``) and are lowercased, as the CloudEvents Go SDK does when it
  sets them.
* Stricter than upstream, so that a mistake cannot pass silently: unknown ``spec`` fields are
  refused (knfn/schema.py); a ``ceOverrides`` extension named like a context attribute
  (``type``, ``id``, ...) is refused instead of producing an event with two values for it;
  ``contentType``, when there is data, must be a media type (``type/subtype``), since an event
  with anything else is refused by every CloudEvents receiver.
* The schedule and when it fires: :mod:`knfn.eventing.cron` (robfig/cron v3, as
  ``pkg/adapter/mtping/runner.go`` runs it with ``CRON_TZ=<timezone>``). Without a
  ``timezone`` the adapter's own zone applies, which is UTC in its container, so UTC here.
* The event (``pkg/adapter/mtping/runner.go`` makeEvent and cronTick;
  ``pkg/apis/sources/v1/ping_lifecycle.go``): specversion 1.0, a fresh UUID as ``id``,
  ``source`` ``/apis/v1/namespaces/<namespace>/pingsources/<name>``, ``type``
  ``dev.knative.sources.ping``, ``time`` (upstream stamps the moment of sending, up to half
  a second of random spread after the tick; here the tick itself), the ceOverrides
  extensions, and the data with ``datacontenttype`` = ``contentType`` only when there is data
  and a content type. Sent in binary mode.
* Sending (``pkg/adapter/v2/cloudevents.go`` and the CloudEvents Go SDK's HTTP protocol): up
  to 5 retries with exponential backoff from 50 ms (waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s) on
  no response and on 404, 413, 425, 429, 502, 503 and 504; then the event is lost and the
  failure logged. A tick that was missed (the process was busy or asleep) is not replayed:
  the next fire is computed from now, as the cron runner does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from knfn.eventing import cloudevent, destinations
from knfn.eventing.cloudevent import Event
from knfn.eventing.cron import CronError, next_time, parse_schedule, zone_info
from knfn.eventing.destinations import Destination
from knfn.eventing.errors import DeliveryError
from knfn.eventing.sending import Sender
from knfn.manifests import Manifest, ManifestError, Manifests

EVENT_TYPE = "dev.knative.sources.ping"
DEFAULT_SCHEDULE = "* * * * *"
SEND_RETRIES = 5
SEND_BACKOFF = 0.05  # seconds; the wait before retry n is SEND_BACKOFF * 2**n
SEND_RETRYABLE = frozenset({404, 413, 425, 429, 502, 503, 504})
# The adapter sets no per-request timeout by default; a hung sink should not pile up sends.
SEND_TIMEOUT = 60.0

_CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"}
)
_EXTENSION_NAME = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*(;.*)?")


@dataclass(frozen=True)
class PingSource:
    """A PingSource, validated; ``sink_url`` is where its events go."""

    namespace: str
    name: str
    schedule: str
    timezone: str  # "" when not set: UTC
    content_type: str
    data: bytes | None
    sink: Destination
    sink_url: str
    ce_overrides: tuple[tuple[str, str], ...] = ()  # extensions, lowercased names

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def event_source(self) -> str:
        """The CloudEvents ``source`` of its events (ping_lifecycle.go PingSourceSource)."""
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


def next_fire(source: PingSource, after: datetime) -> datetime | None:
    """When the source fires next, strictly after ``after`` (in the source's zone).

    None when the schedule matches no moment in the next five years.
    """
    return next_time(parse_schedule(source.schedule or DEFAULT_SCHEDULE), source.timezone, after)


# -- the event -------------------------------------------------------------------------------


def build_event(source: PingSource, fire_time: datetime, event_id: str) -> Event:
    """The CloudEvent a source sends for the tick at ``fire_time``."""
    attributes = {
        "specversion": cloudevent.SPECVERSION,
        "id": event_id,
        "source": source.event_source,
        "type": EVENT_TYPE,
        "time": rfc3339(fire_time),
        **dict(source.ce_overrides),
    }
    if source.data is not None and source.content_type:
        attributes["datacontenttype"] = source.content_type
    return Event(attributes, source.data)


def rfc3339(moment: datetime) -> str:
    """A moment in UTC as Go's RFC3339Nano writes it: no fraction when it is whole."""
    if moment.tzinfo is None:
        raise ValueError("the moment must be timezone-aware")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


# -- the manifests ---------------------------------------------------------------------------


def load(m: Manifests) -> list[PingSource]:
    """Every PingSource of the manifests, validated; ManifestError names file, object, field."""
    return [_ping_source(m, obj) for obj in m.of_kind("PingSource")]


def _ping_source(m: Manifests, obj: Manifest) -> PingSource:
    name, namespace, fail = obj.name, obj.namespace, obj.error
    spec = obj.spec
    if not isinstance(spec, Mapping):
        raise fail("spec", "must be an object")
    # Unknown fields were refused when the manifests were read (knfn/schema.py).
    schedule = _string(spec, "schedule", fail) or DEFAULT_SCHEDULE
    timezone = _string(spec, "timezone", fail)
    content_type = _string(spec, "contentType", fail)
    text, encoded = _string(spec, "data", fail), _string(spec, "dataBase64", fail)

    try:
        cron = parse_schedule(schedule)
    except CronError as exc:
        raise fail("spec.schedule", str(exc)) from None
    if timezone:
        if cron.zone is not None:
            raise fail(
                "spec.schedule",
                f"sets a time zone and spec.timezone is set too ({timezone!r}); give one",
            )
        try:
            zone_info(timezone)
        except CronError as exc:
            raise fail("spec.timezone", str(exc)) from None

    data = _data(text, encoded, content_type, fail)

    if spec.get("sink") is None:
        raise fail("spec.sink", "is required")
    try:
        sink = destinations.parse_destination(spec["sink"], "spec.sink")
        sink_url = destinations.resolve(m, sink, namespace)
    except DeliveryError as exc:
        raise exc.at(obj) from None

    return PingSource(
        namespace, name, schedule, timezone, content_type, data, sink, sink_url,
        _ce_overrides(spec.get("ceOverrides"), fail),
    )  # fmt: skip


def _data(
    text: str, encoded: str, content_type: str, fail: Callable[[str, str], ManifestError]
) -> bytes | None:
    """The event data from spec.data or spec.dataBase64, checked as ping_validation.go does."""
    if text and encoded:
        raise fail("spec.data", "data and dataBase64 are mutually exclusive; give one")
    data: bytes | None = None
    if encoded:
        try:
            # Go's StdEncoding skips line breaks, and needs the padding.
            data = base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise fail("spec.dataBase64", f"not valid base64: {exc}") from None
    elif text:
        data = text.encode("utf-8")
    if data is not None and content_type == "application/json":
        problem = _json_object_problem(data)
        if problem:
            fld = "spec.dataBase64" if encoded else "spec.data"
            raise fail(fld, f"contentType is application/json but {problem}")
    if data and content_type and not _MEDIA_TYPE.fullmatch(content_type.strip()):
        raise fail("spec.contentType", f"{content_type!r} is not a media type such as text/plain")
    return data


def _string(spec: Mapping[str, Any], key: str, fail: Callable[[str, str], ManifestError]) -> str:
    value = spec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(f"spec.{key}", f"{value!r} must be a string (quote it in YAML)")
    return value


def _json_object_problem(data: bytes) -> str | None:
    """Why data is not what Go's json.Unmarshal into a map accepts (an object or null)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"the data is not JSON ({exc})"
    if value is not None and not isinstance(value, dict):
        return "the data is JSON but not an object"
    return None


def _ce_overrides(
    raw: Any, fail: Callable[[str, str], ManifestError]
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or any(key != "extensions" for key in raw):
        raise fail("spec.ceOverrides", "must be an object with only extensions")
    extensions = raw.get("extensions") or {}
    if not isinstance(extensions, Mapping):
        raise fail("spec.ceOverrides.extensions", "must be an object of names to strings")
    out: dict[str, str] = {}
    for key, value in extensions.items():
        where = f"spec.ceOverrides.extensions.{key}"
        if not isinstance(key, str) or not _EXTENSION_NAME.fullmatch(key):
            raise fail(where, "extension names are ASCII letters and digits only")
        if key.lower() in _CONTEXT_ATTRIBUTES or key.lower() == "data":
            raise fail(where, f"{key.lower()} is a CloudEvents context attribute, not an extension")
        if not isinstance(value, str):
            raise fail(where, f"{value!r} must be a string (quote it in YAML)")
        out[key.lower()] = value
    return tuple(sorted(out.items()))


# -- the scheduler ---------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


async def run(
    sources: Callable[[], Sequence[PingSource]],
    send: Sender,
    stop: asyncio.Event,
    *,
    report: Callable[[str], None],
    clock: Callable[[], datetime] = _now,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    new_id: Callable[[], str] = _new_id,
    poll: float = 1.0,
    drain: float = 5.0,
) -> None:
    """Fire every source at its schedule, sending its event to its sink, until ``stop`` is set.

    ``sources`` is asked again at least every ``poll`` seconds, so added, changed and removed
    PingSources take effect without a restart (a changed one is scheduled afresh from now).
    ``sleep`` defaults to waiting on ``stop``; tests pass one that advances a fake ``clock``.
    Failed sends are given to ``report``. On stop, sends in flight get ``drain`` seconds.
    """
    wait = sleep or _stoppable_sleep(stop)
    plan: dict[PingSource, datetime | None] = {}
    sending: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            now = clock()
            previous, plan = plan, {}
            for source in sources():
                if source in previous:
                    plan[source] = previous[source]
                    continue
                plan[source] = next_fire(source, now)
                if plan[source] is None:
                    report(f"PingSource {source.key}: schedule {source.schedule!r} never fires")
            for source, due in list(plan.items()):
                if due is not None and due <= now:
                    task = asyncio.create_task(_fire(source, due, send, wait, report, new_id()))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                    plan[source] = next_fire(source, now)
            upcoming = [due for due in plan.values() if due is not None]
            delay = poll
            if upcoming:
                delay = min(poll, max(0.0, (min(upcoming) - now).total_seconds()))
            await wait(delay)
    finally:
        # Let sends in flight finish for a moment, then cancel what is left.
        if sending:
            _, pending = await asyncio.wait(set(sending), timeout=drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _fire(
    source: PingSource,
    fire_time: datetime,
    send: Sender,
    sleep: Callable[[float], Awaitable[None]],
    report: Callable[[str], None],
    event_id: str,
) -> None:
    headers, body = cloudevent.to_binary(build_event(source, fire_time, event_id))
    attempts = 0
    while True:
        status, _, _, error = await send(source.sink_url, headers, body, SEND_TIMEOUT)
        attempts += 1
        if status is not None and 200 <= status < 300:
            return
        retryable = status is None or status in SEND_RETRYABLE
        if not retryable or attempts > SEND_RETRIES:
            break
        await sleep(SEND_BACKOFF * 2**attempts)
    outcome = f"status {status}" if status is not None else (error or "no response")
    report(
        f"PingSource {source.key}: event {event_id} to {source.sink_url} failed after "
        f"{attempts} attempt{'s' if attempts > 1 else ''}: {outcome}"
    )


def _stoppable_sleep(stop: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return sleep

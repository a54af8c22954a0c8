"""Send CloudEvents to K_SINK, the way a Knative SinkBinding or Source expects.

K_SINK (the broker's or any addressable's URL) and K_CE_OVERRIDES (`{"extensions": {...}}`)
are injected by the platform. Events go out in binary mode; each override extension is set on
the event first. Connection errors, timeouts, 5xx and 429 are retried EMIT_RETRIES times with
a short exponential backoff; any other answer is final. After the last attempt `EmitError`
(502) says what happened.

`requests` honours HTTP_PROXY/NO_PROXY from the environment; the local runtime relies on that
to route cluster URLs such as the broker's through its gateway.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import requests
from cloudevents.http import CloudEvent

from kit import binding, config, shutdown
from kit.errors import BadGateway
from kit.logging import get_logger

_EXTENSION_NAME = re.compile(r"^[a-z0-9]+$")
log = get_logger(__name__)


@dataclass(frozen=True)
class CeOverrides:
    """The parsed K_CE_OVERRIDES: extension attributes to set on every event sent."""

    extensions: Mapping[str, str] = field(default_factory=dict)


def ce_overrides(raw: str) -> CeOverrides:
    """Parse K_CE_OVERRIDES: `{"extensions": {"name": "value", ...}}`."""
    document = config.json_object(raw)
    unknown = sorted(set(document) - {"extensions"})
    if unknown:
        raise ValueError(f"unknown keys {unknown} (only 'extensions')")
    extensions = document.get("extensions", {})
    if not isinstance(extensions, dict):
        raise ValueError("'extensions' must be a JSON object")
    bad = sorted(name for name in extensions if not _EXTENSION_NAME.match(str(name)))
    if bad:
        raise ValueError(f"extension names {bad} must be lowercase letters and digits")
    return CeOverrides({str(k): binding.attribute_text(v) for k, v in extensions.items()})


@dataclass(frozen=True)
class SinkSettings:
    """Where events go and how hard to try."""

    sink: Annotated[str, config.env("K_SINK", config.http_url, doc="URL events are sent to")]
    overrides: Annotated[
        CeOverrides,
        config.env(
            "K_CE_OVERRIDES",
            ce_overrides,
            default=CeOverrides(),
            doc='JSON {"extensions": {...}} set on every event sent',
        ),
    ]
    retries: Annotated[
        int,
        config.env("EMIT_RETRIES", config.integer(min=0, max=10), default=3, doc="retries"),
    ]


class EmitError(BadGateway):
    """The sink did not accept the event (after retries, where retrying made sense)."""


def apply_overrides(event: CloudEvent, overrides: CeOverrides) -> CloudEvent:
    """Set every override extension on `event` (in place) and return it."""
    for name, value in overrides.extensions.items():
        event[name] = value
    return event


def is_retryable(status: int) -> bool:
    """Whether an HTTP answer is worth another try: 5xx and 429 are; other answers are final."""
    return status >= 500 or status == 429


def backoff_delays(retries: int, base: float) -> list[float]:
    """The wait before each retry: base, 2 x base, 4 x base, ..."""
    return [base * (2**n) for n in range(retries)]


class Emitter:
    """Posts CloudEvents to the sink in binary mode, with bounded retries."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        backoff: float = 0.2,
        timeout: tuple[float, float] = (2.0, 10.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        """The HTTP session (keeps connections to the sink alive), made on first use."""
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                shutdown.register("event sink session", self.close)
            return self._session

    def close(self) -> None:
        """Close pooled connections to the sink."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            shutdown.unregister(self.close)
            session.close()

    def emit(self, event: CloudEvent) -> int:
        """Send `event`; return the sink's status code. Raises `EmitError` if it never took it."""
        apply_overrides(event, self.settings.overrides)
        message = binding.to_binary(event)
        sink = self.settings.sink
        delays = backoff_delays(self.settings.retries, self.backoff)
        attempts = len(delays) + 1
        last = ""
        for attempt in range(1, attempts + 1):
            retryable, last, status = self._attempt(sink, message)
            if status is not None and 200 <= status < 300:
                log.info(
                    "event emitted",
                    ce_id=event["id"],
                    ce_type=event["type"],
                    sink=sink,
                    status=status,
                    attempt=attempt,
                )
                return status
            if not retryable or attempt == attempts:
                break
            log.warning("event emit failed, retrying", sink=sink, attempt=attempt, reason=last)
            self._sleep(delays[attempt - 1])
        raise EmitError(
            f"event {event['id']} was not accepted by {sink} after {attempt} attempt(s): {last}",
            sink=sink,
            event_id=event["id"],
            attempts=attempt,
        )

    def _attempt(self, sink: str, message: binding.HTTPMessage) -> tuple[bool, str, int | None]:
        """One POST: (worth retrying, what happened, status or None)."""
        try:
            answer = self.session.post(
                sink, data=message.body, headers=dict(message.headers), timeout=self.timeout
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            return True, f"{type(error).__name__}: {error}", None
        reason = f"HTTP {answer.status_code} {answer.text[:200]!r}"
        answer.close()
        return is_retryable(answer.status_code), reason, answer.status_code

"""kit.events: CloudEvents sent to a real HTTP sink on loopback, with overrides and retries."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cloudevents.http import CloudEvent
from kit import binding, config, events, shutdown
from kit.testing import RecordingSink, closed_port, recording_sink


@pytest.fixture(autouse=True)
def close_sessions() -> Iterator[None]:
    yield
    shutdown.close_all()


def emitter(sink_url: str, sleeps: list[float] | None = None, **env: str) -> events.Emitter:
    settings = config.load(events.SinkSettings, {"K_SINK": sink_url, **env})
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return events.Emitter(settings, backoff=0.01, sleep=record)


def stored_event() -> CloudEvent:
    return binding.new_event(
        type="dev.knfn.object.stored",
        source="/functions/ingest",
        subject="ab c.png",
        data={"key": "ab c.png", "size": 3},
        id="evt-1",
    )


def test_emit_posts_a_binary_cloudevent() -> None:
    """The sink receives ce-* headers (percent-encoded), JSON content type and JSON data."""
    with recording_sink() as sink:
        status = emitter(sink.url).emit(stored_event())
    assert status == 202
    [received] = sink.requests
    assert received.method == "POST"
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["ce-id"] == "evt-1"
    assert received.headers["ce-type"] == "dev.knfn.object.stored"
    assert received.headers["ce-subject"] == "ab%20c.png"
    assert received.headers["content-type"] == "application/json"
    event = received.event()
    assert event["subject"] == "ab c.png"
    assert event.get_data() == {"key": "ab c.png", "size": 3}


def test_k_ce_overrides_extensions_are_set_on_every_event() -> None:
    """Each extension of K_CE_OVERRIDES arrives as a ce-<name> header."""
    overrides = '{"extensions": {"team": "media", "priority": 2}}'
    with recording_sink() as sink:
        emitter(sink.url, K_CE_OVERRIDES=overrides).emit(stored_event())
    [received] = sink.requests
    assert received.headers["ce-team"] == "media"
    assert received.headers["ce-priority"] == "2"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retryable_answers_are_retried_with_backoff(status: int) -> None:
    """5xx and 429 are retried; the waits double; the event id stays the same."""
    sleeps: list[float] = []
    with recording_sink([status, status]) as sink:
        assert emitter(sink.url, sleeps).emit(stored_event()) == 202
    assert [r.headers["ce-id"] for r in sink.requests] == ["evt-1"] * 3
    assert sleeps == [0.01, 0.02]


def test_gives_up_after_the_configured_retries() -> None:
    """After EMIT_RETRIES retries the EmitError (502) names the sink and the last answer."""
    with recording_sink([503] * 10) as sink, pytest.raises(events.EmitError) as caught:
        emitter(sink.url, EMIT_RETRIES="2").emit(stored_event())
    assert len(sink.requests) == 3
    assert caught.value.status == 502
    assert sink.url in caught.value.message
    assert "HTTP 503" in caught.value.message
    assert caught.value.fields["attempts"] == 3


def test_other_client_errors_are_not_retried() -> None:
    """A 400 from the sink is final: one request, then EmitError."""
    with recording_sink([400]) as sink, pytest.raises(events.EmitError, match="HTTP 400"):
        emitter(sink.url).emit(stored_event())
    assert len(sink.requests) == 1


def test_unreachable_sink_fails_fast_after_retries() -> None:
    """Connection refused is retried, then reported as EmitError naming ConnectionError."""
    url = f"http://127.0.0.1:{closed_port()}/"
    started = time.monotonic()
    with pytest.raises(events.EmitError, match="ConnectionError") as caught:
        emitter(url).emit(stored_event())
    assert caught.value.fields["attempts"] == 4
    assert time.monotonic() - started < 5


def test_overrides_parser_rejects_bad_documents() -> None:
    """K_CE_OVERRIDES must be {"extensions": {lowercase-name: value}}."""
    with pytest.raises(ValueError, match="unknown keys"):
        events.ce_overrides('{"ext": {}}')
    with pytest.raises(ValueError, match="must be lowercase"):
        events.ce_overrides('{"extensions": {"Bad-Name": "x"}}')
    with pytest.raises(ValueError, match="must be a JSON object"):
        events.ce_overrides('{"extensions": []}')
    assert events.ce_overrides("{}").extensions == {}


def test_backoff_and_retry_rules_are_pure() -> None:
    """backoff_delays doubles from the base; only 5xx and 429 are retryable."""
    assert events.backoff_delays(3, 0.2) == [0.2, 0.4, 0.8]
    assert [s for s in (200, 400, 404, 429, 500, 503) if events.is_retryable(s)] == [429, 500, 503]


def test_session_is_closed_by_shutdown() -> None:
    """The HTTP session registers itself for shutdown and close() forgets it."""
    before = shutdown.registered().count("event sink session")
    with RecordingSink() as sink:
        sender = emitter(sink.url)
        sender.emit(stored_event())
        assert shutdown.registered().count("event sink session") == before + 1
        sender.close()
    assert shutdown.registered().count("event sink session") == before

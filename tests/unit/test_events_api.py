"""The events API's parsers, the admin API's same-origin rule for writes, replay's choice of
Triggers and the inspector's view of an event, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from knfn import manifests
from knfn.admin_api import cross_origin_refusal
from knfn.eventing import config as eventing_config
from knfn.eventing import replay
from knfn.eventing.history import DATA_SHOWN, StoredEvent, assemble, show_data
from knfn.eventing.replay import ReplayRefused
from knfn.events_api import BadRequest, parse_limit, parse_number, parse_replay

HOST = "127.0.0.1:8081"
JSON = "application/json"


def test_limit_defaults_to_100_and_takes_1_to_10000() -> None:
    """No limit is 100; 1 and 10000 pass; 0, 10001, signs, words and non-ASCII digits do not."""
    assert parse_limit(None) == 100
    assert parse_limit("1") == 1 and parse_limit("10000") == 10_000
    for raw in ("0", "10001", "-1", "+5", "ten", "", "٣", "1.5"):
        with pytest.raises(BadRequest, match="limit"):
            parse_limit(raw)


def test_event_number_is_a_positive_bigint() -> None:
    """An event number is 1..2**63-1 in plain ASCII digits; the message names the value."""
    assert parse_number("42") == 42
    assert parse_number(str(2**63 - 1)) == 2**63 - 1
    for raw in ("0", str(2**63), "abc", "-3", "٣", "dash-1"):
        with pytest.raises(BadRequest, match=repr(raw).replace("\\", "\\\\")):
            parse_number(raw)


def test_replay_body_is_an_object_with_an_optional_trigger() -> None:
    """Empty or {} replays to every Trigger; {"trigger": NAME} to one; anything else is 400."""
    assert parse_replay(b"") is None
    assert parse_replay(b"  {}  ") is None
    assert parse_replay(b'{"trigger": null}') is None
    assert parse_replay(b'{"trigger": "event-display-all"}') == "event-display-all"
    refused = {
        b"[]": "JSON object",
        b"not json": "not JSON",
        b"\xff": "not JSON",
        b'{"trigger": 3}': "non-empty string",
        b'{"trigger": ""}': "non-empty string",
        b'{"trigger": "a", "broker": "b"}': "unknown field",
    }
    for body, message in refused.items():
        with pytest.raises(BadRequest, match=message):
            parse_replay(body)


def test_writes_from_the_own_origin_or_no_page_pass() -> None:
    """A POST with no Origin (curl) or the admin API's own origin, as JSON, may go on; so may
    any GET, whatever its origin."""
    assert cross_origin_refusal("POST", HOST, None, None, JSON) is None
    assert cross_origin_refusal("POST", HOST, f"http://{HOST}", "same-origin", JSON) is None
    assert cross_origin_refusal("POST", "LocalHost:8081", "http://localhost:8081", None,
                                "application/json; charset=utf-8") is None  # fmt: skip
    assert cross_origin_refusal("POST", HOST, None, "none", JSON) is None
    assert cross_origin_refusal("GET", HOST, "http://evil.example", "cross-site", "") is None


def test_writes_from_elsewhere_are_refused_saying_why() -> None:
    """Another origin (another site, another loopback name or port, https, null), a
    cross-site fetch, or a body not declared JSON: each refused with its reason."""
    cases = {
        ("http://evil.example", None, JSON): "origin 'http://evil.example'",
        ("http://localhost:8081", None, JSON): "origin",
        ("http://127.0.0.1:9999", None, JSON): "origin",
        ("https://127.0.0.1:8081", None, JSON): "origin",
        ("null", None, JSON): "origin 'null'",
        (None, "cross-site", JSON): "cross-site",
        (None, "same-site", JSON): "same-site",
        (f"http://{HOST}", None, "text/plain"): "application/json",
        (None, None, "application/x-www-form-urlencoded"): "application/json",
        (None, None, ""): "nothing",
    }
    for (origin, site, kind), reason in cases.items():
        why = cross_origin_refusal("POST", HOST, origin, site, kind)
        assert why is not None and reason in why, (origin, site, kind, why)
    assert cross_origin_refusal("DELETE", HOST, "http://evil.example", None, JSON)


EVENTING = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: all, namespace: default}
spec: {broker: default, subscriber: {uri: 'http://all.test/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: stored, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: object.stored}}
  subscriber: {uri: 'http://stored.test/'}
"""


@pytest.fixture
def config(tmp_path: Path) -> eventing_config.EventingConfig:
    (tmp_path / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (tmp_path / "objects.yaml").write_text(EVENTING)
    return eventing_config.load(manifests.load(tmp_path))


def event(type_: str, broker: str = "default") -> StoredEvent:
    attributes = {"specversion": "1.0", "id": "e1", "source": "/t", "type": type_}
    return StoredEvent(7, "default", broker, attributes, b"{}")


def test_replay_goes_to_every_trigger_whose_filter_passes(
    config: eventing_config.EventingConfig,
) -> None:
    """Without a Trigger named, a replay fans out as the ingress does, filters applied now."""
    assert [d.trigger for d in replay.targets(config, event("object.stored"))] == ["all", "stored"]
    assert [d.trigger for d in replay.targets(config, event("other"))] == ["all"]


def test_replay_to_one_trigger_only_if_it_would_take_the_event(
    config: eventing_config.EventingConfig,
) -> None:
    """A named Trigger must be the broker's and pass the event; a gone broker is refused."""
    chosen = replay.targets(config, event("object.stored"), "stored")
    assert [(d.trigger, d.destination) for d in chosen] == [("stored", "http://stored.test/")]
    with pytest.raises(ReplayRefused, match="filter of trigger 'stored'"):
        replay.targets(config, event("other"), "stored")
    with pytest.raises(ReplayRefused, match=r"'nope' is not a Trigger.*\['all', 'stored'\]"):
        replay.targets(config, event("other"), "nope")
    with pytest.raises(ReplayRefused, match="broker default/gone no longer exists"):
        replay.targets(config, event("other", broker="gone"), None)


def test_inspector_view_nests_attempts_under_their_delivery() -> None:
    """Attempts go under their delivery as attempt_log, in order; counts stay; times are ISO;
    a dead-letter delivery marks the event dead-lettered."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ev = (9, "default", "default", {"id": "x", "type": "t", "source": "/s"}, b'{"a": 1}', at)
    deliveries = [
        (1, "thumb", "subscriber", "http://t/", 0, "dead", 2, 502, "bad", None, at, at, {}),
        (2, "thumb", "dead-letter", "http://d/", 0, "delivered", 1, 200, None, 5.0, at, at,
         {"knativeerrorcode": "502"}),
    ]  # fmt: skip
    attempts = [
        (1, 1, "pending", 502, "bad", at, 3.5),
        (2, 1, "delivered", 200, None, at, 1.0),
        (1, 2, "dead", 502, "bad", at, 4.0),
    ]
    view = assemble(ev, deliveries, attempts)
    assert view["event"] == 9 and view["event_id"] == "x" and view["dead_lettered"]
    assert view["data"] == '{"a": 1}' and view["accepted_at"] == at.isoformat()
    first, dead = view["deliveries"]
    assert first["attempts"] == 2
    assert [(a["attempt"], a["outcome"]) for a in first["attempt_log"]] == [
        (1, "pending"), (2, "dead")]  # fmt: skip
    assert dead["kind"] == "dead-letter" and len(dead["attempt_log"]) == 1
    assert dead["extensions"] == {"knativeerrorcode": "502"}


def test_event_data_shown_as_text_or_base64_and_cut() -> None:
    """UTF-8 data is text, other bytes base64, and data past the limit is cut and flagged."""
    assert show_data(None)["data"] is None
    assert show_data("héllo".encode())["data"] == "héllo"
    binary = show_data(b"\xff\x00")
    assert binary["data_encoding"] == "base64" and binary["data"] == "/wA="
    big = show_data(b"a" * (DATA_SHOWN + 10))
    assert big["data_truncated"] and big["data_bytes"] == DATA_SHOWN + 10
    assert len(big["data"]) == DATA_SHOWN

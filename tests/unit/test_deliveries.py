"""knfn events: which deliveries are printed when, and how a line reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from knfn.deliveries import FOLLOW_WINDOW, Changes, header, line, run


def delivery(event_id: str, state: str = "pending", **more: Any) -> dict[str, Any]:
    row = {
        "event_id": event_id, "type": "demo", "source": "/t", "namespace": "default",
        "trigger": "event-display-all", "kind": "trigger", "destination": "http://x",
        "attempts": 0, "last_status": None, "last_error": None, "latency_ms": None,
        "state": state, "accepted_at": "2026-12-02T03:01:02.123456+00:00",
    }  # fmt: skip
    row.update(more)
    return row


def test_a_line_has_time_id_type_trigger_state_status_attempts_latency() -> None:
    """Every column, in order; missing values are a dash."""
    got = line(delivery("e-1", "delivered", attempts=1, last_status=204, latency_ms=12.4))
    assert got.split() == [
        "2026-12-02", "03:01:02.123", "e-1", "demo", "event-display-all", "delivered", "204", "1",
        "12ms",
    ]  # fmt: skip
    assert line(delivery("e-2")).split()[-3:] == ["-", "0", "-"]
    assert header().split()[0] == "TIME"


def test_columns_stay_under_their_headers_with_a_uuid_event_id() -> None:
    """An event id as long as a UUID leaves every later column where its header is."""
    row = delivery(str(uuid.uuid4()), "delivered", attempts=1, last_status=204, latency_ms=5)
    got, head = line(row), header()
    for column, value in (
        ("TYPE", "demo"),
        ("TRIGGER", "event-display-all"),
        ("STATE", "delivered"),
    ):
        assert got.index(f" {value} ") + 1 == head.index(column)


def test_a_delivery_is_printed_when_new_and_again_when_it_moves_on() -> None:
    """New rows, then only the rows whose state, attempts or status changed, oldest first."""
    changes = Changes()
    first = [delivery("b"), delivery("a")]  # newest first, as /events answers
    assert [r["event_id"] for r in changes.update(first)] == ["a", "b"]
    assert changes.update(first) == []
    moved = [delivery("c"), delivery("b", "delivered", attempts=1, last_status=200),
             delivery("a")]  # fmt: skip
    assert [(r["event_id"], r["state"]) for r in changes.update(moved)] == [
        ("b", "delivered"), ("c", "pending"),
    ]  # fmt: skip


def test_two_triggers_of_one_event_are_two_deliveries() -> None:
    """The same event to two Triggers gives two lines."""
    rows = [delivery("a", trigger="one"), delivery("a", trigger="two")]
    assert len(Changes().update(rows)) == 2


def test_run_prints_the_latest_then_follows_without_repeating_older_rows() -> None:
    """Following: the first look prints only the latest `limit`, although the whole window is
    read, and each later look prints what changed."""
    looks: list[Sequence[dict[str, Any]]] = [
        [delivery(f"e-{i}") for i in range(9, -1, -1)],
        [delivery("e-10"), *[delivery(f"e-{i}") for i in range(9, -1, -1)]],
    ]
    asked: list[int] = []

    def read(limit: int) -> Sequence[dict[str, Any]]:
        asked.append(limit)
        return looks[min(len(asked), len(looks)) - 1]

    out: list[str] = []
    run(read, out.append, limit=3, follow=True, stop=lambda: len(asked) >= 2, sleep=lambda _: None)
    assert asked == [FOLLOW_WINDOW, FOLLOW_WINDOW]
    assert [ln.split()[2] for ln in out[1:]] == ["e-7", "e-8", "e-9", "e-10"]


def test_run_without_follow_reads_once() -> None:
    out: list[str] = []
    run(lambda n: [delivery("x")][:n], out.append, limit=5, follow=False)
    assert len(out) == 2 and "x" in out[1]

"""The log files knfn dev keeps and knfn logs reads: layout, rotation, tail, follow, and what
the printer sends to the terminal and to the files."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from knfn.logfiles import (
    LogFiles,
    LogsError,
    Record,
    ServiceLog,
    format_record,
    rotated,
    service_path,
    services_with_logs,
    show,
    timestamp,
)
from knfn.logs import Printer, PrintFilter, expand_traceback

T0 = 1_800_000_000.0


def files(root: Path, **kw: object) -> LogFiles:
    """LogFiles on a fixed clock, flushed by the test (no thread)."""
    return LogFiles(root, clock=lambda: T0, flush_interval=None, **kw)  # type: ignore[arg-type]


# ---- writing ----------------------------------------------------------------------------------


def test_lines_go_to_their_services_file_and_knfns_own_to_knfn_log(tmp_path: Path) -> None:
    """Replica and template lines land in the Service's file, knfn's in knfn.log, one record a
    line with its UTC time and prefix."""
    logs = files(tmp_path)
    logs.write("hello/hello-00001/1", "hi")
    logs.write("hello/hello-00001/template", "imported")
    logs.write("knfn", "ready")
    logs.close()
    assert service_path(tmp_path, "hello").read_text().splitlines() == [
        "2027-01-15T08:00:00.000Z hello/hello-00001/1 | hi",
        "2027-01-15T08:00:00.000Z hello/hello-00001/template | imported",
    ]
    assert (tmp_path / "knfn.log").read_text() == "2027-01-15T08:00:00.000Z knfn | ready\n"
    assert services_with_logs(tmp_path) == ["hello"]


def test_writes_are_buffered_until_flushed(tmp_path: Path) -> None:
    """A line waits in the buffer (no system call per line) until the flush."""
    logs = files(tmp_path)
    logs.write("hello/hello-00001/1", "hi")
    assert service_path(tmp_path, "hello").read_bytes() == b""
    logs.flush()
    assert service_path(tmp_path, "hello").read_text().endswith("| hi\n")
    logs.close()


def test_the_flusher_thread_writes_a_quiet_line_out(tmp_path: Path) -> None:
    """With nothing else written, the background flush still makes a line readable."""
    logs = LogFiles(tmp_path, flush_interval=0.01)
    logs.write("hello/hello-00001/1", "alone")
    path = service_path(tmp_path, "hello")
    try:
        for _ in range(500):
            if path.read_bytes():
                break
            time.sleep(0.01)
        assert path.read_text().endswith("| alone\n")
    finally:
        logs.close()


def test_a_file_past_its_size_is_rotated_keeping_one_old_file(tmp_path: Path) -> None:
    """Past max_bytes the file becomes .log.1 (replacing an older one) and a new one starts;
    no line is split between the two."""
    logs = files(tmp_path, max_bytes=200)
    for i in range(12):  # 12 lines of ~50 bytes: two rotations
        logs.write("hello/hello-00001/1", f"line {i:02d}")
    logs.close()
    path = service_path(tmp_path, "hello")
    kept = rotated(path).read_text().splitlines() + path.read_text().splitlines()
    assert all(len(f.read_bytes()) <= 200 for f in (path, rotated(path)))
    texts = [ln.split(" | ", 1)[1] for ln in kept]
    assert 0 < len(texts) < 12  # the oldest file is gone
    assert texts == [f"line {i:02d}" for i in range(12 - len(texts), 12)]


# ---- reading ----------------------------------------------------------------------------------


def write_lines(root: Path, lines: list[tuple[str, str]], max_bytes: int = 1 << 20) -> None:
    logs = files(root, max_bytes=max_bytes)
    for prefix, text in lines:
        logs.write(prefix, text)
    logs.close()


def test_tail_gives_the_last_lines_across_the_rotated_file(tmp_path: Path) -> None:
    """The last n records, oldest first, reading into .log.1 when the new file is short."""
    write_lines(tmp_path, [("hello/hello-00001/1", f"n{i}") for i in range(8)], max_bytes=200)
    assert rotated(service_path(tmp_path, "hello")).exists()
    log = ServiceLog(tmp_path, "hello")
    assert [r.text for r in log.tail(5)] == ["n3", "n4", "n5", "n6", "n7"]
    log.close()


def test_tail_filters_by_revision(tmp_path: Path) -> None:
    """--revision keeps one revision's replicas and template."""
    write_lines(tmp_path, [
        ("hello/hello-00001/1", "old"), ("hello/hello-00002/1", "new"),
        ("hello/hello-00002/template", "tpl"), ("hello/hello-00001/2", "old2"),
    ])  # fmt: skip
    log = ServiceLog(tmp_path, "hello", revision="hello-00002")
    assert [r.text for r in log.tail(None)] == ["new", "tpl"]
    log.close()


def test_tail_zero_shows_nothing_and_follow_starts_at_the_end(tmp_path: Path) -> None:
    """-n 0 -f: only what is written from now on."""
    write_lines(tmp_path, [("hello/hello-00001/1", "before")])
    log = ServiceLog(tmp_path, "hello")
    assert log.tail(0) == []
    write_lines(tmp_path, [("hello/hello-00001/1", "after")])
    got = next(log.follow(sleep=lambda _: None))
    assert got.text == "after"
    log.close()


def test_follow_waits_for_a_whole_line(tmp_path: Path) -> None:
    """A line written in two pieces is given once, whole."""
    path = service_path(tmp_path, "hello")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    log = ServiceLog(tmp_path, "hello")
    log.tail(None)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        with open(path, "ab") as fh:
            fh.write(b"2027-01-15T08:00:00.000Z hello/h-1/1 | par" if len(sleeps) == 1 else b"t\n")

    got = next(log.follow(sleep=sleep))
    assert got == Record("2027-01-15T08:00:00.000Z", "hello/h-1/1", "part")
    log.close()


def test_follow_reads_a_rotated_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    """Lines written just before a rotation are not lost, and the new file is read from its
    start (tail -F)."""
    logs = files(tmp_path, max_bytes=120)
    logs.write("hello/hello-00001/1", "first")
    logs.flush()
    log = ServiceLog(tmp_path, "hello")
    assert [r.text for r in log.tail(None)] == ["first"]
    for text in ("second", "third", "fourth"):  # ~50 bytes each: rotates
        logs.write("hello/hello-00001/1", text)
    logs.close()
    assert rotated(service_path(tmp_path, "hello")).exists()
    seen: list[str] = []
    for record in log.follow(lambda: len(seen) == 3, sleep=lambda _: None):
        seen.append(record.text)
    assert seen == ["second", "third", "fourth"]
    log.close()


def test_show_names_the_missing_log_and_the_ones_that_exist(tmp_path: Path) -> None:
    """knfn logs for a Service without a log says where it looked and which Services have one."""
    write_lines(tmp_path, [("hello/hello-00001/1", "hi")])
    with pytest.raises(LogsError, match=r"'helo' at .*helo\.log; Services with logs: hello"):
        show(tmp_path, "helo", print)


def test_show_prints_prefix_and_text_and_times_when_asked(tmp_path: Path) -> None:
    """Lines print as the terminal shows them; --timestamps puts the time first."""
    write_lines(tmp_path, [("hello/hello-00001/1", "a"), ("hello/hello-00001/1", "b")])
    out: list[str] = []
    show(tmp_path, "hello", out.append, lines=1)
    show(tmp_path, "hello", out.append, lines=1, timestamps=True)
    assert out == ["hello/hello-00001/1 | b", "2027-01-15T08:00:00.000Z hello/hello-00001/1 | b"]


def test_a_line_not_in_the_format_is_kept_whole() -> None:
    """A stray line (a message with a newline in it) parses as text without a prefix."""
    assert Record.parse('  File "x.py", line 3') == Record("", "", '  File "x.py", line 3')
    assert format_record(Record("", "", "raw")) == ["raw"]


def test_timestamp_is_utc_with_milliseconds() -> None:
    assert timestamp(T0 + 0.0429) == "2027-01-15T08:00:00.042Z"


# ---- tracebacks and the printer ---------------------------------------------------------------

TRACE = 'Traceback (most recent call last):\n  File "main.py", line 9, in f\nValueError: bad\n'
LINE = json.dumps({"event": "failed", "level": "error", "exception": TRACE})


def test_a_traceback_field_becomes_indented_lines() -> None:
    """structlog's exception field, one JSON line with \\n inside, reads as a traceback."""
    assert expand_traceback(LINE) == [
        '{"event": "failed", "level": "error"}',
        "    Traceback (most recent call last):",
        '      File "main.py", line 9, in f',
        "    ValueError: bad",
    ]


@pytest.mark.parametrize(
    "text",
    ['{"event": "ok"}', "plain text with \\n in it", '{"exception": "one line"}', "{not json\\n",
     '["a\\nb"]'],
)  # fmt: skip
def test_other_lines_stay_as_they_are(text: str) -> None:
    assert expand_traceback(text) == [text]


def test_printer_expands_tracebacks_on_a_terminal_only(tmp_path: Path) -> None:
    """On a TTY the traceback is lines under the same prefix; piped, and in the file, the raw
    line."""
    logs = files(tmp_path)
    tty, pipe = io.StringIO(), io.StringIO()
    Printer(tty, files=logs, tty=True).line("hello/hello-00001/1", LINE)
    Printer(pipe, tty=False).line("hello/hello-00001/1", LINE)
    logs.close()
    assert tty.getvalue().splitlines()[1:] == [
        "hello/hello-00001/1 |     Traceback (most recent call last):",
        'hello/hello-00001/1 |       File "main.py", line 9, in f',
        "hello/hello-00001/1 |     ValueError: bad",
    ]
    assert pipe.getvalue() == f"hello/hello-00001/1 | {LINE}\n"
    assert service_path(tmp_path, "hello").read_text().endswith(f" | {LINE}\n")


def test_printer_prints_the_chosen_services_and_files_every_line(tmp_path: Path) -> None:
    """The default prints knfn's and event-display's lines, not hello's; all three are filed."""
    logs, out = files(tmp_path), io.StringIO()
    printer = Printer(out, files=logs, shows=PrintFilter.parse("event-display"), tty=False)
    printer.line("knfn", "ready")
    printer.line("hello/hello-00001/1", "GET /")
    printer.line("event-display/event-display-00001/1", "{}")
    logs.close()
    printed = out.getvalue()
    assert "ready" in printed and "event-display-00001/1" in printed and "GET /" not in printed
    assert "GET /" in service_path(tmp_path, "hello").read_text()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("all", {"knfn", "hello", "event-display"}),
        ("none", {"knfn"}),
        ("hello", {"knfn", "hello"}),
        (" hello , event-display ", {"knfn", "hello", "event-display"}),
    ],
)
def test_print_filter(value: str, shown: set[str]) -> None:
    """all, none or a list; knfn's own lines always print."""
    f = PrintFilter.parse(value)
    prefixes = {"knfn": "knfn", "hello": "hello/h-1/1", "event-display": "event-display/e-1/2"}
    assert {name for name, prefix in prefixes.items() if f.shows(prefix)} == shown


def test_print_filter_refuses_all_inside_a_list() -> None:
    with pytest.raises(ValueError, match="stand alone"):
        PrintFilter.parse("hello,all")

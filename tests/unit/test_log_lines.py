"""Cutting a child's output into printable lines: any length passes, memory stays bounded."""

from __future__ import annotations

import io
import json

from knfn.logs import PARTIAL_MARKER, LineSplitter, LogLine, Printer


def pieces(splitter: LineSplitter, *chunks: bytes) -> list[LogLine]:
    out: list[LogLine] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.flush()


def test_short_lines_pass_unchanged_across_chunks() -> None:
    """Lines split over several reads come out whole, without their newline."""
    got = pieces(LineSplitter(limit=16), b"ab", b"c\nde", b"f\n\n")
    assert got == [LogLine("abc"), LogLine("def"), LogLine("")]


def test_json_line_at_the_limit_is_one_line() -> None:
    """A line of exactly limit bytes is not cut."""
    line = json.dumps({"k": "v" * 100}).encode()
    got = pieces(LineSplitter(limit=len(line)), line + b"\n")
    assert got == [LogLine(line.decode())]


def test_long_line_is_cut_into_marked_pieces_that_join_back() -> None:
    """A line over the limit comes in limit-sized pieces, all but the last partial."""
    line = bytes(range(48, 58)) * 25  # 250 bytes of digits
    got = pieces(LineSplitter(limit=64), line[:100], line[100:] + b"\nnext\n")
    assert [len(p.text) for p in got] == [64, 64, 64, 58, 4]
    assert [p.partial for p in got] == [True, True, True, False, False]
    assert "".join(p.text for p in got[:4]) == line.decode()
    assert got[4] == LogLine("next")


def test_line_without_newline_is_cut_while_it_grows_and_flushed_at_the_end() -> None:
    """A megabyte with no newline never sits whole in the buffer; the tail comes at flush."""
    splitter = LineSplitter(limit=1024)
    emitted = 0
    for _ in range(1024):
        emitted += sum(len(p.text) for p in splitter.feed(b"x" * 1024))
        assert len(splitter._pending) <= 1024
    tail = splitter.flush()
    assert emitted + sum(len(p.text) for p in tail) == 1024 * 1024
    assert tail == [LogLine("x" * 1024)]


def test_pieces_never_split_a_utf8_character() -> None:
    """Cuts move back to a character boundary, so no piece holds a replacement character."""
    line = ("é" * 100).encode()  # two bytes each
    got = pieces(LineSplitter(limit=33), line + b"\n")
    assert "".join(p.text for p in got) == "é" * 100
    assert all("\ufffd" not in p.text and len(p.text.encode()) <= 33 for p in got)


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """Bytes that are not UTF-8 are printed as replacement characters."""
    assert pieces(LineSplitter(), b"a\xffb\n") == [LogLine("a\ufffdb")]


def test_printer_marks_partial_pieces_and_keeps_the_prefix() -> None:
    """A partial piece ends with the marker; a full line is printed as it was."""
    out = io.StringIO()
    printer = Printer(out)
    printer.piece("svc/rev/1", LogLine('{"a": 1}'))
    printer.piece("svc/rev/1", LogLine("xx", partial=True))
    assert out.getvalue().splitlines() == [
        'svc/rev/1 | {"a": 1}',
        f"svc/rev/1 | xx{PARTIAL_MARKER}",
    ]


def test_printer_outlives_a_reader_that_went_away() -> None:
    """A closed pipe on stdout (the reader was killed) does not stop the caller."""
    import os

    from knfn.logs import Printer

    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    printer = Printer(out)
    printer.line("knfn", "before")
    os.close(read_end)
    printer.line("knfn", "after the reader is gone")
    printer.line("knfn", "and again")

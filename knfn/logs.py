"""One printer for every child's output: ``service/revision/replica | line``, lines unchanged.

Every line goes to the log files (knfn/logfiles.py) when the printer has them; the terminal
gets knfn's own lines and those of the Services chosen with ``knfn dev --print``
(:class:`PrintFilter`). On a terminal, a JSON line whose ``exception`` (or ``stack``) field holds
a multi-line traceback, as structlog logs one, is shown with the traceback as real, indented
lines (:func:`expand_traceback`); the files keep the raw line.

Child output arrives as bytes of any length. :class:`LineSplitter` cuts it into lines with a
bounded buffer: a line longer than :data:`MAX_LINE_BYTES` is passed on in pieces, every piece
but the last marked as partial. The pieces are printed, never dropped: event-display's job is to
log whole events, and a reader can join the pieces again (the marker says where). This is what a
node does for a pod's logs: containerd's CRI plugin cuts lines at 16 KiB
(``MaxContainerLogLineSize: 16 * 1024`` in its default config) and tags each piece P (partial)
or F (full). Truncating instead would lose the part of the line that usually matters, the data.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

# As containerd's default max_container_log_line_size: lines up to it pass unchanged.
MAX_LINE_BYTES = 16 * 1024
# Printed after a piece of a line that goes on in the next printed line.
PARTIAL_MARKER = " [line continues]"
# Fields of a JSON log line that hold a traceback (structlog's format_exc_info and
# StackInfoRenderer put them there).
TRACEBACK_FIELDS = ("exception", "stack")
TRACEBACK_INDENT = "    "
# What `knfn dev` prints of the Services' lines unless told otherwise: the debugging sink the
# pipeline's README points at.
DEFAULT_PRINT = "event-display"


@dataclass(frozen=True)
class LogLine:
    """One printable piece of a child's output; ``partial`` when the line goes on after it."""

    text: str
    partial: bool = False


@dataclass
class LineSplitter:
    """Cuts a byte stream into :class:`LogLine` pieces of at most ``limit`` bytes each.

    Memory stays bounded by ``limit`` plus one fed chunk, whatever the child writes.
    """

    limit: int = MAX_LINE_BYTES
    _pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[LogLine]:
        """The complete lines and full-size pieces that data (after earlier data) yields."""
        self._pending += data
        out: list[LogLine] = []
        start = 0
        while True:
            end = self._pending.find(b"\n", start, start + self.limit + 1)
            if end >= 0:
                out.append(LogLine(_decode(self._pending[start:end])))
                start = end + 1
            elif len(self._pending) - start > self.limit:
                cut = _char_boundary(self._pending, start, start + self.limit)
                out.append(LogLine(_decode(self._pending[start:cut]), partial=True))
                start = cut
            else:
                break
        del self._pending[:start]
        return out

    def flush(self) -> list[LogLine]:
        """At end of output: what is left of a last line without a newline."""
        if not self._pending:
            return []
        rest, self._pending = bytes(self._pending), bytearray()
        return [LogLine(_decode(rest))]


def _char_boundary(buf: bytearray, start: int, cut: int) -> int:
    """cut, moved back (at most 3 bytes) so that it does not split a UTF-8 character."""
    for back in range(4):
        pos = cut - back
        if pos <= start:
            break
        if buf[pos] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return pos
    return cut


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", "replace")


def expand_traceback(text: str) -> list[str]:
    """text as terminal lines: a JSON object with a multi-line traceback field becomes the
    object without it, then the traceback's lines indented; anything else stays one line."""
    if not text.startswith("{") or "\\n" not in text:
        return [text]
    try:
        record = json.loads(text)
    except ValueError:
        return [text]
    if not isinstance(record, dict):
        return [text]
    found = [k for k in TRACEBACK_FIELDS if isinstance(record.get(k), str) and "\n" in record[k]]
    if not found:
        return [text]
    tracebacks = [record.pop(k) for k in found]
    lines = [json.dumps(record, ensure_ascii=False)]
    for trace in tracebacks:
        lines.extend(TRACEBACK_INDENT + ln for ln in trace.rstrip("\n").split("\n"))
    return lines


@dataclass(frozen=True)
class PrintFilter:
    """Which Services' lines reach the terminal; knfn's own always do. ``services`` None: all."""

    services: frozenset[str] | None

    @classmethod
    def parse(cls, value: str) -> PrintFilter:
        """``all``, ``none``, or a comma-separated list of Service names."""
        names = [n.strip() for n in value.split(",") if n.strip()]
        if names == ["all"]:
            return cls(None)
        if names == ["none"] or not names:
            return cls(frozenset())
        if "all" in names or "none" in names:
            raise ValueError(f"{value!r}: 'all' and 'none' stand alone, not in a list")
        return cls(frozenset(names))

    def shows(self, prefix: str) -> bool:
        if self.services is None or prefix == "knfn":
            return True
        return prefix.split("/", 1)[0] in self.services

    def describe(self) -> str:
        if self.services is None:
            return "every Service's lines"
        if not self.services:
            return "no Service's lines"
        return "the lines of " + ", ".join(sorted(self.services))


PRINT_ALL = PrintFilter(None)


class LogSink(Protocol):
    """Where every line is kept: knfn.logfiles.LogFiles."""

    def write(self, prefix: str, text: str) -> None: ...


class Printer:
    """Writes prefixed lines; pads prefixes to the widest seen so columns line up.

    Every line goes to ``files``; the ones ``shows`` lets through go to ``out`` too, with
    tracebacks expanded when ``out`` is a terminal (``tty`` None: ask it).
    """

    def __init__(
        self,
        out: TextIO = sys.stdout,
        *,
        files: LogSink | None = None,
        shows: PrintFilter = PRINT_ALL,
        tty: bool | None = None,
    ) -> None:
        self._out = out
        self._width = 0
        self._files = files
        self._shows = shows
        self._tty = out.isatty() if tty is None else tty

    def line(self, prefix: str, text: str) -> None:
        if self._files is not None:
            self._files.write(prefix, text)
        if not self._shows.shows(prefix):
            return
        self._width = max(self._width, len(prefix))
        lines: Iterable[str] = expand_traceback(text) if self._tty else (text,)
        try:
            self._out.write("".join(f"{prefix:<{self._width}} | {ln}\n" for ln in lines))
            self._out.flush()
        except (BrokenPipeError, ValueError):
            # The reader is gone (`knfn dev | tee`, then Ctrl-C kills tee first): printing
            # stops, and the shutdown it would have narrated still runs to the end.
            self._out = open(os.devnull, "w")  # noqa: SIM115

    def piece(self, prefix: str, piece: LogLine) -> None:
        """A piece of a child's output; a partial one carries the marker."""
        self.line(prefix, piece.text + PARTIAL_MARKER if piece.partial else piece.text)

"""One printer for every child's output: ``service/revision/replica | line``, lines unchanged.

Child output arrives as bytes of any length. :class:`LineSplitter` cuts it into lines with a
bounded buffer: a line longer than :data:`MAX_LINE_BYTES` is passed on in pieces, every piece
but the last marked as partial. The pieces are printed, never dropped: event-display's job is to
log whole events, and a reader can join the pieces again (the marker says where). This is what a
node does for a pod's logs: containerd's CRI plugin cuts lines at 16 KiB
(``MaxContainerLogLineSize: 16 * 1024`` in its default config) and tags each piece P (partial)
or F (full). Truncating instead would lose the part of the line that usually matters, the data.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

# As containerd's default max_container_log_line_size: lines up to it pass unchanged.
MAX_LINE_BYTES = 16 * 1024
# Printed after a piece of a line that goes on in the next printed line.
PARTIAL_MARKER = " [line continues]"


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


class Printer:
    """Writes prefixed lines; pads prefixes to the widest seen so columns line up."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._width = 0

    def line(self, prefix: str, text: str) -> None:
        self._width = max(self._width, len(prefix))
        try:
            self._out.write(f"{prefix:<{self._width}} | {text}\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):
            # The reader is gone (`knfn dev | tee`, then Ctrl-C kills tee first): printing
            # stops, and the shutdown it would have narrated still runs to the end.
            self._out = open(os.devnull, "w")  # noqa: SIM115

    def piece(self, prefix: str, piece: LogLine) -> None:
        """A piece of a child's output; a partial one carries the marker."""
        self.line(prefix, piece.text + PARTIAL_MARKER if piece.partial else piece.text)

"""One printer for every child's output: ``service/revision/replica | line``, lines unchanged."""

from __future__ import annotations

import sys
from typing import TextIO


class Printer:
    """Writes prefixed lines; pads prefixes to the widest seen so columns line up."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._width = 0

    def line(self, prefix: str, text: str) -> None:
        self._width = max(self._width, len(prefix))
        self._out.write(f"{prefix:<{self._width}} | {text}\n")
        self._out.flush()

"""The log files ``knfn dev`` keeps, and how ``knfn logs`` reads them back.

Every line the printer (knfn/logs.py) receives is also written here, whatever is printed:

* ``<state>/logs/services/<service>.log``: the lines of a Service's replicas and templates;
* ``<state>/logs/knfn.log``: knfn's own lines.

One record a line, ``<UTC time> <prefix> | <text>``, the prefix being ``service/revision/replica``
(or ``.../template``, or ``knfn``), so a file is read with ``tail``/``grep`` as well as with
``knfn logs``. Writes are buffered and flushed by a background thread every
:data:`FLUSH_INTERVAL` (and at close), so a busy replica costs the printer a buffered write, not
a system call, per line. A file is bounded: past :data:`MAX_BYTES` it is renamed to
``<name>.log.1`` (replacing the previous one) and a new one starts, as a node's kubelet rotates
container logs (``containerLogMaxSize``, keeping a few files; here one).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from knfn.errors import KnfnError
from knfn.logs import expand_traceback

MAX_BYTES = 10 * 1024 * 1024
FLUSH_INTERVAL = 0.2  # seconds a written line may wait in the buffer
BUFFER_BYTES = 64 * 1024
KNFN = "knfn"  # the prefix of knfn's own lines
SEPARATOR = " | "


def service_of(prefix: str) -> str | None:
    """The Service a printed prefix belongs to; None for knfn's own lines."""
    return None if prefix == KNFN else prefix.split("/", 1)[0]


def timestamp(seconds: float) -> str:
    """Epoch seconds as ``2026-12-02T03:01:02.123Z``."""
    return f"{_whole_second(int(seconds))}.{int(seconds * 1000) % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _whole_second(second: int) -> str:
    # Formatted once a second, not once a line: the printer's hot path.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


@dataclass(frozen=True)
class Record:
    """One line of a log file."""

    time: str
    prefix: str
    text: str

    @property
    def revision(self) -> str | None:
        parts = self.prefix.split("/")
        return parts[1] if len(parts) > 1 else None

    @classmethod
    def parse(cls, line: str) -> Record:
        """A file line (without its newline); one not in the format is kept whole as text."""
        stamp, _, rest = line.partition(" ")
        prefix, sep, text = rest.partition(SEPARATOR)
        if not sep or " " in prefix:
            return cls("", "", line)
        return cls(stamp, prefix, text)


class _File:
    """One log file open for appending, with its size, rotated at max_bytes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dirty = False
        self._handle = self._open()

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab", buffering=BUFFER_BYTES)  # noqa: SIM115
        self.size = handle.tell()
        return handle

    def write(self, data: bytes) -> None:
        if self.size and self.size + len(data) > self.max_bytes:
            self._handle.close()
            os.replace(self.path, rotated(self.path))
            self._handle = self._open()
        self._handle.write(data)
        self.size += len(data)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self._handle.flush()
            self.dirty = False

    def close(self) -> None:
        self._handle.close()


def rotated(path: Path) -> Path:
    """Where the previous file of path is kept: ``<name>.log.1``."""
    return path.with_name(path.name + ".1")


class LogFiles:
    """The files of one ``knfn dev``, under ``root`` (``<state>/logs``). Thread-safe: knfn's
    own lines may come from worker threads."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
        flush_interval: float | None = FLUSH_INTERVAL,
    ) -> None:
        self.root = root
        self._max_bytes = max_bytes
        self._clock = clock
        self._files: dict[str | None, _File] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if flush_interval is not None:
            self._flusher = threading.Thread(
                target=self._flush_every, args=(flush_interval,), name="knfn-logs", daemon=True
            )
            self._flusher.start()

    def path(self, service: str | None) -> Path:
        """The file of a Service's lines, or of knfn's own (None)."""
        return service_path(self.root, service) if service else self.root / "knfn.log"

    def write(self, prefix: str, text: str) -> None:
        """Append one record (buffered)."""
        service = service_of(prefix)
        data = f"{timestamp(self._clock())} {prefix}{SEPARATOR}{text}\n".encode("utf-8", "replace")
        with self._lock:
            if self._closed.is_set():
                return
            file = self._files.get(service)
            if file is None:
                file = self._files[service] = _File(self.path(service), self._max_bytes)
            file.write(data)

    def flush(self) -> None:
        with self._lock:
            for file in self._files.values():
                file.flush()

    def _flush_every(self, interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                self.flush()
            except OSError:  # a full disk must not stop knfn; the next flush tries again
                continue

    def close(self) -> None:
        """Flush and close every file; later writes are dropped."""
        with self._lock:
            self._closed.set()
            for file in self._files.values():
                file.close()
            self._files.clear()
        if self._flusher is not None:
            self._flusher.join()


def service_path(root: Path, service: str) -> Path:
    return root / "services" / f"{service}.log"


class LogsError(KnfnError):
    """A log that cannot be read as asked."""


class ServiceLog:
    """The records of one Service's file (and its rotated predecessor), read as ``kubectl
    logs`` reads a pod's: the last lines, then (``follow``) the new ones as they come."""

    def __init__(self, root: Path, service: str, revision: str | None = None) -> None:
        self.path = service_path(root, service)
        self.revision = revision
        self._handle: BinaryIO | None = None
        self._pending = b""

    def exists(self) -> bool:
        return self.path.exists() or rotated(self.path).exists()

    def _wanted(self, record: Record) -> bool:
        return self.revision is None or record.revision == self.revision

    def tail(self, lines: int | None) -> list[Record]:
        """The last ``lines`` records (None: all), oldest first; follow() goes on from there."""
        kept: deque[Record] = deque(maxlen=lines)
        old = rotated(self.path)
        if old.exists():
            with open(old, "rb") as fh:
                *rows, _unfinished = fh.read().split(b"\n")
                kept.extend(r for r in _records(rows) if self._wanted(r))
        if self.path.exists():
            self._handle = open(self.path, "rb")  # noqa: SIM115
            kept.extend(r for r in self._read() if self._wanted(r))
        return list(kept)

    def _read(self) -> list[Record]:
        """Whole lines written since the last read (a line still being written waits)."""
        assert self._handle is not None
        data = self._pending + self._handle.read()
        *lines, self._pending = data.split(b"\n")
        return list(_records(lines))

    def follow(
        self,
        stop: Callable[[], bool] = lambda: False,
        *,
        interval: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[Record]:
        """New records as they are written, until stop() is true; a rotated file is read to
        its end before the new one is opened (``tail -F``)."""
        while not stop():
            if self._handle is None:
                if self.path.exists():
                    self._handle = open(self.path, "rb")  # noqa: SIM115
                else:
                    sleep(interval)
                    continue
            records = self._read()
            yield from (r for r in records if self._wanted(r))
            if records:
                continue
            if self._replaced():
                yield from (r for r in self._read() if self._wanted(r))
                self._handle.close()
                self._handle, self._pending = None, b""
                continue
            sleep(interval)

    def _replaced(self) -> bool:
        """The file open is no longer the one at path (rotated away)."""
        assert self._handle is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _records(lines: list[bytes]) -> Iterator[Record]:
    for raw in lines:
        yield Record.parse(raw.decode("utf-8", "replace"))


def services_with_logs(root: Path) -> list[str]:
    """The Services that have a log file under root."""
    return sorted({p.name.split(".log", 1)[0] for p in (root / "services").glob("*.log*")})


def format_record(record: Record, *, timestamps: bool = False, tty: bool = False) -> list[str]:
    """A record as ``knfn logs`` prints it: ``prefix | text`` (with its time first when asked);
    on a terminal a JSON line's traceback is expanded into lines (knfn/logs.py)."""
    texts = expand_traceback(record.text) if tty else [record.text]
    head = f"{record.time} " if timestamps and record.time else ""
    prefix = f"{record.prefix}{SEPARATOR}" if record.prefix else ""
    return [head + prefix + text for text in texts]


def show(
    root: Path,
    service: str,
    out: Callable[[str], None],
    *,
    revision: str | None = None,
    lines: int | None = None,
    follow: bool = False,
    timestamps: bool = False,
    tty: bool = False,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``knfn logs``: the last ``lines`` records of service (None: all), then, following, the
    new ones until stop() is true. A Service without a log is an error unless following."""
    log = ServiceLog(root, service, revision)
    if not log.exists() and not follow:
        known = services_with_logs(root)
        hint = (
            f"Services with logs: {', '.join(known)}"
            if known
            else "has `knfn dev` run with this state dir (--state-dir, KNFN_STATE_DIR)?"
        )
        raise LogsError(f"no log of Service {service!r} at {log.path}; {hint}")
    try:
        for record in log.tail(lines):
            for text in format_record(record, timestamps=timestamps, tty=tty):
                out(text)
        if follow:
            for record in log.follow(stop, sleep=sleep):
                for text in format_record(record, timestamps=timestamps, tty=tty):
                    out(text)
    finally:
        log.close()

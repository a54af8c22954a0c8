"""Records of running replicas in the state dir, so that a killed run leaves nothing behind.

A replica is a process group of its own: the function server and the workers it forks. Its
leader dies with knfn by the parent-death signal (knfn/serving/pdeathsig.py), and its workers notice
their parent is gone and exit. The records are the second line: one small JSON file per replica
under ``<state dir>/run/replicas/``, written when it starts and removed when it has been reaped.
A template's spare (template.py: a started server not serving yet) is recorded the same way when
it is forked, under ``<svc>/<revision>/spare``; the replica that takes it keeps that record.
A file that is still there when knfn starts belongs to a run that was killed; whatever is left
of that replica's group is stopped (SIGTERM, a grace period, SIGKILL) before anything starts.

A pid alone is not an identity (pids are reused), so a record keeps the start time of the
process (``/proc/PID/stat`` field 22, clock ticks since boot) and the boot id, and the pid and
start time of the knfn that owned it: a record whose owner still runs is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from knfn.errors import KnfnError

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class RecordError(KnfnError, ValueError):
    """A replica record that cannot be read."""


@dataclass(frozen=True)
class ProcInfo:
    """What ``/proc/PID/stat`` says about one process."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int


def parse_stat(text: str) -> ProcInfo:
    """The fields of a ``/proc/PID/stat`` line; the command name may hold spaces and ')'."""
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 20:
        raise RecordError(f"/proc stat line not understood: {text[:80]!r}")
    # After the name: state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    return ProcInfo(
        pid=int(head.split("(", 1)[0]),
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start=int(fields[19]),
    )


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica's process group, as a run of knfn started it."""

    name: str
    pid: int
    start: int
    owner_pid: int
    owner_start: int
    boot_id: str

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str, source: Path) -> ReplicaRecord:
        try:
            data = json.loads(text)
            return cls(
                name=str(data["name"]),
                pid=int(data["pid"]),
                start=int(data["start"]),
                owner_pid=int(data["owner_pid"]),
                owner_start=int(data["owner_start"]),
                boot_id=str(data["boot_id"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise RecordError(f"{source}: not a replica record ({exc!r})") from exc


def leftovers(record: ReplicaRecord, table: Mapping[int, ProcInfo], boot_id: str) -> list[int]:
    """The pids still running of record's group, to stop; none when it is gone or not ours."""
    if record.boot_id != boot_id:
        return []  # recorded before a reboot: the pids mean nothing now
    if owner_running(record, table):
        return []  # the knfn that started it still runs and stops it itself
    leader = table.get(record.pid)
    if leader is not None and leader.start != record.start:
        return []  # the pid was reused, so the old group is gone (its id was free)
    # Members: the leader if alive, and its workers, which keep its group and session id.
    return sorted(
        p.pid
        for p in table.values()
        if p.pgrp == record.pid and p.session == record.pid and p.start >= record.start
    )


def owner_running(record: ReplicaRecord, table: Mapping[int, ProcInfo]) -> bool:
    """True when the knfn that wrote record still runs."""
    owner = table.get(record.owner_pid)
    return owner is not None and owner.start == record.owner_start


def process_table(proc: Path = Path("/proc")) -> dict[int, ProcInfo]:
    """Every process this machine shows now."""
    table: dict[int, ProcInfo] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, RecordError, ValueError):
            info = parse_stat((entry / "stat").read_text())
            if info.state not in ("Z", "X"):  # a zombie is dead, only not yet reaped
                table[info.pid] = info
    return table


def read_boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int:
    """The start time of pid in clock ticks since boot (0 when it cannot be read)."""
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text()).start
    except (OSError, RecordError, ValueError):
        return 0


class ReplicaRecords:
    """The record files of one state dir: written by this run, swept at start for the last."""

    def __init__(self, directory: Path, owner_pid: int | None = None) -> None:
        self.directory = directory
        self._owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self._owner_start = start_time(self._owner_pid)
        self._boot_id = read_boot_id()

    def add(self, name: str, pid: int) -> None:
        """Record a replica just started (its pid is its process group id)."""
        record = ReplicaRecord(
            name, pid, start_time(pid), self._owner_pid, self._owner_start, self._boot_id
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{pid}.json"
        partial = path.with_suffix(".tmp")
        partial.write_text(record.dumps())
        partial.replace(path)

    def remove(self, pid: int) -> None:
        """The replica's group is gone: forget it."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{pid}.json").unlink()

    def records(self) -> list[tuple[Path, ReplicaRecord | None]]:
        """Every record file; None for one that cannot be read (it is stale either way)."""
        if not self.directory.is_dir():
            return []
        out: list[tuple[Path, ReplicaRecord | None]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                out.append((path, ReplicaRecord.loads(path.read_text(), path)))
            except (OSError, RecordError):
                out.append((path, None))
        return out

    def stop_leftovers(
        self,
        grace: float = 5.0,
        table: Callable[[], Mapping[int, ProcInfo]] = process_table,
    ) -> list[str]:
        """Stop what is left of replicas recorded by runs that are gone; their names.

        Blocking (it waits up to grace seconds): run it off the event loop.
        """
        targets: dict[int, str] = {}
        now = table()
        for path, record in self.records():
            if record is not None and owner_running(record, now):
                continue  # this run's, or another live run's: it stops its own
            if record is not None:
                targets.update(dict.fromkeys(leftovers(record, now, self._boot_id), record.name))
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not targets:
            return []
        # 1. Ask each process to exit (a server drains, a worker finishes its request).
        _signal_all(targets, signal.SIGTERM)
        # 2. Wait up to the grace period for them to go.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            alive = table()
            if not any(pid in alive for pid in targets):
                break
            time.sleep(0.05)
        # 3. Whatever is left is killed.
        _signal_all(targets, signal.SIGKILL)
        return sorted(set(targets.values()))


def _signal_all(pids: Mapping[int, str], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

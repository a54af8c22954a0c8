"""Replica records: parsing /proc and the records, and which processes count as leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from knfn.serving.replica_records import (
    ProcInfo,
    RecordError,
    ReplicaRecord,
    ReplicaRecords,
    leftovers,
    parse_stat,
)

BOOT = "boot-1"
# A replica's leader 500 (started at tick 1000), owned by knfn 400 (started at tick 900).
RECORD = ReplicaRecord("hello/hello-00001/1", 500, 1000, 400, 900, BOOT)


def proc(pid: int, ppid: int, pgrp: int, start: int, session: int | None = None) -> ProcInfo:
    return ProcInfo(pid, "S", ppid, pgrp, pgrp if session is None else session, start)


def test_parse_stat_reads_fields_after_a_name_with_spaces_and_parens() -> None:
    """The name may contain ') ': fields are counted from the last ')'."""
    fields = ["S", "1", "500", "500"] + ["0"] * 15 + ["123456"] + ["0"] * 10
    info = parse_stat(f"501 (gunicorn: a) b) {' '.join(fields)}")
    assert info == ProcInfo(501, "S", 1, 500, 500, 123456)


def test_parse_stat_rejects_garbage() -> None:
    """A line that is not a stat line is an error naming it."""
    with pytest.raises(RecordError, match="not understood"):
        parse_stat("hello")


def test_parse_stat_of_this_process() -> None:
    """The real /proc/self/stat parses, with this pid."""
    import os

    assert parse_stat(Path("/proc/self/stat").read_text()).pid == os.getpid()


def test_record_round_trip_and_bad_record() -> None:
    """A record reads back as written; a broken file is an error naming the file."""
    assert ReplicaRecord.loads(RECORD.dumps(), Path("x.json")) == RECORD
    with pytest.raises(RecordError, match=r"broken\.json"):
        ReplicaRecord.loads('{"pid": "x"}', Path("broken.json"))


def test_orphaned_leader_and_workers_are_leftovers() -> None:
    """Owner gone: the leader (now under init) and its workers are to be stopped."""
    table = {
        1: proc(1, 0, 1, 1),
        500: proc(500, 1, 500, 1000),
        501: proc(501, 500, 500, 1001),
        777: proc(777, 1, 777, 5),
    }
    assert leftovers(RECORD, table, BOOT) == [500, 501]


def test_workers_left_after_the_leader_died_are_leftovers() -> None:
    """Leader gone, a worker still in its group and session: it is stopped."""
    assert leftovers(RECORD, {501: proc(501, 1, 500, 1001)}, BOOT) == [501]


def test_live_owner_keeps_its_replicas() -> None:
    """The knfn that started the replica still runs: nothing is a leftover."""
    table = {400: proc(400, 1, 400, 900), 500: proc(500, 400, 500, 1000)}
    assert leftovers(RECORD, table, BOOT) == []


def test_owner_pid_reused_does_not_protect() -> None:
    """A different process with the owner's pid (other start time) is not the owner."""
    table = {400: proc(400, 1, 400, 5000), 500: proc(500, 1, 500, 1000)}
    assert leftovers(RECORD, table, BOOT) == [500]


def test_reused_leader_pid_is_not_touched() -> None:
    """The leader's pid now names another process (other start time): nothing to stop."""
    table = {500: proc(500, 1, 500, 7000), 501: proc(501, 500, 500, 7001)}
    assert leftovers(RECORD, table, BOOT) == []


def test_record_from_before_a_reboot_is_ignored() -> None:
    """Another boot id: the pids mean nothing."""
    assert leftovers(RECORD, {500: proc(500, 1, 500, 1000)}, "boot-2") == []


def test_sweep_removes_stale_and_broken_records_and_keeps_live_owners(tmp_path: Path) -> None:
    """Records of gone runs are removed (with nothing to stop); a live owner's record stays."""
    records = ReplicaRecords(tmp_path, owner_pid=999_999)
    live_owner = ReplicaRecord("a/a-1/1", 600, 1000, 400, 900, records._boot_id)
    gone_owner = ReplicaRecord("b/b-1/1", 500, 1000, 300, 900, records._boot_id)
    (tmp_path / "500.json").write_text(gone_owner.dumps())
    (tmp_path / "600.json").write_text(live_owner.dumps())
    (tmp_path / "700.json").write_text("{")
    table = {400: proc(400, 1, 400, 900), 600: proc(600, 400, 600, 1000)}
    assert records.stop_leftovers(grace=0, table=lambda: table) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["600.json"]

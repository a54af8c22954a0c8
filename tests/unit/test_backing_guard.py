"""The pure parts of backing-service guarding: restart decisions, the lock, ports, redaction."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from knfn import ports
from knfn.backing import postgres, process, s3, services
from knfn.backing.services import Health
from knfn.backing.supervise import Action, Watch
from knfn.errors import PortInUseError
from knfn.statelock import StateDirInUse, StateLock


def test_dead_server_is_restarted_at_once() -> None:
    """The first look that finds a server dead asks for a restart."""
    watch = Watch()
    assert watch.observe(Health.UP, 0.0) is Action.NONE
    assert watch.observe(Health.DEAD, 1.0) is Action.RESTART
    assert watch.down_since == 1.0


def test_failed_restarts_back_off_doubling_up_to_a_cap() -> None:
    """After each failed restart the next waits 0.5, 1, 2, ... s, never more than the cap."""
    watch = Watch(first_delay=0.5, max_delay=3.0)
    watch.observe(Health.DEAD, 0.0)
    delays = [watch.failed(0.0) for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert watch.observe(Health.DEAD, 2.9) is Action.WAIT
    assert watch.observe(Health.DEAD, 3.0) is Action.RESTART


def test_unanswering_server_is_restarted_only_after_several_looks() -> None:
    """A live server that does not answer is given unanswered_limit looks before a restart."""
    watch = Watch(unanswered_limit=3)
    assert watch.observe(Health.UNANSWERING, 0.0) is Action.NONE
    assert watch.observe(Health.UNANSWERING, 1.0) is Action.NONE
    assert watch.observe(Health.UNANSWERING, 2.0) is Action.RESTART


def test_an_answer_resets_the_count_of_misses() -> None:
    """One answer in between starts the count of unanswered looks again."""
    watch = Watch(unanswered_limit=2)
    watch.observe(Health.UNANSWERING, 0.0)
    watch.observe(Health.UP, 1.0)
    assert watch.observe(Health.UNANSWERING, 2.0) is Action.NONE


def test_recovery_clears_the_backoff() -> None:
    """A server that is up again (restarted, or back by itself) starts from a clean slate."""
    watch = Watch()
    watch.observe(Health.DEAD, 0.0)
    watch.failed(0.0)
    assert watch.observe(Health.UP, 0.1) is Action.NONE
    assert (watch.failures, watch.down_since) == (0, None)
    assert watch.observe(Health.DEAD, 0.2) is Action.RESTART


def test_second_holder_of_a_state_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    """The lock is exclusive; the refusal names the holder's command and pid."""
    import os

    holder = rf"knfn dev \(pid {os.getpid()}\)"
    with StateLock.acquire(tmp_path, "dev"), pytest.raises(StateDirInUse, match=holder):
        StateLock.acquire(tmp_path, "reset")
    # Released: the next one gets it.
    StateLock.acquire(tmp_path, "reset").release()


def test_bound_port_is_reported_with_its_option(tmp_path: Path) -> None:
    """A busy port fails with the option's name; ports bound before it are let go."""
    free = ports.free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"admin: port {busy} on 127.0.0.1 is already"):
            ports.bind_listeners({"gateway": free, "admin": busy})
    assert ports.is_free(free)


def test_bound_ports_are_held_until_used() -> None:
    """A port bound by bind_listeners cannot be taken by anyone else meanwhile."""
    port = ports.free_port()
    held = ports.bind_listeners({"gateway": port})
    try:
        assert not ports.is_free(port)
    finally:
        held[port].close()


def test_trust_rules_become_scram_and_comments_stay() -> None:
    """pg_hba.conf rules with trust get scram-sha-256; comments and other rules are kept."""
    text = (
        "# TYPE DATABASE USER ADDRESS METHOD\n"
        "# trust is how it started\n"
        "local   all   all                 trust\n"
        "host    all   all   127.0.0.1/32  trust  # loopback\n"
        "host    all   all   ::1/128       md5\n"
    )
    assert postgres.secure_hba(text) == (
        "# TYPE DATABASE USER ADDRESS METHOD\n"
        "# trust is how it started\n"
        "local   all   all                 scram-sha-256\n"
        "host    all   all   127.0.0.1/32  scram-sha-256  # loopback\n"
        "host    all   all   ::1/128       md5\n"
    )


def test_printed_env_hides_passwords_and_secret_keys() -> None:
    """The env printed by `knfn services up` carries no password and no secret key."""
    env = {
        "DATABASE_URL": postgres.url(5432, "functions", "s3cr3t"),
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "knfnabc",
        "AWS_SECRET_ACCESS_KEY": "topsecret",
    }
    assert services.redacted_env(env) == {
        "DATABASE_URL": "postgresql://postgres:***@127.0.0.1:5432/functions",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "knfnabc",
        "AWS_SECRET_ACCESS_KEY": "***",
    }


def test_password_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    """The Postgres password file is made 0600 on first use and read back after."""
    path = tmp_path / "postgres" / "password"
    first = postgres.load_password(path)
    assert len(first) >= 24 and path.stat().st_mode & 0o777 == 0o600
    assert postgres.load_password(path) == first


def test_no_postmaster_when_pid_file_names_a_dead_or_foreign_process(tmp_path: Path) -> None:
    """postmaster.pid is believed only when its pid is a live postgres process."""
    import os

    pid_file = tmp_path / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{tmp_path}\n0\n5432\n\n127.0.0.1\n0\nready\n")
    assert postgres.postmaster(tmp_path) is None  # this pid is python, not postgres
    pid_file.write_text("999999999\n/x\n0\n5432\n")
    assert postgres.postmaster(tmp_path) is None


def test_log_since_reads_what_came_after_the_offset(tmp_path: Path) -> None:
    """A start's bind check reads only its own lines of the server log; no log reads as ""."""
    log = tmp_path / "server.log"
    log.write_bytes(b"old: address already in use\n")
    offset = log.stat().st_size
    with open(log, "ab") as out:
        out.write(b"new: listening \xff\n")
    assert process.log_since(log, offset) == "new: listening \ufffd\n"
    assert not s3._bind_failed(log, offset) and s3._bind_failed(log, 0)
    assert process.log_since(tmp_path / "missing.log", 0) == ""

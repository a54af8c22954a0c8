"""The root template's channel and its rules: which templates it may fork, and with what env."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from knfn.serving import template_root_main as root_main
from knfn.serving import template_root_wire as wire

GIVEN = {"PATH": "/bin", "HOME": "/home/u", "PYTHONUNBUFFERED": "1"}
STARTED = {**GIVEN, "LC_CTYPE": "C.UTF-8"}  # the interpreter coerced the C locale


def test_a_revision_env_like_the_roots_is_forked_with_the_interpreters_additions() -> None:
    """Same start-up variables, reads that match: no conflict; LC_CTYPE added as at a start."""
    env = {**GIVEN, "K_SERVICE": "hello", "PORT_NOT_READ": "1"}
    got = wire.plan(GIVEN, STARTED, {"WEB_CONCURRENCY": None, "HOME": "/home/u"}, env)
    assert got.conflicts == []
    assert got.env == {**env, "LC_CTYPE": "C.UTF-8"}


def test_a_start_up_variable_that_differs_or_is_new_is_a_conflict() -> None:
    """PYTHONHASHSEED set, HOME changed, LANG dropped: all named."""
    given = {**GIVEN, "LANG": "C.UTF-8"}
    env = {**GIVEN, "HOME": "/elsewhere", "PYTHONHASHSEED": "0"}
    assert wire.plan(given, given, {}, env).conflicts == ["HOME", "LANG", "PYTHONHASHSEED"]


def test_a_variable_a_preload_read_must_have_the_value_it_read() -> None:
    """Read absent and now set, or read with another value: a conflict."""
    read = {"WEB_CONCURRENCY": None, "AWS_DATA_PATH": "/x"}
    env = {**GIVEN, "WEB_CONCURRENCY": "4", "AWS_DATA_PATH": "/x"}
    assert wire.plan(GIVEN, STARTED, read, env).conflicts == ["WEB_CONCURRENCY"]


def test_an_iterated_environment_makes_every_variable_count() -> None:
    """A preload that copied os.environ: any variable added or changed is a conflict."""
    read = {wire.ITERATED: None}
    assert wire.plan(GIVEN, STARTED, read, dict(GIVEN)).conflicts == []
    assert wire.plan(GIVEN, STARTED, read, {**GIVEN, "K_SERVICE": "x"}).conflicts == ["K_SERVICE"]


def test_messages_round_trip_and_bad_ones_name_the_field() -> None:
    """Every message decodes to itself; a wrong type or a missing field is a RootWireError."""
    messages: list[wire.Message] = [
        wire.Spawn(1, "/bin/ff", "/fn", {"A": "1"}),
        wire.Preloaded(7, ["flask"], {"HOME": "/h"}, {"X": None, "Y": "y"}),
        wire.Failed("no"),
        wire.Spawned(1, 9),
        wire.SpawnFailed(1, "why"),
        wire.Exited(9, -9),
    ]
    for message in messages:
        assert wire.decode(wire.encode(message)) == message
    with pytest.raises(wire.RootWireError, match="env="):
        wire.decode(b'{"type":"Spawn","id":1,"script":"s","cwd":"c","env":{"A":1}}')
    with pytest.raises(wire.RootWireError, match="without pid"):
        wire.decode(b'{"type":"Spawned","id":1}')
    with pytest.raises(wire.RootWireError, match="unknown type"):
        wire.decode(b'{"type":"Nope"}')


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    mod = types.ModuleType("fake_cwd_reader")

    class Setting:
        default = "/run/root"

    Setting.__module__ = mod.__name__
    mod.__dict__.update(SOURCE="/run/root/main.py", OTHER="/run/rootless", Setting=Setting, N=3)
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_move_cwd_moves_strings_under_the_roots_directory_only(module: types.ModuleType) -> None:
    """Globals and class attributes under the old directory move; look-alikes stay."""
    root_main.move_cwd([module.__name__, "not_imported"], "/run/root", "/fn/hello")
    assert module.SOURCE == "/fn/hello/main.py"
    assert module.Setting.default == "/fn/hello"
    assert module.OTHER == "/run/rootless"
    assert module.N == 3


def test_requirement_modules_are_the_installed_distributions_top_level_packages(
    tmp_path: Path,
) -> None:
    """Pins, extras and comments read; options, paths and unknown names skipped."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        "# serving\nflask==3.1.3  # pinned\npsycopg[binary]==3.3.9\n-r other.txt\n../kit\n"
        "no-such-distribution==1.0\n"
    )
    assert root_main.requirement_modules([str(reqs)]) == ["flask", "psycopg"]

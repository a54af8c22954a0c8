"""The template control channel's messages and the per-replica environment delta."""

from __future__ import annotations

import pytest

from knfn.serving import template_wire as wire
from knfn.serving.template import start_mode, validate_annotations
from knfn.serving.template_main import warm_up_path
from tests.support import REPO

MESSAGES: list[wire.Message] = [
    wire.Fork(7),
    wire.Fork(8, wire.EnvDelta({"PORT": "8123", "É": "ü ✓"}, ("GONE",))),
    wire.Ready(4242),
    wire.Failed("fork unsafe: the function started threads at import: ['x']"),
    wire.Forked(7, 4343),
    wire.ForkFailed(-1, "expected a Fork with 2 fds"),
    wire.Exited(4343, -9),
    wire.Exited(4344, 0),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_and_decode(message: wire.Message) -> None:
    """decode(encode(m)) is m for every message type."""
    assert wire.decode(wire.encode(message)) == message


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"type": "Launch", "id": 1}', "unknown type"),
        (b'{"type": "Forked", "id": 1}', "Forked message without pid"),
        (b'{"type": "Forked", "id": "1", "pid": 2}', "id='1' is not int"),
        (b'{"type": "Exited", "pid": 2, "returncode": true}', "returncode=True is not int"),
        (b'{"type": "Failed", "reason": 3}', "reason=3 is not str"),
        (b'{"type": "Fork", "id": 1, "delta": []}', "delta must be an object"),
        (b'{"type": "Fork", "id": 1, "delta": {"set": {"A": 1}}}', "delta.set must map"),
        (b'{"type": "Fork", "id": 1, "delta": {"unset": "A"}}', "delta.unset must be a list"),
        (b'{"type": "Fork", "id": 1}', "Fork message without delta"),
    ],
)
def test_a_malformed_message_is_a_wire_error_naming_the_problem(data: bytes, names: str) -> None:
    """Bad JSON, shapes, types and fields raise WireError (a ValueError) that says which."""
    with pytest.raises(wire.WireError, match=names.replace("(", r"\(").replace("[", r"\[")):
        wire.decode(data)
    assert issubclass(wire.WireError, ValueError)


def test_an_oversized_message_is_refused() -> None:
    """A message over the datagram budget is an error at the sender, not a truncated read."""
    delta = wire.EnvDelta({"BIG": "x" * wire.MAX_MESSAGE})
    with pytest.raises(wire.WireError, match="bytes >"):
        wire.encode(wire.Fork(1, delta))


def test_the_delta_turns_the_template_env_into_the_replica_env() -> None:
    """Changed and added values are set, missing ones unset; applying it gives the target."""
    base = {"PATH": "/bin", "HOST": "127.0.0.1", "OLD": "1", "K_REVISION": "a-00001"}
    target = {"PATH": "/bin", "HOST": "127.0.0.1", "PORT": "9000", "K_REVISION": "a-00002"}
    delta = wire.env_delta(base, target)
    assert delta == wire.EnvDelta({"PORT": "9000", "K_REVISION": "a-00002"}, ("OLD",))
    assert delta.keys == {"PORT", "K_REVISION", "OLD"}
    environ = dict(base)
    wire.apply_delta(environ, delta)
    assert environ == target


def test_a_replica_of_the_template_env_differs_only_in_port() -> None:
    """The template's env is the replica's without PORT: the delta is PORT alone."""
    replica = {"PATH": "/bin", "PORT": "8123", "K_SERVICE": "hello"}
    template = wire.template_env(replica)
    assert template == {"PATH": "/bin", "K_SERVICE": "hello"}
    assert wire.env_delta(template, replica).keys <= wire.PER_REPLICA


def test_the_replica_start_annotation() -> None:
    """fork by default, spawn when annotated; any other value is a manifest problem."""
    key = "knfn.dev/replica-start"
    assert start_mode({}) == "fork"
    assert start_mode({key: "spawn"}) == "spawn"
    assert validate_annotations({key: "fork"}) == validate_annotations({}) == []
    assert validate_annotations({key: "exec"}) == [
        "knfn.dev/replica-start='exec': must be one of fork, spawn"
    ]


def test_the_warm_up_path_is_one_the_function_never_sees() -> None:
    """An HTTP function's /robots.txt is functions-framework's own 404; once the function adds
    a request hook (which would run for it), a spare's worker is not warmed up."""
    from functions_framework import create_app

    source = REPO / "tests" / "integration" / "echo_function" / "main.py"
    app = create_app("echo", str(source), "http")
    assert warm_up_path(app) == "/robots.txt"
    hooked = create_app("echo", str(source), "http")
    hooked.before_request(lambda: None)
    assert warm_up_path(hooked) is None
    assert app.test_client().get("/robots.txt").status_code == 404
    events = create_app("echo", str(source), "cloudevent")
    assert warm_up_path(events) is None

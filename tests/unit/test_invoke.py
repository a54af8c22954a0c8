"""`knfn invoke`'s pure core: targets, the request built from the options, the rendered answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from knfn.errors import KnfnError
from knfn.eventing.cloudevent import Event, from_http
from knfn.invoke import (
    BROKER_HOST,
    Destination,
    Options,
    Payload,
    Request,
    Response,
    UsageError,
    build,
    describe,
    guess_content_type,
    read_data,
    render,
    resolve_target,
)
from knfn.routing import parse_host


def fixed_id() -> str:
    return "generated-1"


def usage(options: Options) -> str:
    with pytest.raises(UsageError) as info:
        build(options, fixed_id)
    return str(info.value)


def header(request: Request, name: str) -> str | None:
    return next((v for k, v in request.headers if k.lower() == name.lower()), None)


def event_of(request: Request) -> Event:
    """The event the broker ingress reads from this request."""
    headers = {k: v for k, v in request.headers if k.lower() not in ("host", "user-agent")}
    headers.pop("Content-Length", None)
    return from_http(headers, request.body)


# -- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "path"),
    [
        ("hello", "hello.default.svc.cluster.local", "/"),
        ("hello.default", "hello.default", "/"),
        ("query.shop", "query.shop", "/"),
        ("hello.default.localhost", "hello.default.localhost", "/"),
        ("http://hello.default.svc.cluster.local/a?x", "hello.default.svc.cluster.local", "/a?x"),
        ("http://hello.default.localhost:8080", "hello.default.localhost", "/"),
        ("hello.default.svc.cluster.local/objects", "hello.default.svc.cluster.local", "/objects"),
    ],
)  # fmt: skip
def test_a_service_is_named_as_knative_names_it(target: str, host: str, path: str) -> None:
    """A bare name is in namespace default; hosts and URLs keep their host, path and query."""
    dest = resolve_target(target)
    assert (dest.host, dest.path, dest.broker) == (host, path, False)
    assert parse_host(dest.host) is not None


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("broker:default", "/default/default"),
        ("broker:shop/orders", "/shop/orders"),
        ("http://broker-ingress.knative-eventing.svc.cluster.local/shop/orders", "/shop/orders"),
    ],
)
def test_a_broker_is_reached_at_the_broker_ingress(target: str, path: str) -> None:
    """broker:<name>, broker:<ns>/<name> and the broker's address all go to the ingress host."""
    assert resolve_target(target) == Destination(
        BROKER_HOST, path, broker=True, path_given=target.startswith("http")
    )
    assert BROKER_HOST == "broker-ingress.knative-eventing.svc.cluster.local"


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("Hello_World", "is not a Service name"),
        ("www.example.com", "names no Service or broker"),
        ("http://www.example.com/", "names no Service or broker"),
        ("https://hello.default/", "plain http"),
        ("broker:", "is not a broker or namespace name"),
        ("broker:Shop/orders", "'Shop' is not a broker or namespace name"),
        ("http://hello.default/a b", "must be percent-encoded"),
    ],
)
def test_a_target_that_names_nothing_is_a_usage_error(target: str, says: str) -> None:
    """The message quotes the target and says what would be understood; exit code 2."""
    with pytest.raises(UsageError) as info:
        resolve_target(target)
    assert says in str(info.value) and repr(target) in str(info.value)
    assert info.value.exit_code == 2 and isinstance(info.value, KnfnError)


# -- plain HTTP requests ---------------------------------------------------------------------


def test_a_get_goes_to_the_gateway_with_the_service_host() -> None:
    """No body: GET on 127.0.0.1:<port>, Host from the target, nothing else but User-Agent."""
    request = build(Options("hello", port=9090, path="/?sleep=5"))
    assert request.method == "GET"
    assert request.url == "http://127.0.0.1:9090/?sleep=5"
    assert request.headers == (
        ("Host", "hello.default.svc.cluster.local"),
        ("User-Agent", "knfn-invoke"),
    )
    assert request.body == b""


def test_data_makes_a_post_with_its_length_and_a_content_type() -> None:
    """--data without --method is POSTed; JSON text is sent as application/json."""
    request = build(Options("ingest", data=Payload(b'{"a": 1}'), headers=("X-Trace: t1",)))
    assert request.method == "POST"
    assert header(request, "Content-Type") == "application/json"
    assert header(request, "Content-Length") == "8"
    assert header(request, "X-Trace") == "t1"
    assert request.body == b'{"a": 1}'


def test_method_and_content_type_flags_win() -> None:
    """-X and --content-type are used as given; a body-less PUT says Content-Length: 0."""
    request = build(Options("hello", method="put", content_type="text/csv"))
    assert request.method == "PUT"
    assert header(request, "Content-Type") == "text/csv"
    assert header(request, "Content-Length") == "0"


def test_path_flag_and_path_without_a_slash() -> None:
    """--path is appended to a Service target; a missing leading slash is added."""
    assert build(Options("hello.default", path="objects/k1")).url.endswith(":8080/objects/k1")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (Payload(b'{"n": 1}'), "application/json"),
        (Payload(b"42"), "application/json"),
        (Payload(b"hello"), "text/plain; charset=utf-8"),
        (Payload("café".encode()), "text/plain; charset=utf-8"),
        (Payload(b"\x89PNG\r\n\x1a\n\xff"), "application/octet-stream"),
        (Payload(b"\x89PNG\r\n\x1a\n\xff", "cat.png"), "image/png"),
        (Payload(b"a,b\n", "rows.csv"), "text/csv"),
        (Payload(b"plain", "notes.unknownext"), "text/plain; charset=utf-8"),
    ],
)
def test_content_type_is_guessed_from_the_file_then_the_bytes(
    payload: Payload, expected: str
) -> None:
    """A file's name says its type; otherwise JSON, then UTF-8 text, then octet-stream."""
    assert guess_content_type(payload) == expected


def test_a_broker_target_without_event_is_still_a_post() -> None:
    """A hand-made request to the broker (ce- headers by -H) defaults to POST."""
    request = build(Options("broker:default", headers=("ce-id: 1",)))
    assert request.method == "POST" and request.url.endswith("/default/default")


# -- events ----------------------------------------------------------------------------------


def test_binary_event_has_ce_headers_and_the_data_as_body() -> None:
    """--event: POST, ce-* headers (values percent-encoded), Content-Type is datacontenttype."""
    request = build(
        Options(
            "broker:default",
            event=True,
            type="dev.knfn.test",
            source="/tests",
            id="e1",
            subject="photo 1",
            extensions=('note=50% off, "quoted" café', "count=3"),
            data=Payload(b"\x00\x01\xff", "blob.bin"),
        ),
        fixed_id,
    )
    assert request.method == "POST"
    assert header(request, "Host") == BROKER_HOST
    assert header(request, "ce-specversion") == "1.0"
    assert header(request, "ce-note") == "50%25%20off,%20%22quoted%22%20caf%C3%A9"
    assert header(request, "Content-Type") == "application/octet-stream"
    assert request.body == b"\x00\x01\xff"
    assert event_of(request) == Event(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/tests",
            "type": "dev.knfn.test",
            "subject": "photo 1",
            "note": '50% off, "quoted" café',
            "count": "3",
            "datacontenttype": "application/octet-stream",
        },
        b"\x00\x01\xff",
    )


def test_structured_event_is_one_json_document() -> None:
    """--structured: application/cloudevents+json; JSON data stays JSON, bytes go base64."""
    options = Options(
        "broker:default",
        event=True,
        type="t",
        source="/s",
        structured=True,
        data=Payload(b'{"n": 1}'),
    )
    request = build(options, fixed_id)
    assert header(request, "Content-Type") == "application/cloudevents+json; charset=utf-8"
    doc = json.loads(request.body)
    assert doc["id"] == "generated-1" and doc["data"] == {"n": 1}
    assert doc["datacontenttype"] == "application/json"
    assert header(request, "Content-Length") == str(len(request.body))
    raw = build(Options("broker:default", event=True, type="t", source="/s", structured=True,
                        data=Payload(b"\xff\x00")), fixed_id)  # fmt: skip
    assert json.loads(raw.body)["data_base64"] == "/wA="
    assert event_of(raw).data == b"\xff\x00"


def test_an_event_without_data_has_no_body_and_no_content_type() -> None:
    """No --data: an empty POST (Content-Length: 0) with only the ce- headers."""
    request = build(Options("hello", event=True, type="t", source="/s"), fixed_id)
    assert request.body == b"" and header(request, "Content-Type") is None
    assert header(request, "Content-Length") == "0"
    assert header(request, "ce-id") == "generated-1"


def test_an_invalid_event_is_left_for_the_broker_to_refuse() -> None:
    """--type '' is sent as an empty ce-type: the broker's 400 is the answer to show."""
    request = build(Options("broker:default", event=True, type="", source="/s"), fixed_id)
    assert header(request, "ce-type") == ""


def test_an_extension_may_set_specversion_to_see_it_refused() -> None:
    """--extension specversion=0.3 replaces 1.0 (to try a broker's refusal)."""
    request = build(
        Options("broker:default", event=True, type="t", source="/s",
                extensions=("specversion=0.3",)),
        fixed_id,
    )  # fmt: skip
    assert header(request, "ce-specversion") == "0.3"


def test_every_usage_problem_is_reported_at_once() -> None:
    """Missing --type and --source, a bad extension, a ce- header and a GET: one message."""
    message = usage(
        Options(
            "broker:default",
            event=True,
            method="GET",
            extensions=("Bad=1", "novalue", "id=x", "data=y"),
            headers=("ce-id: 1", "Content-Type: text/plain", "Host: x", "no colon"),
        )
    )
    for part in (
        "--type is required with --event",
        "--source is required with --event",
        "--method GET: an event is sent with POST",
        "--extension 'Bad=1': the name 'Bad' must be lowercase",
        "--extension 'novalue': write an extension as name=value",
        "--extension 'id=x': set id with --id",
        "--extension 'data=y': the data is given with --data",
        "-H ce-id: with --event, give attributes with --extension",
        "-H Content-Type: with --event, give it as --content-type",
        "-H Host: set by knfn invoke",
        "-H 'no colon': write a header as 'Name: value'",
    ):
        assert part in message


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (Options("hello", type="t", structured=True), "--type, --structured: only with --event"),
        (Options("broker:default", path="/x"), "a broker is addressed by /<namespace>/<name>"),
        (Options("http://hello.default/a", path="/b"), "the target URL has a path already (/a)"),
        (Options("hello", path="/a b"), "spaces and control characters must be percent-encoded"),
        (Options("hello", method="GE T"), "--method 'GE T' is not an HTTP method"),
        (Options("hello", headers=("X-A: é€",)), "must be Latin-1 text"),
        (Options("hello", headers=("X-A: a\r\nB: c",)), "cannot hold control characters"),
        (Options("hello", content_type="a/b", headers=("content-type: c/d",)),
         "Content-Type is given by --content-type already"),
        (Options("nope_", event=True), "--type is required with --event"),
    ],
)  # fmt: skip
def test_flags_that_do_not_go_together_are_usage_errors(options: Options, says: str) -> None:
    """Each names the flag and value at fault."""
    assert says in usage(options)


# -- the answer ------------------------------------------------------------------------------


def response(body: bytes, content_type: str, status: int = 200) -> Response:
    headers = (("Content-Type", content_type), ("Content-Length", str(len(body))))
    return Response("HTTP/1.1", status, "OK" if status == 200 else "Bad Request", headers, body)


def test_render_shows_status_headers_and_pretty_json() -> None:
    """Status line, headers, a blank line, then the JSON body indented."""
    text = render(response(b'{"error":"attribute \'type\' must not be empty"}',
                           "application/json", 400)).decode()  # fmt: skip
    assert text.startswith("HTTP/1.1 400 Bad Request\nContent-Type: application/json\n")
    assert text.endswith('\n\n{\n  "error": "attribute \'type\' must not be empty"\n}\n')


def test_quiet_prints_the_body_only_and_keeps_other_bytes_as_they_are() -> None:
    """--quiet: no status line or headers; a non-JSON body byte for byte (no newline added)."""
    assert render(response(b"\x89PNG\xff", "image/png"), quiet=True) == b"\x89PNG\xff"
    assert render(response(b'{"a":[1]}', "application/problem+json"), quiet=True) == (
        b'{\n  "a": [\n    1\n  ]\n}\n'
    )
    assert render(response(b"{not json", "application/json"), quiet=True) == b"{not json"
    assert render(response(b"plain", "text/plain")).endswith(b"\n\nplain\n")


def test_describe_shows_the_request_as_sent() -> None:
    """--verbose: the request line and every header, curl -v style."""
    request = build(Options("hello", path="/x?y=1"))
    assert describe(request).splitlines() == [
        "> GET /x?y=1 HTTP/1.1",
        "> Host: hello.default.svc.cluster.local",
        "> User-Agent: knfn-invoke",
        ">",
    ]


# -- --data ----------------------------------------------------------------------------------


def test_read_data_text_file_and_stdin(tmp_path: Path) -> None:
    """Text as UTF-8, @file as its bytes with its name, @- from standard input."""
    (tmp_path / "cat.png").write_bytes(b"\x89PNG")
    assert read_data("café", io.BytesIO()) == Payload("café".encode())
    assert read_data(f"@{tmp_path}/cat.png", io.BytesIO()) == Payload(
        b"\x89PNG", f"{tmp_path}/cat.png"
    )
    assert read_data("@-", io.BytesIO(b"from stdin")) == Payload(b"from stdin")


def test_read_data_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """The message names the flag and the file."""
    with pytest.raises(UsageError, match=r"--data @.*missing\.json: cannot read"):
        read_data(f"@{tmp_path}/missing.json", io.BytesIO())

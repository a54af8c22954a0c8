"""``knfn invoke``: one HTTP request or one CloudEvent to a Service or a broker, via the gateway.

The core is pure: :func:`resolve_target` turns what the user typed into the Host header and path
the gateway routes by, and :func:`build` turns the options into the exact request (URL, headers,
body). Events are written with the broker's own CloudEvents code (binary mode by default,
structured with ``--structured``). The shell around it reads ``--data @file``, sends the request
with ``http.client`` and renders the answer: status line, headers, body (JSON pretty-printed).

Targets, as a Knative user names them:

* a Service: ``hello`` (namespace ``default``), ``hello.default``, a host the gateway routes
  (``hello.default.svc.cluster.local``, ``hello.default.localhost``) or a URL such as
  ``http://hello.default.svc.cluster.local/path?x=1``;
* a broker: ``broker:<name>`` (namespace ``default``), ``broker:<namespace>/<name>`` or its
  address ``http://broker-ingress.knative-eventing.svc.cluster.local/<namespace>/<name>``.

Problems with the command line are :class:`UsageError` (exit code 2), all reported at once; a
gateway that does not answer is :class:`Unreachable` (exit code 1). Whether the event itself is
valid is left to the broker: ``--type ''`` is sent, and its 400 is shown.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from knfn.errors import KnfnError
from knfn.eventing import cloudevent
from knfn.eventing.cloudevent import Event
from knfn.routing import BROKER_INGRESS, BROKER_INGRESS_TARGET, parse_host

GATEWAY_HOST = "127.0.0.1"
DEFAULT_NAMESPACE = "default"
BROKER_HOST = urlsplit(BROKER_INGRESS).netloc
USER_AGENT = "knfn-invoke"
BROKER_PREFIX = "broker:"

# A Kubernetes object name as a DNS label (what Services and Brokers are named).
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_ATTRIBUTE = re.compile(r"[a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f]")  # what http.client refuses in a request line
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Attributes that have their own flag: an --extension may not set them behind its back.
_OWN_FLAGS = {
    "id": "--id",
    "source": "--source",
    "type": "--type",
    "subject": "--subject",
    "datacontenttype": "--content-type",
}


class InvokeError(KnfnError):
    """The request could not be made or answered."""


class UsageError(InvokeError):
    """The command line is wrong; the message names every flag and value at fault."""

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("; ".join(problems))


class Unreachable(InvokeError):
    """Nothing answered at the gateway, or not in time."""


@dataclass(frozen=True)
class Destination:
    """Where a target points: the Host the gateway routes by and the path there."""

    host: str
    path: str  # path and query, starting with "/"
    broker: bool
    path_given: bool = False  # the target itself named a path (a URL with one)


@dataclass(frozen=True)
class Payload:
    """The body from --data, and the file it came from (which may say its media type)."""

    body: bytes
    filename: str | None = None


@dataclass(frozen=True)
class Options:
    """What ``knfn invoke`` was asked to send, as given on the command line."""

    target: str
    port: int = 8080
    method: str | None = None
    path: str | None = None
    headers: tuple[str, ...] = ()
    data: Payload | None = None
    content_type: str | None = None
    event: bool = False
    type: str | None = None
    source: str | None = None
    id: str | None = None
    subject: str | None = None
    extensions: tuple[str, ...] = ()
    structured: bool = False


@dataclass(frozen=True)
class Request:
    """The request exactly as it goes on the wire (Host included, Content-Length computed)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        split = urlsplit(self.url)
        return split.path + (f"?{split.query}" if split.query else "")


@dataclass(frozen=True)
class Response:
    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


# -- the pure core ---------------------------------------------------------------------------


def resolve_target(target: str) -> Destination:
    """The Host header and path for a Service or broker named as the module docstring says."""
    text = target.strip()
    if text.startswith(BROKER_PREFIX):
        ref = text[len(BROKER_PREFIX) :]
        namespace, _, name = ref.rpartition("/")
        namespace = namespace or DEFAULT_NAMESPACE
        bad = [n for n in (namespace, name) if not _LABEL.fullmatch(n)]
        if bad:
            raise UsageError(
                f"target {target!r}: {bad[0]!r} is not a broker or namespace name; "
                "write broker:<name> or broker:<namespace>/<name>"
            )
        return Destination(BROKER_HOST, f"/{namespace}/{name}", broker=True)
    if "://" in text or "/" in text:
        return _resolve_url(target, text if "://" in text else f"http://{text}")
    if "." not in text:
        if not _LABEL.fullmatch(text):
            raise UsageError(
                f"target {target!r} is not a Service name (lowercase letters, digits and '-')"
            )
        return Destination(f"{text}.{DEFAULT_NAMESPACE}.svc.cluster.local", "/", broker=False)
    routed = parse_host(text)
    if routed is None:
        raise UsageError(_not_routed(target))
    host = text.lower()
    return Destination(host, "/", broker=routed == BROKER_INGRESS_TARGET)


def _resolve_url(target: str, url: str) -> Destination:
    try:
        split = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"target {target!r} is not a URL: {exc}") from None
    if split.scheme != "http":
        raise UsageError(f"target {target!r}: the gateway speaks plain http, not {split.scheme}")
    host = split.hostname
    routed = parse_host(host or "")
    if host is None or routed is None:
        raise UsageError(_not_routed(target))
    path = split.path or "/"
    if split.query:
        path += f"?{split.query}"
    if _NOT_IN_PATH.search(path):
        raise UsageError(
            f"target {target!r}: spaces and control characters in a path must be percent-encoded"
        )
    return Destination(host, path, broker=routed == BROKER_INGRESS_TARGET, path_given=path != "/")


def _not_routed(target: str) -> str:
    return (
        f"target {target!r} names no Service or broker: use <service>, <service>.<namespace>, "
        f"a URL such as http://<service>.<namespace>.svc.cluster.local/path, "
        f"broker:<name>, broker:<namespace>/<name> or {BROKER_INGRESS}/<namespace>/<name>"
    )


def guess_content_type(payload: Payload) -> str:
    """The media type of --data: the file's by its name, else JSON, text or octet-stream."""
    if payload.filename:
        guessed, _ = mimetypes.guess_type(payload.filename)
        if guessed:
            return guessed
    try:
        text = payload.body.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    try:
        json.loads(text)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def parse_header(raw: str) -> tuple[str, str]:
    """'Name: value' from -H; UsageError naming it when it is not one."""
    name, colon, value = raw.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.fullmatch(name):
        raise UsageError(f"-H {raw!r}: write a header as 'Name: value'")
    value = value.strip()
    problem = _header_value_problem(value)
    if problem:
        raise UsageError(f"-H {raw!r}: {problem}")
    return name, value


def _header_value_problem(value: str) -> str | None:
    """Why value cannot be sent as a header value as it is (None: it can)."""
    if _CONTROL.search(value.replace("\t", "")):
        return "a header value cannot hold control characters such as line breaks"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "a header value must be Latin-1 text (percent-encode the rest)"
    return None


def parse_extension(raw: str) -> tuple[str, str]:
    """'name=value' from --extension; the name as CloudEvents spells attribute names."""
    name, equals, value = raw.partition("=")
    if not equals:
        raise UsageError(f"--extension {raw!r}: write an extension as name=value")
    if not _ATTRIBUTE.fullmatch(name):
        raise UsageError(
            f"--extension {raw!r}: the name {name!r} must be lowercase letters a-z and "
            "digits 0-9 (CloudEvents attribute names)"
        )
    if name in _OWN_FLAGS:
        raise UsageError(f"--extension {raw!r}: set {name} with {_OWN_FLAGS[name]}")
    if name == "data":
        raise UsageError(f"--extension {raw!r}: the data is given with --data")
    return name, value


def build(options: Options, new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> Request:
    """The request to send for these options (new_id names an event given no --id)."""
    try:
        dest = resolve_target(options.target)
    except UsageError as exc:
        raise UsageError(*exc.problems, *_check(options, None)) from None
    problems = _check(options, dest)
    extra, header_problems = _extra_headers(options)
    extensions: dict[str, str] = {}
    for raw in options.extensions:
        try:
            name, value = parse_extension(raw)
            extensions[name] = value
        except UsageError as exc:
            problems += exc.problems
    if problems or header_problems:
        raise UsageError(*problems, *header_problems)

    path = options.path if options.path is not None else dest.path
    path = path if path.startswith("/") else "/" + path
    content_type = options.content_type
    body = options.data.body if options.data is not None else b""
    if content_type is None and options.data is not None and body:
        content_type = guess_content_type(options.data)
    if options.event:
        method = "POST"
        event = _event(options, new_id, extensions, content_type, body)
        write = cloudevent.to_structured if options.structured else cloudevent.to_binary
        wire, body = write(event)
        headers = list(wire.items())
    else:
        method = (options.method or ("POST" if body or dest.broker else "GET")).upper()
        headers = [("Content-Type", content_type)] if content_type is not None else []
    if body or method in _BODY_METHODS:
        headers.append(("Content-Length", str(len(body))))
    head = [("Host", dest.host), ("User-Agent", USER_AGENT)]
    url = f"http://{GATEWAY_HOST}:{options.port}{path}"
    return Request(method, url, tuple(head + headers + extra), body)


# Headers -H may not give, and why.
_SET_BY_US = {
    "host": "it comes from the target",
    "content-length": "it is the length of the body",
}


def _extra_headers(options: Options) -> tuple[list[tuple[str, str]], list[str]]:
    """The -H headers, and every problem with them."""
    extra: list[tuple[str, str]] = []
    problems: list[str] = []
    for raw in options.headers:
        try:
            extra.append(parse_header(raw))
        except UsageError as exc:
            problems += exc.problems
    for name, _ in extra:
        lowered = name.lower()
        if lowered in _SET_BY_US:
            problems.append(f"-H {name}: set by knfn invoke ({_SET_BY_US[lowered]})")
        elif options.event and lowered.startswith("ce-"):
            problems.append(f"-H {name}: with --event, give attributes with --extension")
        elif options.event and lowered == "content-type":
            problems.append(f"-H {name}: with --event, give it as --content-type")
        elif lowered == "content-type" and options.content_type is not None:
            problems.append(f"-H {name}: Content-Type is given by --content-type already")
    return extra, problems


def _check(options: Options, dest: Destination | None) -> list[str]:
    """Flags that do not go together; every such problem, not just the first."""
    problems: list[str] = []
    if options.method is not None and not _TOKEN.fullmatch(options.method):
        problems.append(f"--method {options.method!r} is not an HTTP method")
    if options.path is not None and _NOT_IN_PATH.search(options.path):
        problems.append(
            f"--path {options.path!r}: spaces and control characters must be percent-encoded"
        )
    if options.content_type is not None:
        problem = _header_value_problem(options.content_type)
        if problem:
            problems.append(f"--content-type {options.content_type!r}: {problem}")
    if options.path is not None and dest is not None:
        if dest.broker:
            problems.append(
                f"--path {options.path!r}: a broker is addressed by /<namespace>/<name>; "
                "name it in the target (broker:<namespace>/<name>)"
            )
        elif dest.path_given:
            problems.append(
                f"--path {options.path!r}: the target URL has a path already ({dest.path})"
            )
    if options.event:
        if options.method is not None and options.method.upper() != "POST":
            problems.append(f"--method {options.method}: an event is sent with POST")
        problems += [
            f"--{name} is required with --event"
            for name, value in (("type", options.type), ("source", options.source))
            if value is None
        ]
    else:
        given = [
            flag
            for flag, value in (
                ("--type", options.type),
                ("--source", options.source),
                ("--id", options.id),
                ("--subject", options.subject),
            )
            if value is not None
        ]
        given += ["--extension"] if options.extensions else []
        given += ["--structured"] if options.structured else []
        if given:
            problems.append(f"{', '.join(given)}: only with --event (to send a CloudEvent)")
    return problems


def _event(
    options: Options,
    new_id: Callable[[], str],
    extensions: dict[str, str],
    content_type: str | None,
    body: bytes,
) -> Event:
    attributes = {
        "specversion": cloudevent.SPECVERSION,
        **extensions,  # may replace specversion: useful to see how a broker refuses 0.3
        "id": options.id if options.id is not None else new_id(),
        "source": options.source or "",
        "type": options.type or "",
    }
    if options.subject is not None:
        attributes["subject"] = options.subject
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return Event(attributes, body)


# -- rendering -------------------------------------------------------------------------------


def render(response: Response, quiet: bool = False) -> bytes:
    """Status line, headers and body as the terminal shows them; the body alone when quiet."""
    body = _pretty(response)
    if quiet:
        return body
    lines = [f"{response.version} {response.status} {response.reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers]
    head = ("\n".join(lines) + "\n\n").encode("latin-1", "replace")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return head + body


def describe(request: Request) -> str:
    """The request line and headers as curl -v shows them (for --verbose, on stderr)."""
    lines = [f"> {request.method} {request.path} HTTP/1.1"]
    lines += [f"> {name}: {value}" for name, value in request.headers]
    return "\n".join([*lines, ">"])


def _pretty(response: Response) -> bytes:
    content_type = response.header("content-type") or ""
    if not response.body or not cloudevent.is_json_media_type(content_type):
        return response.body
    try:
        value = json.loads(response.body)
    except ValueError:
        return response.body
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- the shell -------------------------------------------------------------------------------


def read_data(value: str, stdin: BinaryIO) -> Payload:
    """--data: '@file' reads the file, '@-' standard input, anything else is the text itself."""
    if not value.startswith("@"):
        return Payload(value.encode("utf-8"))
    name = value[1:]
    if name == "-":
        return Payload(stdin.read())
    try:
        return Payload(Path(name).read_bytes(), filename=name)
    except OSError as exc:
        raise UsageError(f"--data {value}: cannot read {name}: {exc.strerror}") from None


def send(request: Request, timeout: float) -> Response:
    """Send the request as built (headers in order, no others added) and read the answer."""
    split = urlsplit(request.url)
    conn = http.client.HTTPConnection(split.hostname or GATEWAY_HOST, split.port, timeout=timeout)
    where = f"{split.hostname}:{split.port}"
    try:
        conn.putrequest(request.method, request.path, skip_host=True, skip_accept_encoding=True)
        for name, value in request.headers:
            conn.putheader(name, value)
        conn.endheaders(request.body or None)
        answer = conn.getresponse()
        body = answer.read()
    except ConnectionRefusedError:
        raise Unreachable(
            f"nothing answers at {where}: is `knfn dev` running with its gateway on port "
            f"{split.port} (--port, env KNFN_PORT)?"
        ) from None
    except TimeoutError:
        raise Unreachable(f"{where} did not answer within {timeout:g}s (--timeout)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise InvokeError(f"{request.method} {request.url} failed: {exc!r}") from None
    finally:
        conn.close()
    version = "HTTP/1.0" if answer.version == 10 else "HTTP/1.1"
    return Response(version, answer.status, answer.reason, tuple(answer.getheaders()), body)


def run(
    options: Options,
    *,
    timeout: float,
    quiet: bool,
    verbose: bool,
    out: Callable[[bytes], None],
    err: Callable[[str], None],
) -> int:
    """Build, send, print; the exit code: 0 for a 2xx answer, 1 for any other."""
    request = build(options)
    if verbose:
        err(describe(request))
    response = send(request, timeout)
    out(render(response, quiet))
    return 0 if response.ok else 1

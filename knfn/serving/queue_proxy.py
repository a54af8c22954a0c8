"""The queue-proxy's header rules, as pure functions: what a replica is sent, what a probe is told.

A request on its way to a Knative pod passes the ingress, perhaps the activator, then the pod's
queue-proxy, whose reverse proxy (Go's net/http/httputil ReverseProxy, built by knative/serving
``pkg/http/proxy.go`` ``NewHeaderPruningReverseProxy``) hands it to the container. knfn's gateway
is all of them at once, so it applies their rules here:

- Hop-by-hop headers, and every header the ``Connection`` header names, are dropped (RFC 9110
  7.6.1; httputil ``removeHopByHopHeaders``). An upgrade (WebSocket) keeps ``Connection: Upgrade``
  and its ``Upgrade`` header, and ``TE: trailers`` survives, as httputil keeps them.
- Nothing is added that the caller did not send: no ``User-Agent`` (proxy.go sets it empty so Go's
  client adds none) and no ``Accept-Encoding`` (the queue-proxy's transport disables compression,
  knative.dev/pkg ``network/transports.go``).
- ``X-Forwarded-For`` gets the peer appended (httputil), and a ``Forwarded`` header is built from
  the ``X-Forwarded-*`` headers unless the caller sent one (serving
  ``pkg/queue/forwarded_shim.go``).
- ``K-Original-Host``, set by the activator to hide the Host from the mesh, becomes the Host again
  and is removed (knative.dev/networking ``pkg/http/header/header.go`` ``RewriteHostOut``, called
  by serving ``pkg/queue/handler.go``).
- Probes never reach the function (knative.dev/pkg ``network/handlers/drain.go``, serving
  ``pkg/queue/health/handler.go`` and ``pkg/activator/handler/probe_handler.go``): see
  :func:`probe_answer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Go's net/http/httputil hopHeaders (reverseproxy.go), lower-cased.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

PROBE_KEY = "K-Network-Probe"
HASH_KEY = "K-Network-Hash"
KUBELET_PROBE_KEY = "K-Kubelet-Probe"
ORIGINAL_HOST_KEY = "K-Original-Host"
KUBE_PROBE_UA_PREFIX = "kube-probe/"
# User agents of Knative's own health checks, answered by the queue-proxy's drainer like kubelet's
# (serving pkg/queue/sharedmain/handlers.go: HealthCheckUAPrefixes).
HEALTH_CHECK_UA_PREFIXES = ("Knative-Activator-Probe", "Knative-Autoscaling-Probe")
QUEUE = "queue"  # serving pkg/queue/constants.go: Name
ACTIVATOR = "activator"  # serving pkg/activator: Name
KPROBE_VALUE = "probe"  # knative.dev/networking ProbeValue

Headers = Iterable[tuple[str, str]]


def _get(headers: Headers, name: str) -> str | None:
    """The first value of header `name` (case-insensitive), as Go's Header.Get."""
    lower = name.lower()
    return next((v for k, v in headers if k.lower() == lower), None)


def _tokens(values: Iterable[str]) -> set[str]:
    """The comma-separated tokens of header values, trimmed and lower-cased."""
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def connection_named(headers: Headers) -> set[str]:
    """Lower-cased names of the headers the ``Connection`` header lists."""
    return _tokens(v for k, v in headers if k.lower() == "connection")


def upgrade_type(headers: Headers) -> str | None:
    """The protocol an upgrade request asks for (``Connection: upgrade`` plus ``Upgrade``), else
    None: httputil's ``upgradeType``."""
    headers = list(headers)
    if "upgrade" not in connection_named(headers):
        return None
    return _get(headers, "Upgrade") or None


def tunnelled_upgrade(headers: Headers) -> str | None:
    """The upgrade knfn tunnels to the replica: WebSocket (and aiohttp's raw ``tcp``), the ones
    aiohttp's server parser hands over as a byte stream. ``h2c`` is not one: Knative's h2c
    handler takes that upgrade itself and never forwards it (knative.dev/pkg network/h2c.go), and a
    server may ignore an Upgrade (RFC 9110 7.8), so the request is served over HTTP/1.1."""
    kind = upgrade_type(headers)
    return kind if kind is not None and kind.strip().lower() in TUNNELLED else None


TUNNELLED = frozenset({"websocket", "tcp"})


def end_to_end(headers: Headers) -> list[tuple[str, str]]:
    """The headers without hop-by-hop ones and those ``Connection`` names (for requests and
    responses alike)."""
    headers = list(headers)
    drop = HOP_BY_HOP | connection_named(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def forwarded(x_forwarded_for: str, proto: str, host: str) -> str:
    """A ``Forwarded`` header from ``X-Forwarded-For``/``-Proto``/``-Host`` as queue-proxy's shim
    builds it: the first node with host and proto, each later node its own ``for=``; an address
    with a colon (IPv6) quoted in brackets. Empty when there is nothing to say."""
    nodes = [_node(n) for n in x_forwarded_for.split(",")]
    first = [f"for={nodes[0]}"] if nodes[0] else []
    if host.strip():
        first.append(f"host={host.strip()}")
    if proto.strip():
        first.append(f"proto={proto.strip()}")
    elements = [";".join(first), *(f"for={n}" for n in nodes[1:])]
    return ", ".join(elements)


def _node(node: str) -> str:
    node = node.strip()
    return f'"[{node}]"' if ":" in node else node


@dataclass(frozen=True)
class Outgoing:
    """What the replica is sent: the Host and the other headers, in order."""

    host: str
    headers: list[tuple[str, str]]


def request_headers(headers: Headers, *, peer: str, scheme: str, host: str) -> Outgoing:
    """The headers a replica receives for a request that arrived with `headers` from `peer`
    over `scheme` for `host` (see the module docstring for each rule)."""
    incoming = list(headers)
    upgrade = tunnelled_upgrade(incoming)
    trailers = "trailers" in _tokens(v for k, v in incoming if k.lower() == "te")
    kept = [(k, v) for k, v in end_to_end(incoming) if k.lower() != "host"]

    # The ingress's part: X-Forwarded-For gets the peer, Proto and Host are said once.
    prior = [v for k, v in kept if k.lower() == "x-forwarded-for"]
    kept = [(k, v) for k, v in kept if k.lower() not in _X_FORWARDED]
    chain = ", ".join([*prior, peer]) if peer else ", ".join(prior)
    xfp, xfh = scheme, host
    kept += [("X-Forwarded-For", chain), ("X-Forwarded-Proto", xfp), ("X-Forwarded-Host", xfh)]

    # The queue-proxy's part: the Forwarded shim, then K-Original-Host back to Host.
    if not (_get(kept, "Forwarded") or "").strip():
        value = forwarded(chain, xfp, xfh)
        if value:
            kept = [(k, v) for k, v in kept if k.lower() != "forwarded"]
            kept.append(("Forwarded", value))
    original = _get(kept, ORIGINAL_HOST_KEY)
    if original:
        host = original
        kept = [(k, v) for k, v in kept if k.lower() != ORIGINAL_HOST_KEY.lower()]

    if upgrade is not None:
        kept += [("Connection", "Upgrade"), ("Upgrade", upgrade)]
    if trailers:
        kept.append(("TE", "trailers"))
    return Outgoing(host, kept)


_X_FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})


@dataclass(frozen=True)
class ProbeAnswer:
    """knfn's answer to a probe, in place of the function's."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None


def is_probe(headers: Headers) -> bool:
    """A Kubernetes or Knative probe (networking's ``IsProbe``), or one of Knative's own health
    checks: never the function's business."""
    headers = list(headers)
    return _is_health_check(headers) or bool(_get(headers, PROBE_KEY))


def _is_health_check(headers: list[tuple[str, str]]) -> bool:
    agent = _get(headers, "User-Agent") or ""
    return (
        agent.startswith(KUBE_PROBE_UA_PREFIX)
        or bool(_get(headers, KUBELET_PROBE_KEY))
        or agent.startswith(HEALTH_CHECK_UA_PREFIXES)
    )


def probe_answer(headers: Headers, *, ready: bool) -> ProbeAnswer | None:
    """What knfn answers a probe (None: not a probe, forward it). `ready`: the revision has a
    replica ready.

    - kubelet's probes and Knative's health checks get the queue-proxy's health answer:
      ``K-Network-Probe: queue`` is required (400 otherwise), then 200 ``queue`` when ready, 503
      when not (drain.go ``isHealthCheckRequest``, health/handler.go ``ProbeHandler``);
    - ``K-Network-Probe: probe`` (the ingress's) echoes ``K-Network-Hash``, which it requires
      (drain.go ``serveKProbe``);
    - any other ``K-Network-Probe`` is answered as the activator answers it: 200 ``activator`` for
      its own name, 400 for anything else (activator/handler/probe_handler.go).
    """
    headers = list(headers)
    value = _get(headers, PROBE_KEY) or ""
    if _is_health_check(headers):
        if value != QUEUE:
            return ProbeAnswer(400, f"unexpected probe header value: {value}".encode())
        return ProbeAnswer(200, QUEUE.encode()) if ready else ProbeAnswer(503)
    if not value:
        return None
    if value == KPROBE_VALUE:
        digest = _get(headers, HASH_KEY) or ""
        if not digest:
            message = f'a probe request must contain a non-empty "{HASH_KEY}" header'
            return ProbeAnswer(400, message.encode())
        return ProbeAnswer(200, headers={HASH_KEY: digest})
    if value == ACTIVATOR:
        return ProbeAnswer(200, ACTIVATOR.encode())
    return ProbeAnswer(400, f'unexpected probe header value: "{value}"'.encode())

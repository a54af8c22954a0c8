"""How the eventing runtime sends an event: cluster URLs through the gateway, others directly.

One sender type serves the dispatchers, the flows and the PingSources, so that a delivery to a
Knative Service always takes the gateway's path (throttler, activator, scale from zero).

The headers of a delivery, as knative/eventing sends them (pure functions here):

* Pass-through (``pkg/utils/headers.go`` PassThroughHeaders): of the request to the broker
  ingress, ``X-Request-Id``, ``Retry-After`` and every ``Knative-*`` and ``X-B3-*`` header go
  on to the subscriber (the ingress, the channel and the broker filter each keep only these:
  ``pkg/broker/ingress/ingress_handler.go``, ``pkg/channel/event_receiver.go``,
  ``pkg/broker/filter/filter_handler.go``). The trace context (``traceparent``,
  ``tracestate``, ``baggage``: the TraceContext and Baggage propagators of knative.dev/pkg
  ``observability/tracing/provider.go``) travels too; with tracing off, Knative's default, the
  span is not recording and the subscriber gets the ingress's values unchanged, as here.
* Every request to a subscriber carries ``Prefer: reply`` (``pkg/kncloudevents/event_dispatcher.go``
  send) and ``Kn-Namespace``, the Trigger's namespace (``filter_handler.go`` send; the channel's
  fan-out to a dead-letter sink sets it too, ``pkg/channel/fanout/fanout_event_handler.go``).
  A dead letter has no ``Prefer: reply``: the dispatcher adds it for the destination only.
* Nothing else: aiohttp's own ``User-Agent``, ``Accept``, ``Accept-Encoding`` and its
  ``Content-Type: application/octet-stream`` for an event without ``datacontenttype`` are not
  sent (:data:`NOT_AUTO`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from knfn.routing import parse_host

# Without spec.delivery.timeout an attempt has no time limit, as in Knative: knative/eventing
# pkg/kncloudevents/retries.go (RetryConfigFromDeliverySpec) sets RequestTimeout only from
# DeliverySpec.Timeout, event_dispatcher.go (DoWithRetries) gives the HTTP client a Timeout only
# when RequestTimeout is not 0, and the client of http_client.go (createNewClient) has none;
# config/core/configmaps/default-broker.yaml (config-br-defaults) sets retry and backoff only.
# A delivery to a Knative Service is still bounded by the revision's timeoutSeconds (the
# gateway answers 504), and a hung subscriber delays only its own deliveries (dispatcher.py).
DEFAULT_ATTEMPT_TIMEOUT: float | None = None

# pkg/utils/headers.go: forwardHeaders and forwardPrefixes (lowercase).
FORWARD_HEADERS = frozenset({"x-request-id", "retry-after"})
FORWARD_PREFIXES = ("knative-", "x-b3-")
# The W3C TraceContext and Baggage propagators' fields.
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
KN_NAMESPACE = "Kn-Namespace"  # pkg/apis/http.go KnNamespaceHeader
PREFER = "Prefer"
# Headers aiohttp adds by itself when a request lacks them; none of them is Knative's.
NOT_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def canonical(name: str) -> str:
    """A header name as Go's net/http writes it (textproto.CanonicalMIMEHeaderKey)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _kept(headers: Iterable[tuple[str, str]], keep: Callable[[str], bool]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers:
        if keep(name.lower()):
            key = canonical(name)
            # A repeated header becomes one line, its values comma-separated (RFC 9110 5.3).
            kept[key] = f"{kept[key]}, {value}" if key in kept else value
    return kept


def _forwarded(lower: str) -> bool:
    return lower in FORWARD_HEADERS or lower.startswith(FORWARD_PREFIXES)


def pass_through(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers of a request to the broker ingress that travel with the event to its
    subscribers: PassThroughHeaders' set and the trace context (module docstring)."""
    return _kept(headers, lambda lower: _forwarded(lower) or lower in TRACE_HEADERS)


def reply_headers(
    response: Iterable[tuple[str, str]], original: Mapping[str, str]
) -> dict[str, str]:
    """The headers a reply event enters the broker with: the pass-through headers of the
    subscriber's response (event_dispatcher.go send: responseAdditionalHeaders), and the
    trace context of the event it answers (the reply is sent within the same trace)."""
    headers = _kept(response, _forwarded)
    headers.update(_kept(original.items(), lambda lower: lower in TRACE_HEADERS))
    return headers


def delivery_headers(
    event_headers: Mapping[str, str], namespace: str, *, prefer_reply: bool
) -> dict[str, str]:
    """The headers added to a delivery's CloudEvent headers: the event's pass-through headers,
    ``Kn-Namespace`` and, to a subscriber (not to a dead-letter sink), ``Prefer: reply``."""
    headers = dict(event_headers)
    headers[KN_NAMESPACE] = namespace
    if prefer_reply:
        headers[PREFER] = "reply"
    return headers


# (status or None for no answer, response headers, response body, error text)
SendResult = tuple[int | None, Mapping[str, str], bytes, str | None]
Sender = Callable[[str, Mapping[str, str], bytes, float | None], Awaitable[SendResult]]


@functools.lru_cache(maxsize=1024)
def _route(url: str, gateway: str) -> tuple[str, str | None]:
    """Where a request to url goes, and the Host it names: a cluster URL to the gateway (by
    its host), any other as it is. Cached: a dispatcher sends to a few URLs, over and over."""
    parsed = URL(url)
    if parsed.host and parse_host(parsed.host) is not None:
        return gateway + parsed.path_qs, parsed.host
    return url, None


@dataclass(frozen=True)
class Gatewayed:
    """Sends deliveries: cluster URLs through the gateway (by Host header), others directly."""

    session: aiohttp.ClientSession
    gateway: str

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> SendResult:
        target, host = _route(url, self.gateway)
        send_headers = dict(headers)
        if host is not None:
            send_headers["Host"] = host
        try:
            async with self.session.post(
                target,
                data=body,
                headers=send_headers,
                skip_auto_headers=NOT_AUTO,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                return resp.status, dict(resp.headers), await resp.read(), None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return None, {}, b"", f"{exc.__class__.__name__}: {exc}"

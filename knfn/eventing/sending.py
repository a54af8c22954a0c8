"""How the eventing runtime sends an event: cluster URLs through the gateway, others directly.

One sender type serves the dispatchers, the flows and the PingSources, so that a delivery to a
Knative Service always takes the gateway's path (throttler, activator, scale from zero).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
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

# (status or None for no answer, response headers, response body, error text)
SendResult = tuple[int | None, Mapping[str, str], bytes, str | None]
Sender = Callable[[str, Mapping[str, str], bytes, float | None], Awaitable[SendResult]]


@dataclass(frozen=True)
class Gatewayed:
    """Sends deliveries: cluster URLs through the gateway (by Host header), others directly."""

    session: aiohttp.ClientSession
    gateway: str

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> SendResult:
        target = url
        send_headers = dict(headers)
        parsed = URL(url)
        if parsed.host and parse_host(parsed.host) is not None:
            target = self.gateway + parsed.path_qs
            send_headers["Host"] = parsed.host
        try:
            async with self.session.post(
                target,
                data=body,
                headers=send_headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                return resp.status, dict(resp.headers), await resp.read(), None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return None, {}, b"", f"{exc.__class__.__name__}: {exc}"

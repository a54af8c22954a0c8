"""Host parsing: the URLs Knative gives a Service, and nothing else."""

from __future__ import annotations

import pytest

from knfn.routing import Target, parse_host


@pytest.mark.parametrize(
    "host",
    [
        "query.default.svc.cluster.local",
        "query.default.svc",
        "query.default.localhost",
        "query.default.localhost:8080",
        "query.default",
        "Query.Default.svc.cluster.local.",
    ],
)
def test_knative_hosts_name_the_service(host: str) -> None:
    """Every Knative spelling of a Service's host resolves to (namespace, service)."""
    assert parse_host(host) == Target(namespace="default", service="query")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8080", "www.example.com", "a.b.c", ""])
def test_other_hosts_name_no_service(host: str) -> None:
    """A host that is not a Service's (an IP, a bare name, a foreign domain) names none."""
    assert parse_host(host) is None

"""The queue-proxy's header rules (knfn/serving/queue_proxy.py), each against its upstream file."""

from __future__ import annotations

from knfn.serving import queue_proxy as qp


def outgoing(headers: list[tuple[str, str]], peer: str = "10.0.0.1") -> qp.Outgoing:
    return qp.request_headers(headers, peer=peer, scheme="http", host="fn.default.localhost")


def names(out: qp.Outgoing) -> set[str]:
    return {k.lower() for k, _ in out.headers}


def value(out: qp.Outgoing, name: str) -> str | None:
    return next((v for k, v in out.headers if k.lower() == name.lower()), None)


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    """httputil removeHopByHopHeaders: the fixed list and whatever Connection names."""
    out = outgoing([("Connection", "close, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "5"),
                    ("Proxy-Authorization", "x"), ("Transfer-Encoding", "chunked"),
                    ("X-Kept", "yes")])  # fmt: skip
    assert not names(out) & {"connection", "x-secret", "keep-alive", "proxy-authorization",
                             "transfer-encoding"}  # fmt: skip
    assert value(out, "X-Kept") == "yes"


def test_nothing_is_added_that_the_caller_did_not_send() -> None:
    """No User-Agent or Accept-Encoding appears (proxy.go, the transport's DisableCompression)."""
    out = outgoing([("Accept", "text/html")])
    assert not names(out) & {"user-agent", "accept-encoding"}
    assert value(out, "Accept") == "text/html"


def test_forwarded_is_built_as_queue_proxys_shim_builds_it() -> None:
    """forwarded_shim.go: the first node carries host and proto, later nodes their own for=."""
    out = outgoing([("X-Forwarded-For", "203.0.113.9, 2001:db8::1")])
    assert value(out, "X-Forwarded-For") == "203.0.113.9, 2001:db8::1, 10.0.0.1"
    assert value(out, "Forwarded") == (
        'for=203.0.113.9;host=fn.default.localhost;proto=http, for="[2001:db8::1]", for=10.0.0.1'
    )


def test_a_forwarded_header_the_caller_sent_is_kept() -> None:
    """forwarded_shim.go is a no-op when Forwarded is present."""
    out = outgoing([("Forwarded", "for=198.51.100.7")])
    assert [v for k, v in out.headers if k == "Forwarded"] == ["for=198.51.100.7"]


def test_forwarded_from_nothing() -> None:
    """An empty X-Forwarded-For gives no for= element, only host and proto."""
    assert qp.forwarded("", "https", "a.example") == "host=a.example;proto=https"
    assert qp.forwarded("", "", "") == ""


def test_k_original_host_becomes_the_host() -> None:
    """networking header.go RewriteHostOut: the header is the Host, and is removed."""
    out = outgoing([("K-Original-Host", "shop.example.com")])
    assert out.host == "shop.example.com"
    assert "k-original-host" not in names(out)
    assert outgoing([]).host == "fn.default.localhost"


def test_websocket_upgrade_keeps_connection_and_upgrade() -> None:
    """httputil keeps Connection: Upgrade and Upgrade on an upgrade; h2c is not tunnelled."""
    ws = [("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")]
    assert qp.tunnelled_upgrade(ws) == "websocket"
    out = outgoing(ws)
    assert ("Connection", "Upgrade") in out.headers and ("Upgrade", "websocket") in out.headers
    h2c = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "x")]
    assert qp.upgrade_type(h2c) == "h2c"
    assert qp.tunnelled_upgrade(h2c) is None
    assert not names(outgoing(h2c)) & {"connection", "upgrade", "http2-settings"}
    assert qp.upgrade_type([("Upgrade", "websocket")]) is None  # Connection must name it


def test_te_trailers_survives() -> None:
    """httputil keeps TE: trailers, dropping any other TE."""
    assert value(outgoing([("TE", "trailers, deflate")]), "TE") == "trailers"
    assert value(outgoing([("TE", "deflate")]), "TE") is None


def test_end_to_end_response_headers() -> None:
    """Response headers lose hop-by-hop ones too."""
    got = qp.end_to_end([("Connection", "X-Tmp"), ("X-Tmp", "1"), ("Content-Type", "text/plain")])
    assert got == [("Content-Type", "text/plain")]


def test_kubelet_probe_gets_the_queue_proxy_health_answer() -> None:
    """drain.go + health/handler.go: K-Network-Probe: queue required; 200 queue, 503 not ready."""
    kube = [("User-Agent", "kube-probe/1.31"), ("K-Network-Probe", "queue")]
    assert qp.probe_answer(kube, ready=True) == qp.ProbeAnswer(200, b"queue")
    assert qp.probe_answer(kube, ready=False) == qp.ProbeAnswer(503)
    bare = qp.probe_answer([("User-Agent", "kube-probe/1.31")], ready=True)
    assert bare is not None and bare.status == 400
    legacy = qp.probe_answer([("K-Kubelet-Probe", "1"), ("K-Network-Probe", "queue")], ready=True)
    assert legacy == qp.ProbeAnswer(200, b"queue")
    activator = [("User-Agent", "Knative-Activator-Probe"), ("K-Network-Probe", "queue")]
    assert qp.probe_answer(activator, ready=True) == qp.ProbeAnswer(200, b"queue")


def test_network_probe_echoes_its_hash() -> None:
    """drain.go serveKProbe: K-Network-Hash required and echoed."""
    ok = qp.probe_answer([("K-Network-Probe", "probe"), ("K-Network-Hash", "h1")], ready=False)
    assert ok == qp.ProbeAnswer(200, headers={"K-Network-Hash": "h1"})
    missing = qp.probe_answer([("K-Network-Probe", "probe")], ready=True)
    assert missing is not None and missing.status == 400


def test_other_probe_values_get_the_activators_answer() -> None:
    """activator/handler/probe_handler.go: its own name 200, anything else 400."""
    assert qp.probe_answer([("K-Network-Probe", "activator")], ready=True) == qp.ProbeAnswer(
        200, b"activator"
    )
    other = qp.probe_answer([("K-Network-Probe", "queue")], ready=True)
    assert other is not None and other.status == 400


def test_ordinary_requests_are_not_probes() -> None:
    """Without a probe header or a probe user agent, the function answers."""
    plain = [("User-Agent", "curl/8"), ("Accept", "*/*")]
    assert qp.probe_answer(plain, ready=True) is None
    assert not qp.is_probe(plain)

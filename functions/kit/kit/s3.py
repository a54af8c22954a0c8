"""S3 (MinIO, SeaweedFS, AWS) as a backing service attached by URL (factor 4).

The client is made on first use, not at import: the framework imports the function in a
parent process that forks workers, and a client must not cross a fork. Timeouts are short and
retries few, so "S3 is down" becomes an `S3Unavailable` (503) within a couple of seconds
instead of a request that hangs for minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import boto3
import botocore.config
import botocore.exceptions

from kit import config, shutdown
from kit.errors import KitError, NotFound, ServiceUnavailable


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and how to sign requests to it."""

    endpoint_url: Annotated[
        str | None,
        config.env("S3_ENDPOINT_URL", config.http_url, default=None, doc="S3 API URL; unset: AWS"),
    ]
    public_endpoint_url: Annotated[
        str | None,
        config.env(
            "S3_PUBLIC_ENDPOINT_URL",
            config.http_url,
            default=None,
            doc="S3 URL as clients see it, for presigned URLs (default: S3_ENDPOINT_URL)",
        ),
    ]
    region: Annotated[str, config.env("AWS_REGION", config.non_empty, default="us-east-1")]
    access_key_id: Annotated[str | None, config.env("AWS_ACCESS_KEY_ID", default=None, secret=True)]
    secret_access_key: Annotated[
        str | None, config.env("AWS_SECRET_ACCESS_KEY", default=None, secret=True)
    ]

    def problems(self) -> list[config.Problem]:
        """The key id and the secret come as a pair, or not at all (default AWS chain)."""
        if self.access_key_id is not None and self.secret_access_key is None:
            return [config.Problem("AWS_SECRET_ACCESS_KEY", "is required with AWS_ACCESS_KEY_ID")]
        if self.access_key_id is None and self.secret_access_key is not None:
            return [config.Problem("AWS_ACCESS_KEY_ID", "is required with AWS_SECRET_ACCESS_KEY")]
        return []


class S3Unavailable(ServiceUnavailable):
    """The S3 endpoint could not be reached (refused, timed out, connection dropped)."""


class ObjectNotFound(NotFound):
    """The bucket has no object under that key."""


class S3Error(KitError):
    """S3 answered with an error other than "not found" (no such bucket, access denied...)."""

    status = 502


@dataclass(frozen=True)
class StoredObject:
    """An object read back from S3."""

    body: bytes
    content_type: str | None
    size: int


class ObjectStore:
    """Thin wrapper over a boto3 S3 client that speaks in the kit's errors."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 10.0,
        max_attempts: int = 2,
    ) -> None:
        self.settings = settings
        self._config = botocore.config.Config(
            region_name=settings.region,
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        self._lock = threading.Lock()
        self._client: Any = None
        self._presigner: Any = None

    def _make(self, endpoint_url: str | None) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=self.settings.secret_access_key,
            config=self._config,
        )

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use and closed at shutdown."""
        with self._lock:
            if self._client is None:
                self._client = self._make(self.settings.endpoint_url)
                shutdown.register("s3", self.close)
            return self._client

    def _presign_client(self) -> Any:
        public = self.settings.public_endpoint_url
        if public is None or public == self.settings.endpoint_url:
            return self.client
        with self._lock:
            if self._presigner is None:
                # Presigning is local computation; this client never opens a connection.
                self._presigner = self._make(public)
            return self._presigner

    def close(self) -> None:
        """Close the client's connections; a later call makes a new client."""
        with self._lock:
            client, self._client, self._presigner = self._client, None, None
        if client is not None:
            shutdown.unregister(self.close)
            client.close()

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """Store `body` under `key`."""
        with self._translate(bucket, key):
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def get(self, bucket: str, key: str) -> StoredObject:
        """Read the object under `key`; `ObjectNotFound` if there is none."""
        with self._translate(bucket, key):
            answer = self.client.get_object(Bucket=bucket, Key=key)
            body = answer["Body"].read()
        return StoredObject(body=body, content_type=answer.get("ContentType"), size=len(body))

    def exists(self, bucket: str, key: str) -> bool:
        """Whether an object is stored under `key`."""
        try:
            with self._translate(bucket, key):
                self.client.head_object(Bucket=bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    def presign_get(self, bucket: str, key: str, expires_seconds: int) -> str:
        """A URL that lets anyone GET the object until it expires."""
        with self._translate(bucket, key):
            url: str = self._presign_client().generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
            )
        return url

    @contextmanager
    def _translate(self, bucket: str, key: str) -> Iterator[None]:
        """Map botocore's exceptions onto the kit's, naming the endpoint, bucket and key."""
        endpoint = self.settings.endpoint_url or "AWS S3"
        try:
            yield
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as e:
            raise S3Unavailable(
                f"S3 is unavailable at {endpoint}: {e}", endpoint=endpoint, bucket=bucket
            ) from e
        except botocore.exceptions.ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(
                    f"no object {key!r} in bucket {bucket!r}", bucket=bucket, key=key
                ) from e
            raise S3Error(
                f"S3 refused the request for {bucket}/{key}: {code} {error.get('Message', '')}",
                bucket=bucket,
                key=key,
                code=code,
            ) from e
        except botocore.exceptions.BotoCoreError as e:
            raise S3Error(f"S3 request failed: {e}", bucket=bucket, key=key) from e

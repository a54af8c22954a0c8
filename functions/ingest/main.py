"""ingest: accept an upload, store it in S3 under its content hash, announce it as an event.

`POST /` with the file as the raw body (Content-Type is the file's type) or as the `file`
field of a multipart/form-data form. The type must be allowed and the size within the limit.
The object is stored at `<sha256>.<ext>` (same bytes, same key), then a
`dev.knfn.object.stored` CloudEvent goes to K_SINK. The answer is 201 with what was stored
and the event id.

Order matters: nothing is announced before it is stored. S3 down gives 503 and no event;
a sink that never accepts the event gives 502, and the answer says the object is stored.
"""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from dataclasses import dataclass
from typing import Annotated

import flask
import kit
from kit import binding, config, events, handlers, s3
from kit import logging as kit_logging
from kit.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

EVENT_TYPE = "dev.knfn.object.stored"
EVENT_SOURCE = "/functions/ingest"
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "text/plain": "txt",
    "application/pdf": "pdf",
}
DEFAULT_TYPES = frozenset(EXTENSIONS)


@dataclass(frozen=True)
class Settings:
    """What ingest reads from its environment."""

    log: kit_logging.LogSettings
    s3: s3.S3Settings
    sink: events.SinkSettings
    bucket: Annotated[str, config.env("S3_BUCKET", config.non_empty, default="uploads")]
    max_bytes: Annotated[
        int, config.env("INGEST_MAX_BYTES", config.integer(min=1), default=10_485_760)
    ]
    allowed_types: Annotated[
        frozenset[str],
        config.env("INGEST_ALLOWED_TYPES", config.string_set, default=DEFAULT_TYPES),
    ]


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
STORE = s3.ObjectStore(SETTINGS.s3)
EMITTER = events.Emitter(SETTINGS.sink)
log = kit_logging.get_logger("ingest")


@dataclass(frozen=True)
class Upload:
    """The bytes received and the media type they claim to be."""

    body: bytes
    content_type: str


def extension(content_type: str) -> str:
    """The file extension for a media type: png for image/png, bin when unknown."""
    known = EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type)
    return (known or "bin").lstrip(".")


def object_key(body: bytes, content_type: str) -> tuple[str, str]:
    """(key, sha256): the key is the hex SHA-256 of the content plus the type's extension."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{digest}.{extension(content_type)}", digest


def read_upload(request: flask.Request) -> Upload:
    """The upload from a raw body or a multipart `file` field, within the size limit."""
    limit = SETTINGS.max_bytes
    content_type = binding.media_type(request.content_type)
    if content_type == "multipart/form-data":
        try:
            handlers.read_body(request, limit + MULTIPART_OVERHEAD)
        except PayloadTooLarge as error:
            raise PayloadTooLarge(
                f"upload exceeds the limit of {limit} bytes", limit=limit, size=error.fields["size"]
            ) from error
        part = request.files.get("file")
        if part is None:
            raise BadRequest("multipart upload has no 'file' field", field="file")
        body = part.stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(
                f"file exceeds the limit of {limit} bytes", limit=limit, size=f">{limit}"
            )
        part_type = binding.media_type(part.mimetype)
        if part_type in ("", "application/octet-stream") and part.filename:
            part_type = mimetypes.guess_type(part.filename)[0] or part_type
        return Upload(body=body, content_type=part_type)
    body = handlers.read_body(request, limit)
    return Upload(body=body, content_type=content_type)


@kit.http_function
def ingest(request: flask.Request) -> flask.Response:
    """Validate, store, announce; 201 with the object's description and the event id."""
    handlers.require_method(request, "POST")
    upload = read_upload(request)
    if not upload.body:
        raise BadRequest("empty upload: the body has no bytes")
    if not upload.content_type:
        raise UnsupportedMediaType(
            "Content-Type is required", allowed=sorted(SETTINGS.allowed_types)
        )
    if upload.content_type not in SETTINGS.allowed_types:
        raise UnsupportedMediaType(
            f"content type {upload.content_type} is not allowed",
            content_type=upload.content_type,
            allowed=sorted(SETTINGS.allowed_types),
        )

    key, digest = object_key(upload.body, upload.content_type)
    stored = {
        "bucket": SETTINGS.bucket,
        "key": key,
        "size": len(upload.body),
        "content_type": upload.content_type,
        "sha256": digest,
    }
    STORE.put(SETTINGS.bucket, key, upload.body, upload.content_type)
    log.info("object stored", **stored)

    event = binding.new_event(
        type=EVENT_TYPE, source=EVENT_SOURCE, subject=key, data=stored, id=str(uuid.uuid4())
    )
    try:
        EMITTER.emit(event)
    except events.EmitError as error:
        error.message = f"object stored as {SETTINGS.bucket}/{key}, but {error.message}"
        error.fields.update(stored=True, **stored)
        raise
    return handlers.json_response({**stored, "event_id": event["id"]}, status=201)

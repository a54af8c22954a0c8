"""thumbnail: make a small PNG of every stored image and announce it.

A CloudEvent consumer (behind a Trigger on `dev.knfn.object.stored`). For an image it reads
the object, shrinks it to fit THUMBNAIL_SIZE x THUMBNAIL_SIZE, stores the PNG at
`thumbnails/<key without extension>.png` and replies with a `dev.knfn.thumbnail.created`
event, which the broker routes on (to catalog). Anything that is not an image is acknowledged
with an empty answer. A corrupt image gets 422: retrying would not help, so the broker should
not, and the event goes to the dead-letter sink instead.
"""

from __future__ import annotations

import io
import posixpath
import uuid
import warnings
from dataclasses import dataclass
from typing import Annotated

import kit
from cloudevents.http import CloudEvent
from kit import binding, config, handlers, s3
from kit import logging as kit_logging
from kit.errors import Unprocessable
from PIL import Image, UnidentifiedImageError

STORED_TYPE = "dev.knfn.object.stored"
EVENT_TYPE = "dev.knfn.thumbnail.created"
EVENT_SOURCE = "/functions/thumbnail"
THUMBNAIL_PREFIX = "thumbnails/"
PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})
# What Pillow raises for bytes that are not a readable image (truncated, corrupt, a bomb).
UNREADABLE = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
    OSError,
    SyntaxError,
    ValueError,
)


@dataclass(frozen=True)
class Settings:
    """What thumbnail reads from its environment."""

    log: kit_logging.LogSettings
    s3: s3.S3Settings
    size: Annotated[int, config.env("THUMBNAIL_SIZE", config.integer(min=1, max=4096), default=128)]


SETTINGS = config.load(Settings)
kit_logging.configure(SETTINGS.log)
STORE = s3.ObjectStore(SETTINGS.s3)
log = kit_logging.get_logger("thumbnail")


@dataclass(frozen=True)
class Thumbnail:
    """A rendered thumbnail: PNG bytes and its size in pixels."""

    png: bytes
    width: int
    height: int


def thumbnail_key(key: str) -> str:
    """`photos/cat.jpg` -> `thumbnails/photos/cat.png`."""
    stem, _ = posixpath.splitext(key)
    return f"{THUMBNAIL_PREFIX}{stem}.png"


def render(original: bytes, size: int) -> Thumbnail:
    """Shrink an image to fit size x size (never enlarging), as PNG; 422 if it cannot be read."""
    try:
        with warnings.catch_warnings():
            # A decompression bomb is refused, not just warned about.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(original)) as opened:
                opened.load()
                image: Image.Image = opened
                image.thumbnail((size, size))
                if image.mode not in PNG_MODES:
                    image = image.convert("RGBA")
                out = io.BytesIO()
                image.save(out, format="PNG", optimize=True)
                return Thumbnail(png=out.getvalue(), width=image.width, height=image.height)
    except UNREADABLE as error:
        reason = type(error).__name__
        raise Unprocessable(f"cannot read the image: {error}", reason=reason) from error


def reply_id(event: CloudEvent) -> str:
    """The reply's id, derived from the event's identity: a redelivered event gets the same
    reply, which consumers that dedupe on (source, id) then apply only once."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event['source']}#{event['id']}#thumbnail"))


@kit.cloudevent_function
def thumbnail(event: CloudEvent) -> CloudEvent | None:
    """Thumbnail an image object; acknowledge anything else with no reply."""
    if event["type"] != STORED_TYPE:
        log.info("event ignored: not an object.stored event")
        return None
    data = handlers.data_object(event)
    handlers.require_fields(event, data, [("bucket", str), ("key", str), ("content_type", str)])
    bucket, key, content_type = data["bucket"], data["key"], data["content_type"]
    if not content_type.startswith("image/"):
        log.info("event ignored: not an image", key=key, content_type=content_type)
        return None
    if key.startswith(THUMBNAIL_PREFIX):
        log.info("event ignored: already a thumbnail", key=key)
        return None

    original = STORE.get(bucket, key)
    try:
        made = render(original.body, SETTINGS.size)
    except Unprocessable as error:
        error.fields.update(bucket=bucket, key=key)
        log.error("corrupt image", bucket=bucket, key=key, error=error.message)
        raise
    target = thumbnail_key(key)
    STORE.put(bucket, target, made.png, "image/png")
    log.info("thumbnail stored", bucket=bucket, key=key, thumbnail_key=target)
    return binding.new_event(
        type=EVENT_TYPE,
        source=EVENT_SOURCE,
        subject=key,
        id=reply_id(event),
        data={
            "bucket": bucket,
            "key": key,
            "thumbnail_key": target,
            "width": made.width,
            "height": made.height,
        },
    )

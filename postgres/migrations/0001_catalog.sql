-- The catalog: one row per stored object, written by the catalog function from
-- dev.knfn.object.stored and dev.knfn.thumbnail.created events, read by the query function.
-- Either event may arrive first, so every column an event fills is nullable.
CREATE TABLE objects (
    bucket           text        NOT NULL,
    key              text        NOT NULL,
    size             bigint      CHECK (size >= 0),
    content_type     text,
    sha256           text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    thumbnail_key    text,
    thumbnail_width  integer,
    thumbnail_height integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key)
);

-- The query function lists one bucket newest first and pages with a keyset cursor.
CREATE INDEX objects_newest_first ON objects (bucket, created_at DESC, key DESC);

-- Events a consumer has applied, keyed by CloudEvents identity (source, id): delivery is
-- at-least-once, so a redelivered event must find itself here and change nothing.
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    source       text        NOT NULL,
    id           text        NOT NULL,
    type         text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source, id)
);

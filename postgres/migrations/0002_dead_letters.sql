-- Events that Knative gave up delivering, kept for inspection and replay by the
-- dead-letters function. One row per CloudEvent identity (source, id).
CREATE TABLE dead_letters (
    source          text        NOT NULL,
    id              text        NOT NULL,
    type            text        NOT NULL,
    subject         text,
    time            text,
    specversion     text        NOT NULL,
    datacontenttype text,
    -- every attribute as received, extensions included
    attributes      jsonb       NOT NULL,
    extensions      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- the data as received: 'json' (data_json), 'text' or 'base64' (data_text), or NULL
    data_encoding   text        CHECK (data_encoding IN ('json', 'text', 'base64')),
    data_json       jsonb,
    data_text       text,
    -- what the dispatcher said when it gave up (knativeerrordest/-code/-data)
    error_dest      text,
    error_code      integer,
    error_data      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);

CREATE INDEX dead_letters_newest_first ON dead_letters (received_at DESC, source, id);

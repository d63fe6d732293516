-- The processing store: one row per (project, event); the first write wins.
CREATE TABLE events (
    project_id  BIGINT NOT NULL,
    event_id    CHAR(32) NOT NULL,
    group_id    BIGINT,
    data        JSONB NOT NULL,
    date_added  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX events_group_id_idx ON events (group_id) WHERE group_id IS NOT NULL;

-- Attachment chunks wait here until the attachment or event that lists them arrives.
CREATE TABLE attachment_chunks (
    project_id     BIGINT NOT NULL,
    event_id       CHAR(32) NOT NULL,
    attachment_id  TEXT NOT NULL,
    chunk_index    INTEGER NOT NULL,
    data           BYTEA NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, event_id, attachment_id, chunk_index)
);
CREATE INDEX attachment_chunks_expires_at_idx ON attachment_chunks (expires_at);

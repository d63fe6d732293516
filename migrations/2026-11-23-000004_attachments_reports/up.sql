CREATE TABLE event_attachments (
    id             BIGSERIAL PRIMARY KEY,
    project_id     BIGINT NOT NULL,
    event_id       CHAR(32) NOT NULL,
    attachment_id  TEXT NOT NULL,
    group_id       BIGINT,
    type           TEXT NOT NULL,
    name           TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size           BIGINT NOT NULL,
    sha1           CHAR(40) NOT NULL,
    blob_path      TEXT,
    date_added     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, event_id, attachment_id)
);

CREATE TABLE user_reports (
    id                 BIGSERIAL PRIMARY KEY,
    project_id         BIGINT NOT NULL,
    event_id           CHAR(32) NOT NULL,
    group_id           BIGINT,
    name               TEXT NOT NULL DEFAULT '',
    email              TEXT NOT NULL DEFAULT '',
    comments           TEXT NOT NULL DEFAULT '',
    date_added         TIMESTAMPTZ NOT NULL DEFAULT now(),
    feedback_event_id  CHAR(32),
    UNIQUE (project_id, event_id)
);
CREATE INDEX user_reports_unshimmed_idx ON user_reports (project_id, event_id) WHERE feedback_event_id IS NULL;

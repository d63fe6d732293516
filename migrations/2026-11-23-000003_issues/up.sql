-- Issue groups and what the issue platform records about them.
CREATE TABLE groups (
    id                 BIGSERIAL PRIMARY KEY,
    project_id         BIGINT NOT NULL,
    type               INTEGER NOT NULL,
    status             INTEGER NOT NULL DEFAULT 0,
    substatus          INTEGER,
    priority           INTEGER NOT NULL DEFAULT 50,
    level              INTEGER NOT NULL DEFAULT 40,
    title              TEXT NOT NULL DEFAULT '',
    culprit            TEXT NOT NULL DEFAULT '',
    message            TEXT NOT NULL DEFAULT '',
    times_seen         BIGINT NOT NULL DEFAULT 1,
    first_seen         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen          TIMESTAMPTZ NOT NULL DEFAULT now(),
    active_at          TIMESTAMPTZ,
    resolved_at        TIMESTAMPTZ,
    -- id of the occurrence whose title/culprit/level the group shows (tie-break for equal last_seen)
    last_occurrence_id CHAR(32),
    data               JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX groups_project_id_status_idx ON groups (project_id, status);

CREATE TABLE group_hashes (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    hash        CHAR(32) NOT NULL,
    group_id    BIGINT NOT NULL REFERENCES groups (id),
    UNIQUE (project_id, hash)
);
CREATE INDEX group_hashes_group_id_idx ON group_hashes (group_id);

CREATE TABLE occurrences (
    id          CHAR(32) PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    event_id    CHAR(32) NOT NULL,
    group_id    BIGINT,
    type        INTEGER NOT NULL,
    data        JSONB NOT NULL,
    date_added  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX occurrences_project_event_idx ON occurrences (project_id, event_id);
CREATE INDEX occurrences_group_id_idx ON occurrences (group_id);

CREATE TABLE applied_status_changes (
    id          CHAR(32) PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    group_id    BIGINT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE activities (
    id          BIGSERIAL PRIMARY KEY,
    group_id    BIGINT NOT NULL,
    project_id  BIGINT NOT NULL,
    type        TEXT NOT NULL,
    user_id     BIGINT,
    data        JSONB NOT NULL DEFAULT '{}'::jsonb,
    datetime    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX activities_group_id_idx ON activities (group_id);

CREATE TABLE group_history (
    id               BIGSERIAL PRIMARY KEY,
    group_id         BIGINT NOT NULL,
    project_id       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    prev_history_id  BIGINT,
    date_added       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX group_history_group_id_idx ON group_history (group_id);

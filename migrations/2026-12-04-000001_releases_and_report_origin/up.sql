-- Whether a row holds a legacy user report (the user-report endpoint): those are shimmed into a
-- feedback once their event exists. A row written for a new feedback that names an event is
-- not (the feedback is its own issue) until a legacy report for the same event updates it.
-- Added with a default, so binaries of the previous version keep writing valid rows.
ALTER TABLE user_reports ADD COLUMN legacy_report BOOLEAN NOT NULL DEFAULT true;
-- The environment of the report's event (or of the feedback that wrote it), when known.
ALTER TABLE user_reports ADD COLUMN environment TEXT;
-- Only legacy reports wait to be shimmed.
DROP INDEX user_reports_unshimmed_idx;
CREATE INDEX user_reports_unshimmed_idx ON user_reports (project_id, event_id)
  WHERE feedback_event_id IS NULL AND legacy_report;

-- Crash reports counted per group (the `store_crash_reports` limit).
CREATE INDEX event_attachments_crash_reports_idx ON event_attachments (project_id, group_id)
  WHERE type IN ('event.minidump', 'event.applecrashreport');

-- The release of the event that created the group.
ALTER TABLE groups ADD COLUMN first_release TEXT;

-- Where a group was seen, as Sentry's GroupRelease and GroupEnvironment: per release (and
-- environment) and per environment, first and last seen and how many events. An event without
-- a release is not counted per release; one without an environment counts under ''.
CREATE TABLE group_releases (
    group_id     BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    project_id   BIGINT NOT NULL,
    release      TEXT NOT NULL,
    environment  TEXT NOT NULL,
    first_seen   TIMESTAMPTZ NOT NULL,
    last_seen    TIMESTAMPTZ NOT NULL,
    times_seen   BIGINT NOT NULL,
    PRIMARY KEY (group_id, release, environment)
);
CREATE INDEX group_releases_project_release_idx ON group_releases (project_id, release);

CREATE TABLE group_environments (
    group_id       BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    project_id     BIGINT NOT NULL,
    environment    TEXT NOT NULL,
    first_release  TEXT,
    first_seen     TIMESTAMPTZ NOT NULL,
    last_seen      TIMESTAMPTZ NOT NULL,
    times_seen     BIGINT NOT NULL,
    PRIMARY KEY (group_id, environment)
);
CREATE INDEX group_environments_project_environment_idx ON group_environments (project_id, environment);

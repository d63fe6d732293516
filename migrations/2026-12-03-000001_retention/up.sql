-- Retention: every stored event, occurrence and attachment carries the time it expires at.
-- The bulky JSON payloads of events and occurrences move to tables partitioned by that time
-- (one partition per UTC day), so expiry drops whole partitions and gives the disk back at
-- once. The narrow rows that keep natural keys unique, groups and links stay in plain tables
-- and are deleted in small batches.

-- A retention option's value as whole days, or NULL when it is not a number from 1 to 36500.
CREATE FUNCTION sluice_days(value TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN value ~ '^\s*[0-9]{1,5}\s*$' AND trim(value)::int BETWEEN 1 AND 36500
              THEN trim(value)::int END
$$;

-- The global default: the `sluice.retention_days` setting of the database or role
-- (ALTER DATABASE … SET sluice.retention_days = 30), else 90 days.
CREATE FUNCTION sluice_default_retention_days() RETURNS INTEGER
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(sluice_days(current_setting('sluice.retention_days', true)), 90)
$$;

-- Each known project's retention: its own `sluice:retention-days` option, else its
-- organization's, else the global default. A message's own `retention_days` comes first.
CREATE VIEW project_retention AS
SELECT p.id AS project_id,
       COALESCE(sluice_days(p.options ->> 'sluice:retention-days'),
                sluice_days(o.options ->> 'sluice:retention-days'),
                sluice_default_retention_days()) AS days
FROM projects p JOIN organizations o ON o.id = p.organization_id;

-- Creates the partition of `parent` for the UTC day `day` when it is missing, moving the rows
-- of that day out of the default partition first. Returns whether it created one. Two callers
-- at once serialise on an advisory lock per partition name.
CREATE FUNCTION sluice_ensure_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
  name TEXT := parent || '_p' || to_char(day, 'YYYYMMDD');
  lo TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
  hi TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(name));
  IF to_regclass(name) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                 name, parent);
  EXECUTE format('WITH moved AS (DELETE FROM %I WHERE expires_at >= %L AND expires_at < %L RETURNING *) '
                 'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, name);
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                 parent, name, lo, hi);
  RETURN true;
END
$$;

-- Events: narrow rows (natural key, group, expiry) and partitioned payloads.
CREATE TABLE event_payloads (
    project_id  BIGINT NOT NULL,
    event_id    CHAR(32) NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    data        JSONB NOT NULL,
    PRIMARY KEY (project_id, event_id, expires_at)
) PARTITION BY RANGE (expires_at);
CREATE TABLE event_payloads_default PARTITION OF event_payloads DEFAULT;

CREATE TABLE events_retained AS
SELECT e.project_id, e.event_id, e.group_id, e.date_added,
       e.date_added + make_interval(days => COALESCE(r.days, sluice_default_retention_days())) AS expires_at,
       e.data
FROM events e LEFT JOIN project_retention r ON r.project_id = e.project_id;

SELECT sluice_ensure_partition('event_payloads', d)
FROM (SELECT DISTINCT (expires_at AT TIME ZONE 'UTC')::date AS d FROM events_retained) days;

INSERT INTO event_payloads (project_id, event_id, expires_at, data)
SELECT project_id, event_id, expires_at, data FROM events_retained;

DROP TABLE events;
CREATE TABLE events (
    project_id  BIGINT NOT NULL,
    event_id    CHAR(32) NOT NULL,
    group_id    BIGINT,
    date_added  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, event_id)
);
INSERT INTO events (project_id, event_id, group_id, date_added, expires_at)
SELECT project_id, event_id, group_id, date_added, expires_at FROM events_retained;
DROP TABLE events_retained;
CREATE INDEX events_group_id_idx ON events (group_id) WHERE group_id IS NOT NULL;
CREATE INDEX events_expires_at_idx ON events (expires_at);

-- Occurrences: the same split.
CREATE TABLE occurrence_payloads (
    id          CHAR(32) NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    data        JSONB NOT NULL,
    PRIMARY KEY (id, expires_at)
) PARTITION BY RANGE (expires_at);
CREATE TABLE occurrence_payloads_default PARTITION OF occurrence_payloads DEFAULT;

CREATE TABLE occurrences_retained AS
SELECT o.id, o.project_id, o.event_id, o.group_id, o.type, o.dropped, o.date_added,
       o.date_added + make_interval(days => COALESCE(r.days, sluice_default_retention_days())) AS expires_at,
       o.data
FROM occurrences o LEFT JOIN project_retention r ON r.project_id = o.project_id;

SELECT sluice_ensure_partition('occurrence_payloads', d)
FROM (SELECT DISTINCT (expires_at AT TIME ZONE 'UTC')::date AS d FROM occurrences_retained) days;

INSERT INTO occurrence_payloads (id, expires_at, data)
SELECT id, expires_at, data FROM occurrences_retained;

DROP TABLE occurrences;
CREATE TABLE occurrences (
    id          CHAR(32) PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    event_id    CHAR(32) NOT NULL,
    group_id    BIGINT,
    type        INTEGER NOT NULL,
    dropped     TEXT,
    date_added  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO occurrences (id, project_id, event_id, group_id, type, dropped, date_added, expires_at)
SELECT id, project_id, event_id, group_id, type, dropped, date_added, expires_at FROM occurrences_retained;
DROP TABLE occurrences_retained;
CREATE INDEX occurrences_project_event_idx ON occurrences (project_id, event_id);
CREATE INDEX occurrences_group_id_idx ON occurrences (group_id);
CREATE INDEX occurrences_expires_at_idx ON occurrences (expires_at);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_settings
             WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
    ALTER TABLE event_payloads ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE event_payloads_default ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE occurrence_payloads ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE occurrence_payloads_default ALTER COLUMN data SET COMPRESSION lz4;
  END IF;
END
$$;

-- Attachments expire with their own retention (Relay's `retention_days`) or their project's.
ALTER TABLE event_attachments ADD COLUMN expires_at TIMESTAMPTZ;
UPDATE event_attachments a
SET expires_at = a.date_added + make_interval(days => COALESCE(
      (SELECT r.days FROM project_retention r WHERE r.project_id = a.project_id),
      sluice_default_retention_days()));
ALTER TABLE event_attachments ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX event_attachments_expires_at_idx ON event_attachments (expires_at);

-- Objects of removed attachments, deleted from the object store by cleanup; a row stays until
-- its object is gone, so an object-store outage loses track of nothing.
CREATE TABLE object_deletions (
    path           TEXT PRIMARY KEY,
    project_id     BIGINT NOT NULL,
    event_id       CHAR(32) NOT NULL,
    attachment_id  TEXT NOT NULL,
    queued_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Counters say when they were last touched, so cleanup can remove idle ones.
ALTER TABLE rate_limit_counters ADD COLUMN touched_at TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX rate_limit_counters_touched_at_idx ON rate_limit_counters (touched_at);
CREATE INDEX noise_counters_expires_at_idx ON noise_counters (expires_at);
CREATE INDEX emitted_outcomes_emitted_at_idx ON emitted_outcomes (emitted_at);
CREATE INDEX applied_status_changes_applied_at_idx ON applied_status_changes (applied_at);
CREATE INDEX user_reports_date_added_idx ON user_reports (date_added);
CREATE INDEX groups_last_seen_idx ON groups (last_seen);

-- A project's retention in days, for cleanup (known or not).
CREATE FUNCTION sluice_project_retention_days(project BIGINT) RETURNS INTEGER
LANGUAGE sql STABLE AS $$
  SELECT COALESCE((SELECT days FROM project_retention WHERE project_id = project),
                  sluice_default_retention_days())
$$;

-- The shortest retention of any project (or the default): no row younger than this expires, so
-- cleanup's scans can start from an index range.
CREATE FUNCTION sluice_shortest_retention_days() RETURNS INTEGER
LANGUAGE sql STABLE AS $$
  SELECT LEAST(sluice_default_retention_days(), COALESCE((SELECT min(days) FROM project_retention), 36500))
$$;

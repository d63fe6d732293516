DROP INDEX groups_last_seen_idx;
DROP INDEX user_reports_date_added_idx;
DROP INDEX applied_status_changes_applied_at_idx;
DROP INDEX emitted_outcomes_emitted_at_idx;
DROP INDEX noise_counters_expires_at_idx;
DROP INDEX rate_limit_counters_touched_at_idx;
ALTER TABLE rate_limit_counters DROP COLUMN touched_at;
DROP TABLE object_deletions;
DROP INDEX event_attachments_expires_at_idx;
ALTER TABLE event_attachments DROP COLUMN expires_at;

CREATE TABLE occurrences_joined AS
SELECT o.id, o.project_id, o.event_id, o.group_id, o.type, p.data, o.date_added, o.dropped
FROM occurrences o JOIN occurrence_payloads p ON p.id = o.id AND p.expires_at = o.expires_at;
DROP TABLE occurrences;
DROP TABLE occurrence_payloads;
ALTER TABLE occurrences_joined RENAME TO occurrences;
ALTER TABLE occurrences ADD PRIMARY KEY (id);
ALTER TABLE occurrences ALTER COLUMN date_added SET DEFAULT now();
CREATE INDEX occurrences_project_event_idx ON occurrences (project_id, event_id);
CREATE INDEX occurrences_group_id_idx ON occurrences (group_id);

CREATE TABLE events_joined AS
SELECT e.project_id, e.event_id, e.group_id, p.data, e.date_added
FROM events e JOIN event_payloads p
  ON p.project_id = e.project_id AND p.event_id = e.event_id AND p.expires_at = e.expires_at;
DROP TABLE events;
DROP TABLE event_payloads;
ALTER TABLE events_joined RENAME TO events;
ALTER TABLE events ADD PRIMARY KEY (project_id, event_id);
ALTER TABLE events ALTER COLUMN date_added SET DEFAULT now();
CREATE INDEX events_group_id_idx ON events (group_id) WHERE group_id IS NOT NULL;

DROP FUNCTION sluice_shortest_retention_days();
DROP FUNCTION sluice_project_retention_days(BIGINT);
DROP FUNCTION sluice_ensure_partition(TEXT, DATE);
DROP VIEW project_retention;
DROP FUNCTION sluice_default_retention_days();
DROP FUNCTION sluice_days(TEXT);

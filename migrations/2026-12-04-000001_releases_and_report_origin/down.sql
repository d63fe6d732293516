DROP TABLE group_environments;
DROP TABLE group_releases;
ALTER TABLE groups DROP COLUMN first_release;
DROP INDEX event_attachments_crash_reports_idx;
DROP INDEX user_reports_unshimmed_idx;
CREATE INDEX user_reports_unshimmed_idx ON user_reports (project_id, event_id) WHERE feedback_event_id IS NULL;
ALTER TABLE user_reports DROP COLUMN environment;
ALTER TABLE user_reports DROP COLUMN legacy_report;

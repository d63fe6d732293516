DROP TABLE group_environments;
DROP TABLE group_releases;
ALTER TABLE groups DROP COLUMN first_release;
ALTER TABLE user_reports DROP COLUMN environment;
ALTER TABLE user_reports DROP COLUMN legacy_report;

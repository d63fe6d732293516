DROP TABLE group_history;
DROP TABLE activities;
DROP TABLE applied_status_changes;
DROP TABLE occurrences;
DROP TABLE group_hashes;
DROP TABLE groups;

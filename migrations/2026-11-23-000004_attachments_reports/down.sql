DROP TABLE user_reports;
DROP TABLE event_attachments;

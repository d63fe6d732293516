DROP TABLE attachment_chunks;
DROP TABLE events;

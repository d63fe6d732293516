DROP TABLE queue_offsets;
DROP TABLE queue_messages;
DROP TABLE queue_partitions;

-- The embedded transport: topics, partitions and consumer-group offsets in PostgreSQL, for
-- installations without Kafka. A message's offset is assigned under its partition's row lock,
-- so offsets become visible in order and a reader never skips one committed later.
CREATE TABLE queue_partitions (
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE queue_messages (
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    key          BYTEA,
    payload      BYTEA NOT NULL,
    -- msgpack [[name, value], …]; NULL when there are none.
    headers      BYTEA,
    produced_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX queue_messages_produced_at_idx ON queue_messages (produced_at);

-- The next offset each consumer group reads, per partition.
CREATE TABLE queue_offsets (
    consumer_group  TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Optional issue-platform limits (all off by default). Their state lives here, not in process
-- memory, so every replica of occurrence-consumer and producer-shim shares one view.

-- Sliding windows: one row per key and time bucket (`granularity_seconds` wide).
CREATE TABLE rate_limit_counters (
    key     TEXT NOT NULL,
    bucket  BIGINT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (key, bucket)
);

-- Noise reduction: occurrences seen for a hash that has no group yet.
CREATE TABLE noise_counters (
    project_id  BIGINT NOT NULL,
    hash        CHAR(32) NOT NULL,
    count       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, hash)
);

-- Why an occurrence was held back by a limit (NULL when it was not), so a redelivery can still
-- emit its outcome without counting it twice.
ALTER TABLE occurrences ADD COLUMN dropped TEXT;

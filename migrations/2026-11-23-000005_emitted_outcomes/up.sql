-- Outcomes already emitted, by natural key, so a replay does not bill twice.
CREATE TABLE emitted_outcomes (
    key         TEXT PRIMARY KEY,
    emitted_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

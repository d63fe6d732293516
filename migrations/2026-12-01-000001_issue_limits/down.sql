ALTER TABLE occurrences DROP COLUMN dropped;
DROP TABLE noise_counters;
DROP TABLE rate_limit_counters;

-- The function as it was: without the lock on the default partition.
-- Creates the partition of `parent` for the UTC day `day` when it is missing, moving the rows
-- of that day out of the default partition first. Returns whether it created one. Two callers
-- at once serialise on an advisory lock per partition name.
CREATE OR REPLACE FUNCTION sluice_ensure_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
  name TEXT := parent || '_p' || to_char(day, 'YYYYMMDD');
  lo TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
  hi TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(name));
  IF to_regclass(name) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                 name, parent);
  EXECUTE format('WITH moved AS (DELETE FROM %I WHERE expires_at >= %L AND expires_at < %L RETURNING *) '
                 'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, name);
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                 parent, name, lo, hi);
  RETURN true;
END
$$;

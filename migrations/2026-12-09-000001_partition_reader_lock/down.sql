-- The function as it was: the default partition locked, the parent not.
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
  EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent || '_default');
  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                 name, parent);
  EXECUTE format('WITH moved AS (DELETE FROM %I WHERE expires_at >= %L AND expires_at < %L RETURNING *) '
                 'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, name);
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                 parent, name, lo, hi);
  RETURN true;
END
$$;

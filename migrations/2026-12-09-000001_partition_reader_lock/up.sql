-- Creating a day's partition moves that day's rows out of the default partition and attaches
-- the new one in one transaction. A statement planned before that transaction commits (it
-- waits for the default partition's lock while planning) and run after it would read neither
-- copy: its plan has no new partition, and the rows are gone from the default one. When there
-- are rows to move, the parent table is now locked first, so every reader and writer plans
-- after the commit and sees the new partition; the parent comes before the default partition,
-- the order in which every statement on the table takes them. Usually cleanup creates a day's
-- partition before any row of that day is written, and then nothing moves and the parent is
-- not locked: if a row of that day arrives between the look and the default partition's lock,
-- the day is left to the next round.
CREATE OR REPLACE FUNCTION sluice_ensure_partition(parent TEXT, day DATE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
  name TEXT := parent || '_p' || to_char(day, 'YYYYMMDD');
  lo TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
  hi TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
  -- Whether the default partition holds rows of that day.
  look TEXT := format('SELECT EXISTS (SELECT 1 FROM %I WHERE expires_at >= %L AND expires_at < %L)',
                      parent || '_default', lo, hi);
  moving BOOLEAN;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(name));
  IF to_regclass(name) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE look INTO moving;
  IF moving THEN
    EXECUTE format('LOCK TABLE ONLY %I IN ACCESS EXCLUSIVE MODE', parent);
  END IF;
  EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent || '_default');
  IF NOT moving THEN
    EXECUTE look INTO moving;
    IF moving THEN
      RETURN false;
    END IF;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)',
                 name, parent);
  IF moving THEN
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE expires_at >= %L AND expires_at < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, name);
  END IF;
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                 parent, name, lo, hi);
  RETURN true;
END
$$;

-- A lock not had within the session's lock_timeout (a long transaction on the table, a long
-- read of its parent) no longer fails the call with an error the caller has to recognise by its
-- text: the call returns NULL, meaning "not created, try again later", and the caller goes on
-- with the next day. Everything the call did is rolled back with its block, so nothing is left
-- half-made. Other failures are raised as before.
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
  EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
  END;
END
$$;

-- Daily tallies of the deletions, kept by triggers, so the console's overview reads a few
-- thousand small rows instead of a month of the deletions table (820,000 index entries a month
-- at 10,000 erasures a day) and the whole table for "completed late".
--
--   created: deletions by the UTC day they were created and the status they have now
--   ended:   final deletions by the UTC day they ended and how (DONE, FAILED, CANCELED)
--   late:    DONE deletions by the UTC day they ended, ended after their (extended) due date
--
-- Each row of the table is one shard of one (tally, day, status): a transaction adds to the
-- shard of its own connection, so erasures that commit at the same moment on different
-- connections do not queue behind one counter row. Readers sum the shards.
CREATE TABLE erasure.deletion_tallies (
    tally  text     NOT NULL CHECK (tally IN ('created', 'ended', 'late')),
    day    date     NOT NULL,
    status text     NOT NULL,
    shard  smallint NOT NULL,
    n      bigint   NOT NULL,
    PRIMARY KEY (tally, day, status, shard)
);

-- What each deletion row counts for, as (tally, day, status) rows.
CREATE FUNCTION erasure.deletion_tally_keys(
    d_status text, d_created_at timestamptz, d_completed_at timestamptz, d_due_at timestamptz,
    d_extended_due_at timestamptz
) RETURNS TABLE (tally text, day date, status text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'created', (d_created_at AT TIME ZONE 'UTC')::date, d_status
    UNION ALL
    SELECT 'ended', (d_completed_at AT TIME ZONE 'UTC')::date, d_status
     WHERE d_status IN ('DONE', 'FAILED', 'CANCELED') AND d_completed_at IS NOT NULL
    UNION ALL
    SELECT 'late', (d_completed_at AT TIME ZONE 'UTC')::date, d_status
     WHERE d_status = 'DONE' AND d_completed_at > COALESCE(d_extended_due_at, d_due_at)
$$;

-- One statement's change to the tallies: what the new rows count for, less what the old rows
-- counted for. An UPDATE that changes none of the counted columns nets to nothing and writes
-- nothing. Keys are written in order, so two transactions never take the same rows in
-- opposite orders.
CREATE FUNCTION erasure.tally_deletions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := pg_backend_pid() % 16;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO erasure.deletion_tallies AS t (tally, day, status, shard, n)
        SELECT k.tally, k.day, k.status, my_shard, count(*)
          FROM new_rows r,
               erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tally, day, status, shard) DO UPDATE SET n = t.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO erasure.deletion_tallies AS t (tally, day, status, shard, n)
        SELECT k.tally, k.day, k.status, my_shard, -count(*)
          FROM old_rows r,
               erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tally, day, status, shard) DO UPDATE SET n = t.n + excluded.n;
    ELSE
        INSERT INTO erasure.deletion_tallies AS t (tally, day, status, shard, n)
        SELECT c.tally, c.day, c.status, my_shard, sum(c.n)
          FROM (SELECT k.tally, k.day, k.status, 1 AS n
                  FROM new_rows r,
                       erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k
                UNION ALL
                SELECT k.tally, k.day, k.status, -1
                  FROM old_rows r,
                       erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k) c
         GROUP BY 1, 2, 3 HAVING sum(c.n) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (tally, day, status, shard) DO UPDATE SET n = t.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deletions_tally_insert AFTER INSERT ON erasure.deletions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION erasure.tally_deletions();
CREATE TRIGGER deletions_tally_update AFTER UPDATE ON erasure.deletions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION erasure.tally_deletions();
CREATE TRIGGER deletions_tally_delete AFTER DELETE ON erasure.deletions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION erasure.tally_deletions();

-- Emptying the deletions empties their tallies.
CREATE FUNCTION erasure.clear_deletion_tallies() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM erasure.deletion_tallies;
    RETURN NULL;
END
$$;
CREATE TRIGGER deletions_tally_truncate AFTER TRUNCATE ON erasure.deletions
    FOR EACH STATEMENT EXECUTE FUNCTION erasure.clear_deletion_tallies();

-- The deletions already recorded.
INSERT INTO erasure.deletion_tallies (tally, day, status, shard, n)
SELECT k.tally, k.day, k.status, 0, count(*)
  FROM erasure.deletions r,
       erasure.deletion_tally_keys(r.status, r.created_at, r.completed_at, r.due_at, r.extended_due_at) k
 GROUP BY 1, 2, 3;

-- The console's list of deletions completed late, newest first: rare rows, found by an index
-- of their own rather than by walking the whole table in order.
CREATE INDEX deletions_completed_late_idx ON erasure.deletions (created_at DESC, id DESC)
    WHERE status = 'DONE' AND completed_at > COALESCE(extended_due_at, due_at);

-- The overview's FAILED of the last 30 days by error key: read from the index alone (16,000
-- entries a month at 10,000 erasures a day, one in fifty failing), not from rows scattered over
-- the table. It does what the index it replaces did, too.
CREATE INDEX deletions_final_status_completed_key_idx ON erasure.deletions (status, completed_at)
    INCLUDE (error_key) WHERE status IN ('FAILED', 'CANCELED');
DROP INDEX erasure.deletions_final_status_completed_idx;

-- What an erasure leaves behind, and what the service cleared of it, per DONE deletion: queued
-- when its check after commit has run (in that transaction), recorded by the residue recorder
-- after it cleared what it can (materialized views refreshed, statistics analyzed). No foreign
-- keys, as for the verification queue: the rows name deletions that exist.
CREATE TABLE erasure.residue_queue (
    deletion_id text PRIMARY KEY,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE erasure.residue (
    deletion_id text PRIMARY KEY,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The deletion object's `residue` member, as recorded.
    record      jsonb NOT NULL
);
-- DONE deletions that ended before this version, and were checked, are recorded too.
INSERT INTO erasure.residue_queue (deletion_id, queued_at)
SELECT v.deletion_id, v.verified_at FROM erasure.verifications v
JOIN erasure.deletions d ON d.id = v.deletion_id WHERE d.status = 'DONE';

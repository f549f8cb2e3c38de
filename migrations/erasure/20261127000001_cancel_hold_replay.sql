-- Cancel, the grace period and replay of the ledger (README, "Backups, suppression, cancel").

-- CANCELED: a PENDING request withdrawn before it was carried out. Final, like DONE and FAILED:
-- it ends with completed_at (when it was canceled), and a message of the request arriving later
-- changes nothing.
ALTER TABLE erasure.deletions DROP CONSTRAINT deletions_status_check;
ALTER TABLE erasure.deletions ADD CONSTRAINT deletions_status_check
    CHECK (status IN ('PENDING', 'IN_PROGRESS', 'DONE', 'FAILED', 'CANCELED'));
ALTER TABLE erasure.deletions DROP CONSTRAINT deletions_final_has_completed_at;
ALTER TABLE erasure.deletions ADD CONSTRAINT deletions_final_has_completed_at
    CHECK ((status IN ('DONE', 'FAILED', 'CANCELED')) = (completed_at IS NOT NULL));

-- replay: erased again by `erasure ledger replay` after a backup was restored.
ALTER TABLE erasure.deletions DROP CONSTRAINT deletions_channel_check;
ALTER TABLE erasure.deletions ADD CONSTRAINT deletions_channel_check
    CHECK (channel IN ('amqp', 'http', 'cli', 'replay'));

-- With a grace period (erasure.grace_period), when the request may be carried out: set when
-- the service first records it, and never moved later. Null: at once.
ALTER TABLE erasure.deletions ADD COLUMN scheduled_at timestamptz;

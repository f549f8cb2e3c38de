-- What the HTTP API needs: requests accepted over HTTP that the broker has not confirmed yet,
-- and API keys.

-- The request message of a deletion accepted over HTTP, kept until RabbitMQ confirms it (or the
-- deletion ends, whichever comes first). A row with a message is owed a publication: a crash
-- between accepting the request and publishing it loses nothing, the relay publishes it later.
-- The message names the customer as the caller did, so it is cleared as soon as it is out.
ALTER TABLE erasure.deletions ADD COLUMN pending_message bytea;
CREATE INDEX deletions_pending_message_idx ON erasure.deletions (created_at)
    WHERE pending_message IS NOT NULL;
-- A final deletion owes no request.
ALTER TABLE erasure.deletions ADD CONSTRAINT deletions_final_has_no_pending_message
    CHECK (pending_message IS NULL OR status IN ('PENDING', 'IN_PROGRESS'));

-- Overdue listing: open deletions past their deadline.
CREATE INDEX deletions_open_due_idx ON erasure.deletions (due_at)
    WHERE status IN ('PENDING', 'IN_PROGRESS');

-- API keys. A key is `erk_<id>_<secret>`; only a SHA-256 of the secret is kept (the secret is
-- 190 random bits, so a plain hash cannot be reversed by guessing).
CREATE TABLE erasure.api_keys (
    id           text PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    read_only    boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
-- A name picks out one live key, so that operators can revoke by name.
CREATE UNIQUE INDEX api_keys_live_name_idx ON erasure.api_keys (name) WHERE revoked_at IS NULL;

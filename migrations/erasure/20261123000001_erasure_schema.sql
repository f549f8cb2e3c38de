-- The worker's own tables. They live in the schema `erasure`, apart from the business tables in
-- `public`, which the worker only erases from.

-- One row per erasure request: the deletion object compliance staff poll and auditors rely on.
CREATE TABLE erasure.deletions (
    -- `del_` and 24 base62 characters; what the HTTP API and events call the deletion's id.
    id                 text PRIMARY KEY,
    -- The caller's idempotency key. Unique: a request id never gets a second deletion object.
    request_id         uuid NOT NULL UNIQUE,
    -- The customer's id (never its source id). Null only for a rejected request that named
    -- no usable customer.
    related_object_id  text,
    -- Keyed hash of the identifier the request named, so that a repeat of the request id can be
    -- told apart from its reuse for another customer without keeping a source id in clear.
    requested_id_hash  bytea,
    -- Keyed hash of the customer's source id, so that a lookup by source id finds the deletion
    -- after the customer row is gone.
    source_id_hash     bytea,
    status             text NOT NULL
        CHECK (status IN ('PENDING', 'IN_PROGRESS', 'DONE', 'FAILED')),
    -- Rows erased per plan key ({"events": 16, ...}).
    data_json          jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- DONE because an earlier deletion had already erased this customer.
    already_erased     boolean NOT NULL DEFAULT false,
    error_key          text
        CHECK (error_key IN ('not_found', 'conflict', 'invalid_request', 'internal')),
    error_message      text,
    requested_by       text,
    reason             text,
    -- When the data subject asked; the one-month deadline (GDPR Art. 12(3)) runs from here.
    requested_at       timestamptz NOT NULL,
    due_at             timestamptz NOT NULL,
    -- Which way the request came in: amqp, http or cli.
    channel            text NOT NULL CHECK (channel IN ('amqp', 'http', 'cli')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    -- Times the worker started on this request; a poison message is recognised by it.
    attempts           integer NOT NULL DEFAULT 0,
    -- Set once the outcome event was confirmed by the broker; null rows are the outbox.
    event_published_at timestamptz,
    -- A final status always has an end time, an open one never does.
    CONSTRAINT deletions_final_has_completed_at
        CHECK ((status IN ('DONE', 'FAILED')) = (completed_at IS NOT NULL)),
    -- FAILED, and only FAILED, carries an error.
    CONSTRAINT deletions_failed_has_error
        CHECK ((status = 'FAILED') = (error_key IS NOT NULL))
);

-- Lookups by customer (GET /v1/customers/{id}/permanent-deletion, the already-erased check).
CREATE INDEX deletions_related_object_idx ON erasure.deletions (related_object_id, created_at DESC);
CREATE INDEX deletions_source_id_hash_idx ON erasure.deletions (source_id_hash)
    WHERE source_id_hash IS NOT NULL;
CREATE INDEX deletions_requested_id_hash_idx ON erasure.deletions (requested_id_hash)
    WHERE requested_id_hash IS NOT NULL;
-- Newest-first listing, optionally by status, with a stable cursor.
CREATE INDEX deletions_created_idx ON erasure.deletions (created_at DESC, id DESC);
CREATE INDEX deletions_status_created_idx ON erasure.deletions (status, created_at DESC, id DESC);
-- The outbox: final outcomes whose event the broker has not confirmed yet.
CREATE INDEX deletions_unpublished_idx ON erasure.deletions (completed_at)
    WHERE event_published_at IS NULL AND status IN ('DONE', 'FAILED');

-- Append-only record of every outcome, including rejected messages. Holds ids, outcomes, error
-- keys, timings and who asked, never a customer's personal data.
CREATE TABLE erasure.audit_log (
    id                bigserial PRIMARY KEY,
    recorded_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- When the worker received the request; recorded_at - received_at is the handling time.
    received_at       timestamptz,
    -- erasure.done | erasure.failed | request.duplicate | request.rejected
    action            text NOT NULL,
    request_id        uuid,
    deletion_id       text,
    related_object_id text,
    channel           text NOT NULL,
    requested_by      text,
    error_key         text,
    -- Counts, the reason a message was rejected, its size: nothing that names a person.
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- An erasure outcome always points at its deletion object. The erasure statement relies on
    -- this: when its deletion row could not be written (another delivery of the same request
    -- finished first), the audit insert fails and the whole statement rolls back.
    CONSTRAINT audit_log_outcome_has_deletion
        CHECK (action NOT IN ('erasure.done', 'erasure.failed') OR deletion_id IS NOT NULL)
);
CREATE INDEX audit_log_request_idx ON erasure.audit_log (request_id);

CREATE FUNCTION erasure.reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'erasure.audit_log is append-only';
END
$$;

-- Auditors rely on the log being complete: rows are never changed or removed.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON erasure.audit_log
    FOR EACH ROW EXECUTE FUNCTION erasure.reject_audit_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON erasure.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION erasure.reject_audit_change();

-- Per-installation secrets. The source id key is generated here (32 random bytes from two
-- random UUIDs) for installations that configure none.
CREATE TABLE erasure.instance (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    source_id_key bytea NOT NULL
);
INSERT INTO erasure.instance (source_id_key)
VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

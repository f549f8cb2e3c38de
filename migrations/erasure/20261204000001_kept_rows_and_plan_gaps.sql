-- The check after commit reads again exactly the rows an erasure kept: the rows it anonymized
-- (whose link to the customer it may have cleared, so that no path of the plan finds them any
-- more) and the rows the customer referenced that it left because something else used them.
-- The erasure records them by key (never a personal value) on the queue row it already writes:
-- {"rows": {"schema.table": [keys]}, "in_use": {"schema.table": [keys]}}.
ALTER TABLE erasure.verification_queue
    ADD COLUMN kept jsonb,
    -- What the chunks of a chunked erasure kept, one object like `kept` per chunk, moved here
    -- from erasure.chunk_kept by the statement that ends the erasure.
    ADD COLUMN chunk_kept jsonb;

-- Rows a chunk of a chunked erasure anonymized, until the erasure ends (the statement that ends
-- it moves them to its queue row). Written in the chunk's own transaction, so a chunk that rolls
-- back records nothing.
CREATE TABLE erasure.chunk_kept (
    id         bigserial PRIMARY KEY,
    request_id uuid NOT NULL,
    kept       jsonb NOT NULL
);
CREATE INDEX chunk_kept_request_idx ON erasure.chunk_kept (request_id);

-- `plan_gap`: the erasure broke a constraint of the schema that the plan does not cover (a
-- table that references the customer's rows with no step for it, say), twice, with a fresh
-- snapshot the second time: the plan needs a change, which the error message names.
ALTER TABLE erasure.deletions DROP CONSTRAINT deletions_error_key_check;
ALTER TABLE erasure.deletions ADD CONSTRAINT deletions_error_key_check
    CHECK (error_key IN ('not_found', 'conflict', 'invalid_request', 'internal', 'plan_gap'));

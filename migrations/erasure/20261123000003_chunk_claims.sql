-- Customers being erased in chunks (too many rows for one short transaction). A claim keeps
-- every other request for the same customer away until the chunked erasure ends, so counts
-- are never split between two requests; it survives a crash, and the redelivered request
-- resumes under it.
CREATE TABLE erasure.claims (
    subject_id text PRIMARY KEY,
    request_id uuid NOT NULL UNIQUE,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

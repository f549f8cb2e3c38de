-- A customer may be named by several lookups (a source id, an email compared in any case), each
-- kept only as a keyed hash. `source_id_hash` keeps the first lookup's hash, as it always has;
-- this array keeps all of them (case-insensitive ones hashed in lower case), so that a later
-- request, or a lookup, by any of them finds the erasure after the customer is gone.
ALTER TABLE erasure.deletions ADD COLUMN lookup_hashes bytea[];
-- "Which deletion erased the customer this identifier names?" is an overlap with the array.
CREATE INDEX deletions_lookup_hashes_idx ON erasure.deletions USING gin (lookup_hashes)
    WHERE lookup_hashes IS NOT NULL;

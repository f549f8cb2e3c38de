-- The overview's counts by status read the daily tallies now (20261205000001): the index they
-- read before only costs every write of a deletion.
DROP INDEX erasure.deletions_created_status_idx;

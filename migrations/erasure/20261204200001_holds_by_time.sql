-- Requests held for their grace period wait in the database, not in a broker queue: the
-- message is kept on its deletion (pending_message) and relayed when scheduled_at comes, so
-- each is carried out at its own time whatever was held before it. The relay reads the owed
-- messages in the order they become due.
CREATE INDEX deletions_owed_message_due_idx ON erasure.deletions ((COALESCE(scheduled_at, created_at)))
    WHERE pending_message IS NOT NULL;

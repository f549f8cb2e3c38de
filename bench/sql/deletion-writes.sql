\set n random(1, 1000000000)
BEGIN;
INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel) VALUES ('del_pb' || :n || '_' || txid_current(), gen_random_uuid(), 'cust_pb' || :n, 'PENDING', now(), now() + interval '1 month', 'amqp');
UPDATE erasure.deletions SET status = 'DONE', completed_at = now() WHERE id = 'del_pb' || :n || '_' || txid_current();
COMMIT;

-- One job per transaction: claim the oldest queued job (SKIP LOCKED), then complete it.
BEGIN;
UPDATE pgb_jobs SET status = 'claimed', claimed_at = now()
 WHERE id = (SELECT id FROM pgb_jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
 RETURNING id AS job_id \gset
UPDATE pgb_jobs SET status = 'done', done_at = now() WHERE id = :job_id;
COMMIT;

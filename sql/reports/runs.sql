-- The 50 most recent runs of any kind, newest first. A run whose process died (kill -9) is `failed` with the message
-- "interrupted: ...": running this report first marks such runs of this host (pipeline/store/db.py reap_interrupted).
SELECT run_id, kind, status, started_at, finished_at, message, parent_run_id, host, pid
FROM runs
ORDER BY started_at DESC
LIMIT 50;

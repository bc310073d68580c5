-- The 50 most recent runs of any kind, newest first.
SELECT run_id, kind, status, started_at, finished_at, message, parent_run_id
FROM runs
ORDER BY started_at DESC
LIMIT 50;

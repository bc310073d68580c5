-- Nightly re-index runs (dags/nightly_reindex.py) against the succeeded nightly before them: mean Recall@K over the query sets per embedder and index kind, the drop, and whether it exceeds the threshold (params k, default 10, and max_drop, default 0.05).
-- optional: k, max_drop
WITH nightly AS (
    SELECT r.run_id, r.started_at, r.status, m.embedder, m.index_kind, AVG(m.value) AS recall
    FROM runs r
    JOIN retrieval_metrics m ON m.run_id = r.run_id
    WHERE r.kind = 'nightly' AND m.metric = 'recall' AND m.k = COALESCE(CAST(:k AS INTEGER), 10)
      AND m.query_set <> 'all' AND m.query_set NOT LIKE 'latency/%'
    GROUP BY r.run_id, r.started_at, r.status, m.embedder, m.index_kind
), paired AS (
    SELECT n.*,
           (SELECT p.run_id FROM nightly p
            WHERE p.embedder = n.embedder AND p.index_kind = n.index_kind AND p.status = 'succeeded' AND p.started_at < n.started_at
            ORDER BY p.started_at DESC LIMIT 1) AS previous_run_id
    FROM nightly n
)
SELECT c.run_id, c.started_at, c.status, c.embedder, c.index_kind, COALESCE(CAST(:k AS INTEGER), 10) AS k,
       c.previous_run_id, p.recall AS previous_recall, c.recall, p.recall - c.recall AS recall_drop,
       CASE WHEN p.recall - c.recall > COALESCE(CAST(:max_drop AS DOUBLE PRECISION), 0.05) THEN 1 ELSE 0 END AS regression
FROM paired c
JOIN nightly p ON p.run_id = c.previous_run_id AND p.embedder = c.embedder AND p.index_kind = c.index_kind
ORDER BY c.started_at DESC, c.embedder, c.index_kind;

-- Recall@1, Recall@10, MRR per embedder, index kind and query set of the most recently evaluated run
-- (a pivot of the long-format retrieval_metrics table; the same SQL runs on SQLite and PostgreSQL).
WITH latest AS (
    SELECT run_id
      FROM retrieval_metrics
     GROUP BY run_id
     ORDER BY MAX(recorded_at) DESC
     LIMIT 1
)
SELECT
    m.run_id,
    m.embedder,
    m.index_kind,
    m.query_set,
    MAX(CASE WHEN m.metric = 'recall' AND m.k = 1  THEN m.value END) AS recall_at_1,
    MAX(CASE WHEN m.metric = 'recall' AND m.k = 10 THEN m.value END) AS recall_at_10,
    MAX(CASE WHEN m.metric = 'mrr'                 THEN m.value END) AS mrr,
    MAX(CASE WHEN m.metric = 'queries'             THEN m.value END) AS queries
FROM retrieval_metrics m
JOIN latest l ON l.run_id = m.run_id
WHERE m.query_set NOT LIKE 'latency/%' AND m.query_set <> 'all'
GROUP BY m.run_id, m.embedder, m.index_kind, m.query_set
ORDER BY m.embedder, m.index_kind, m.query_set;

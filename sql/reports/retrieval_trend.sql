-- Mean Recall@1, Recall@10 and MRR over the query sets of every run with retrieval metrics, per embedder and index kind, oldest first (the trend charts of the Airflow "Retrieval metrics" page).
SELECT m.run_id, r.kind, r.status, r.started_at, m.embedder, m.index_kind,
       AVG(CASE WHEN m.metric = 'recall' AND m.k = 1 THEN m.value END) AS recall_at_1,
       AVG(CASE WHEN m.metric = 'recall' AND m.k = 10 THEN m.value END) AS recall_at_10,
       AVG(CASE WHEN m.metric = 'mrr' THEN m.value END) AS mrr
FROM retrieval_metrics m
JOIN runs r ON r.run_id = m.run_id
WHERE m.query_set <> 'all' AND m.query_set NOT LIKE 'latency/%'
GROUP BY m.run_id, r.kind, r.status, r.started_at, m.embedder, m.index_kind
ORDER BY r.started_at, m.run_id, m.embedder, m.index_kind;

-- Recall@1/10/100 and MRR of one run per embedder and index kind, averaged over every query set (clip length x degradation); param run_id (default: the latest run with metrics).
-- optional: run_id
SELECT run_id, embedder, index_kind,
       COUNT(DISTINCT query_set) AS query_sets,
       AVG(CASE WHEN metric = 'recall' AND k = 1 THEN value END) AS recall_at_1,
       AVG(CASE WHEN metric = 'recall' AND k = 10 THEN value END) AS recall_at_10,
       AVG(CASE WHEN metric = 'recall' AND k = 100 THEN value END) AS recall_at_100,
       AVG(CASE WHEN metric = 'mrr' THEN value END) AS mrr
FROM retrieval_metrics
WHERE run_id = COALESCE(:run_id, (SELECT run_id FROM retrieval_metrics ORDER BY recorded_at DESC LIMIT 1))
  AND query_set <> 'all' AND query_set NOT LIKE 'latency/%'
GROUP BY run_id, embedder, index_kind
ORDER BY embedder, index_kind;

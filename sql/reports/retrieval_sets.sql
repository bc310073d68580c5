-- Recall@1/10/100, MRR, offset hits (top-1 right with the clip's offset in the track) and query count of one run per embedder, index kind and query set, with the set split into query length (s) and degradation (the per-set table of the Airflow "Retrieval metrics" page); param run_id (default: the latest run with metrics).
-- optional: run_id
-- A set is named <length>s/<degradation> (5s/pink0db): LTRIM drops the length's characters (digits, '.', 's') up to the '/'.
WITH sets AS (
    SELECT run_id, embedder, index_kind, query_set, metric, k, value,
           LENGTH(query_set) - LENGTH(LTRIM(query_set, '0123456789.s')) AS head
    FROM retrieval_metrics
    WHERE run_id = COALESCE(:run_id, (SELECT run_id FROM retrieval_metrics ORDER BY recorded_at DESC LIMIT 1))
      AND query_set <> 'all' AND query_set NOT LIKE 'latency/%' AND query_set LIKE '%/%'
)
SELECT run_id, embedder, index_kind,
       CAST(SUBSTR(query_set, 1, head - 1) AS DOUBLE PRECISION) AS length_s,
       SUBSTR(query_set, head + 2) AS degradation,
       query_set,
       MAX(CASE WHEN metric = 'recall' AND k = 1 THEN value END) AS recall_at_1,
       MAX(CASE WHEN metric = 'recall' AND k = 10 THEN value END) AS recall_at_10,
       MAX(CASE WHEN metric = 'recall' AND k = 100 THEN value END) AS recall_at_100,
       MAX(CASE WHEN metric = 'mrr' THEN value END) AS mrr,
       MAX(CASE WHEN metric = 'offset_hit' THEN value END) AS offset_hit,
       MAX(CASE WHEN metric = 'queries' THEN value END) AS queries
FROM sets
GROUP BY run_id, embedder, index_kind, query_set, head
ORDER BY embedder, index_kind, length_s, degradation;

-- Single-query latency (end to end and search alone), batch QPS and ANN Recall@10 against the exact index,
-- per embedder and index kind, of the most recently evaluated run.
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
    MAX(CASE WHEN m.metric = 'latency_e2e_p50_ms'    THEN m.value END) AS e2e_p50_ms,
    MAX(CASE WHEN m.metric = 'latency_e2e_p95_ms'    THEN m.value END) AS e2e_p95_ms,
    MAX(CASE WHEN m.metric = 'latency_search_p50_ms' THEN m.value END) AS search_p50_ms,
    MAX(CASE WHEN m.metric = 'latency_search_p95_ms' THEN m.value END) AS search_p95_ms,
    MAX(CASE WHEN m.metric = 'qps_batch'             THEN m.value END) AS qps_batch,
    MAX(CASE WHEN m.metric = 'recall_vs_exact'       THEN m.value END) AS recall10_vs_exact
FROM retrieval_metrics m
JOIN latest l ON l.run_id = m.run_id
GROUP BY m.run_id, m.embedder, m.index_kind
ORDER BY m.embedder, m.index_kind;

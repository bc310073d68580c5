-- Ingest failures by kind, with the number of distinct files and the latest example.
SELECT
    e.error_kind,
    COUNT(*)                     AS errors,
    COUNT(DISTINCT e.source_uri) AS files,
    MAX(e.occurred_at)           AS last_seen_at,
    (SELECT e2.source_uri || ': ' || e2.message
       FROM ingest_errors e2
      WHERE e2.error_kind = e.error_kind
      ORDER BY e2.occurred_at DESC, e2.error_id
      LIMIT 1)                   AS latest_example
FROM ingest_errors e
GROUP BY e.error_kind
ORDER BY errors DESC, e.error_kind;

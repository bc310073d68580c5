-- Tracks and hours of audio per catalog.
SELECT
    catalog,
    COUNT(*)                     AS tracks,
    SUM(duration_s) / 3600.0     AS hours,
    AVG(duration_s)              AS mean_seconds,
    MIN(duration_s)              AS min_seconds,
    MAX(duration_s)              AS max_seconds,
    COUNT(DISTINCT source_format) AS formats,
    MAX(ingested_at)             AS last_ingested_at
FROM tracks
GROUP BY catalog
ORDER BY catalog;

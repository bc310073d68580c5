-- Tracks the catalog VAE reconstructs worst (outlier scores), by run: --param run_id=RUN (default: the latest run with latents).
-- optional: run_id
SELECT
    l.run_id,
    l.track_id,
    l.catalog,
    l.recon_error,
    l.z1,
    l.z2,
    t.source_uri
FROM vae_latents l
LEFT JOIN tracks t ON t.track_id = l.track_id
WHERE l.run_id = COALESCE(:run_id, (
      SELECT v.run_id
        FROM vae_latents v
       ORDER BY v.recorded_at DESC, v.run_id DESC
       LIMIT 1))
ORDER BY l.recon_error DESC, l.track_id
LIMIT 20;

-- Mel SNR (dB) by number of quantizer levels for the most recent successful rvq codec training.
SELECT
    m.run_id,
    m.k     AS levels,
    m.value AS mel_snr_db
FROM run_metrics m
WHERE m.stage = 'tokenizer'
  AND m.metric = 'mel_snr_db'
  AND m.run_id = (
      SELECT r.run_id
        FROM runs r
       WHERE r.kind = 'tokenizer_train' AND r.status = 'succeeded'
       ORDER BY r.started_at DESC
       LIMIT 1)
ORDER BY m.k;

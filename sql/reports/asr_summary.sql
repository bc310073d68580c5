-- ASR evaluation per run and model: files, failed files, audio hours, corpus WER and CER (edits over reference length), mean real-time factor; param run_id (default: every run, newest first).
-- optional: run_id
SELECT r.run_id,
       r.model,
       COUNT(*)                                                                                   AS files,
       SUM(CASE WHEN r.error IS NOT NULL THEN 1 ELSE 0 END)                                       AS errors,
       COALESCE(SUM(r.duration_s), 0) / 3600.0                                                    AS audio_hours,
       CAST(SUM(r.word_edits) AS DOUBLE PRECISION) / NULLIF(SUM(r.ref_words), 0)                  AS wer,
       CAST(SUM(r.char_edits) AS DOUBLE PRECISION) / NULLIF(SUM(r.ref_chars), 0)                  AS cer,
       AVG(r.rtf)                                                                                 AS mean_rtf,
       MAX(u.status)                                                                              AS status,
       MAX(u.started_at)                                                                          AS started_at
FROM asr_results r
LEFT JOIN runs u ON u.run_id = r.run_id
WHERE r.run_id = COALESCE(:run_id, r.run_id)
GROUP BY r.run_id, r.model
ORDER BY started_at DESC, r.run_id, r.model;

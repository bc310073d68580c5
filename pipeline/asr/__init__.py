"""Speech recognition: the :class:`~pipeline.asr.base.Transcriber` interface and its backends (Qwen3-ASR, and the offline
PocketSphinx baseline), audio preparation (16 kHz mono, long audio split at quiet points) and WER/CER evaluation."""

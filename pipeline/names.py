"""Names that the code, the CLI, configs/*.yaml and the DAG forms share, written once.

Light on purpose: no imports at all, so a DAG file may import it at parse time and argparse can offer the choices
without loading torch or FAISS.
"""

EMBEDDERS = ("mel-stats", "contrastive", "wav2vec2")  # retrieval embedders (pipeline.embed.get_embedder)
INDEX_KINDS = ("flat", "hnsw", "ivfpq")  # FAISS index kinds (pipeline.index.faiss_index)
TOKENIZER_BACKENDS = ("rvq", "moss")  # the built-in residual-VQ codec | MOSS-Audio-Tokenizer
DEVICES = ("auto", "cpu", "cuda")  # --device; "cuda:N" is taken too where a torch device is resolved (pipeline.devices)
DTYPES = ("auto", "float32", "bfloat16", "float16")  # wav2vec2.dtype and moss.dtype
QUERY_DEGRADATIONS = ("clean", "white20db", "white10db", "white0db", "pink0db", "lowpass3k", "telephone", "gain-12db", "speed0.97", "speed1.03",
                      "reverb")  # the evaluation's named query degradations (pipeline.audio.degrade holds what each does)
MERIT_METRICS = ("recall", "mrr")  # configs/index.yaml publish.metric: what publishing by merit scores (pipeline.evaluate.merit)
MERIT_AGGREGATES = ("min", "mean")  # publish.aggregate: over the query sets of one length, the worst one or the average

"""Names that the code, the CLI, configs/*.yaml and the DAG forms share, written once, and the grammar of the query
degradation specs (so a config is checked without loading numpy).

Light on purpose: no imports at all, so a DAG file may import it at parse time and argparse can offer the choices
without loading torch or FAISS.
"""

EMBEDDERS = ("mel-stats", "contrastive", "fingerprint", "wav2vec2")  # retrieval embedders (pipeline.embed.get_embedder)
INDEX_KINDS = ("flat", "hnsw", "ivfpq")  # FAISS index kinds (pipeline.index.faiss_index)
IVF_REFINES = ("none", "flat", "sq8")  # ivfpq.refine: the PQ shortlist is not re-ranked | re-ranked on the full vectors | on 8-bit codes
TOKENIZER_BACKENDS = ("rvq", "moss")  # the built-in residual-VQ codec | MOSS-Audio-Tokenizer
DEVICES = ("auto", "cpu", "cuda")  # --device; "cuda:N" is taken too where a torch device is resolved (pipeline.devices)
DTYPES = ("auto", "float32", "bfloat16", "float16")  # wav2vec2.dtype, moss.dtype and qwen3_asr.dtype
ASR_QUANTIZE = ("none", "int8")  # qwen3_asr.quantize: the linear layers' weights as loaded, or int8 (pipeline/asr/int8.py)
ASR_BACKENDS = ("qwen3-asr", "pocketsphinx")  # configs/asr.yaml asr.backend: Qwen3-ASR | the offline CMU PocketSphinx baseline
MERIT_METRICS = ("recall", "mrr")  # configs/index.yaml publish.metric: what publishing by merit scores (pipeline.evaluate.merit)
MERIT_AGGREGATES = ("min", "mean")  # publish.aggregate: over the query sets of one length, the worst one or the average

# Query degradation specs (configs/eval.yaml queries.plans; pipeline.audio.degrade applies them): a kind, ``kind:value`` for a kind
# with a parameter, and ``+`` between steps applied left to right ("background:5+reverb:0.6+telephone").
# kind -> None (no parameter) or (what the value is, its unit, lowest, highest, an example).
DEGRADATION_KINDS = {
    "clean": None,                                # the clip as it is (alone only)
    "white": ("SNR", "dB", -30.0, 60.0, 0),       # white noise at this SNR
    "pink": ("SNR", "dB", -30.0, 60.0, 0),        # pink (1/f) noise
    "brown": ("SNR", "dB", -30.0, 60.0, 0),       # brown (1/f^2) noise
    "background": ("SNR", "dB", -30.0, 60.0, 5),  # a real recording of background sound (queries.background_dir)
    "telephone": None,                            # the 300-3400 Hz telephone band
    "lowpass": ("cutoff", "Hz", 100.0, 20000.0, 3000),  # below the Nyquist frequency of the sample rate too
    "highpass": ("cutoff", "Hz", 20.0, 10000.0, 300),
    "reverb": ("RT60", "s", 0.15, 2.0, 0.6),      # a simulated room with this reverberation time
    "mp3": ("bitrate", "kbps", 8.0, 320.0, 32),   # MP3 re-encoding at this constant bitrate
    "ogg": ("quality", "", 0.0, 10.0, 0),         # Ogg Vorbis re-encoding at this quality (oggenc's 0-10)
    "speed": ("factor", "", 0.5, 2.0, 1.05),      # played faster (> 1) or slower, pitch with it
    "gain": ("gain", "dB", -60.0, 24.0, -12),
}


def degradation_steps(spec: str) -> tuple[tuple[str, float | None], ...]:
    """The (kind, value) steps of a degradation spec, checked against DEGRADATION_KINDS; a ValueError (one line, naming the
    spec and its bad part) otherwise. The grammar's one home: pipeline.config checks configured specs with it, pipeline.audio.degrade
    parses them with it."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"degradation spec {spec!r}: expected a string such as 'pink:0' or 'background:5+reverb:0.6+telephone'")
    steps = []
    parts = spec.split("+")
    for part in parts:
        kind, sep, raw = part.strip().partition(":")
        kind, raw = kind.strip(), raw.strip()
        if not part.strip():
            raise ValueError(f"degradation spec {spec!r}: an empty step (a '+' at either end or two in a row)")
        if kind not in DEGRADATION_KINDS:
            raise ValueError(f"degradation spec {spec!r}: {part.strip()!r}: unknown kind {kind!r} (known: {', '.join(DEGRADATION_KINDS)})")
        param = DEGRADATION_KINDS[kind]
        if param is None:
            if sep:
                raise ValueError(f"degradation spec {spec!r}: {part.strip()!r}: {kind} takes no value")
            if kind == "clean" and len(parts) > 1:
                raise ValueError(f"degradation spec {spec!r}: 'clean' stands alone, not in a chain")
            steps.append((kind, None))
            continue
        what, unit, low, high, example = param
        if not raw:
            raise ValueError(f"degradation spec {spec!r}: {part.strip()!r}: {kind} needs its {what}{' in ' + unit if unit else ''}, e.g. {kind}:{example}")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:  # a NaN (not a number) fails this too
            raise ValueError(f"degradation spec {spec!r}: {part.strip()!r}: {what} {raw!r} is not a number from {low:g} to {high:g}"
                             f"{' ' + unit if unit else ''}")
        steps.append((kind, value))
    return tuple(steps)

"""``cloudtune search``: audio clips in, ranked catalog tracks out (each track at most once, with the offset where the clip
starts in it).

Uses the published run unless a run is named. Clips are read in threads, cut into segments the way the catalog was cut
(its embeddings manifest's segmentation), embedded and matched as sequences (:mod:`pipeline.index.match`) in batches; a
clip that cannot be read (or is too short) gets its own result with an ``error`` field and the others still answer. Every
query is brought to the catalog's level first (``audio_io.query_level``, as ``evaluate`` does), so the level a clip was
recorded at does not matter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from sqlalchemy import select

from pipeline import paths
from pipeline.audio import io as audio_io
from pipeline.config import AudioSettings
from pipeline.embed.registry import get_embedder
from pipeline.embed.segments import QuerySegments, embed_query_rates
from pipeline.index.faiss_index import load_index
from pipeline.publish import pick, published
from pipeline.store import db
from pipeline.store.tables import tracks

MIN_SECONDS = 0.5


def check_run(run_id: str, embedder: str, index_kind: str) -> None:
    """Cheap checks of a run's artifacts before they are published or served: the index's manifest reads, its index file has the
    size the manifest recorded (so a truncated one is caught), and the embedder's checkpoint (fingerprint, contrastive) loads.
    Raises a ValueError (FileNotFoundError for a missing file) whose one-line message names the file and the reason."""
    from pipeline.index.faiss_index import check_index_file, read_manifest

    files = paths.index(run_id, embedder, index_kind)
    if not files.manifest.exists():
        raise FileNotFoundError(f"{files.manifest}: missing: run {run_id} has no {index_kind} index of {embedder}")
    check_index_file(files.index, read_manifest(files.manifest))
    if embedder == "fingerprint":
        from pipeline.models.fingerprint import load_fingerprint

        load_fingerprint(paths.fingerprint_checkpoint(run_id))
    elif embedder == "contrastive":
        from pipeline.models.token_embedder import load_embedder

        load_embedder(paths.embedder_checkpoint(run_id))


def check_published() -> dict | None:
    """The published record after :func:`check_run` of its run (None when nothing is published); raises like ``check_run`` or
    :class:`pipeline.publish.PublishedRecordError`."""
    record = published()
    if record is not None:
        check_run(record["run_id"], record["embedder"], record["index_kind"])
    return record


class Searcher:
    """A run's embedder and index, loaded once; ``search`` takes waveforms at ``sample_rate``. ``embedder_settings``: keyword
    arguments of ``get_embedder`` (``wav2vec2``, ``sample_rate``, ``moss``), read from config by the caller (needed for wav2vec2, and for
    contrastive over MOSS tokens)."""

    def __init__(self, settings: dict, run_id: str | None = None, embedder: str | None = None, index_kind: str | None = None, device: str = "cpu",
                 url: str | None = None, embedder_settings: dict | None = None, *, audio: AudioSettings):
        """``settings``: the sections of configs/index.yaml (``search``: the depth; ``publish``: the index kinds to try for a
        named run whose evaluation has no choice by merit); ``audio``: configs/pipeline.yaml ``audio`` (the level every query
        is brought to)."""
        self.audio = audio
        pub = published()
        if run_id is None:
            if pub is None:
                raise RuntimeError(f"search: no published run in {paths.home()} (evaluate a run, or name one with --run-id)")
            run_id, embedder, index_kind = pub["run_id"], embedder or pub["embedder"], index_kind or pub["index_kind"]
        if embedder is None or index_kind is None:  # a named run: its evaluation's choice by merit fills in what is not named
            embedder, index_kind, _ = pick(run_id, settings["publish"], embedder, index_kind)
        self.run_id, self.index_kind = run_id, index_kind
        self.embedder = get_embedder(embedder, run_id, device, **(embedder_settings or {}))
        self.index = load_index(run_id, self.embedder.manifest(), self.index_kind, settings["search"])
        with db.connect(url) as conn:
            uris = dict(conn.execute(select(tracks.c.track_id, tracks.c.source_uri).where(tracks.c.track_id.in_(list(self.index.track_ids)))).all())
        self.source_uri = uris
        self.sample_rate = self.embedder.sample_rate

    def segments(self, waves: list[np.ndarray]) -> list[tuple[QuerySegments, ...]]:
        """The queries brought to the catalog level, played at each of ``search.rates``, cut like the catalog and embedded."""
        a, seg = self.audio, self.index.segmentation
        levelled = [audio_io.query_level(w, a.target_rms_dbfs, a.peak_ceiling_dbfs) for w in waves]
        return embed_query_rates(self.embedder, levelled, seg, self.index.settings)

    def search(self, waves: list[np.ndarray], top_k: int) -> list[list[dict]]:
        """Per wave its ``top_k`` tracks: {"rank", "track_id", "source_uri", "score", "offset_s"} (where in the track the clip starts)."""
        out = []
        for row in self.index.match(self.segments(waves), top_k):
            ids = [self.index.track_ids[t] for t, _, _ in row]
            out.append([{"rank": r, "track_id": t, "source_uri": self.source_uri.get(t), "score": round(float(s), 6), "offset_s": o}
                        for r, (t, (_, s, o)) in enumerate(zip(ids, row, strict=True), 1)])
        return out


def _read(path: str, sr: int) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError("no such file")
    try:
        wave, _ = audio_io.load(path, sr=sr)
    except sf.LibsndfileError as exc:
        raise ValueError(f"not a readable audio file ({exc.error_string})") from None
    if len(wave) < MIN_SECONDS * sr:
        raise ValueError(f"{len(wave) / sr:.2f} s of audio; a query needs at least {MIN_SECONDS:g} s")
    return wave


def search_clips(paths: list[str], searcher: Searcher, top_k: int, batch_size: int = 64) -> Iterator[dict]:
    """One result dict per clip, in the order given: {"query", "results"} or {"query", "error"}."""
    from pipeline.prefetch import prefetch

    batch: list[tuple[str, np.ndarray]] = []

    def flush():
        results = searcher.search([w for _, w in batch], top_k)
        out = [{"query": p, "results": r} for (p, _), r in zip(batch, results, strict=True)]
        batch.clear()
        return out

    for path, wave in prefetch(lambda p: _read(p, searcher.sample_rate), list(paths), depth=8):
        if isinstance(wave, Exception):
            yield from flush() if batch else []
            reason = str(wave).splitlines()[0] if str(wave) else type(wave).__name__
            yield {"query": path, "error": f"{path}: {reason}"}
            continue
        batch.append((path, wave))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()

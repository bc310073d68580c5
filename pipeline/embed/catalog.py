"""Catalog embedding: every track cut into overlapping segments (:mod:`pipeline.embed.segments`, the rule queries are cut by
too), each segment one vector.

Writes ``runs/<run_id>/embeddings/<embedder>/``: ``vectors.npy`` (float32 [N, dim], unit rows),
``segments.csv`` (row i: track_id, start_s, end_s of vector i), with configs/index.yaml ``hubs`` ``hubness.npy``
(float32 [N]: each vector's hub score, :mod:`pipeline.embed.hubness`) and ``manifest.json`` (the embedder's
manifest, the segmentation, the hub settings, counts, seconds). Each is written atomically, manifest last, so a
folder with a manifest is always complete. A re-run with the same embedder, segmentation and tracks
does nothing (other hub settings: only the hub scores are measured again); a re-run after new tracks arrived
embeds only those and reuses the rest.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select
from tqdm import tqdm

from pipeline import config, paths
from pipeline.audio import io as audio_io
from pipeline.config import HubSettings, SegmentSettings
from pipeline.embed import SegmentEmbedder, embed_spans
from pipeline.embed.segments import segment_starts
from pipeline.fsutil import atomic_path, write_json
from pipeline.store import db
from pipeline.store.tables import run_errors, tracks


@dataclass(frozen=True)
class Track:
    track_id: str
    catalog: str
    source_uri: str
    audio_path: Path
    duration_s: float


def split_track_ids(run_id: str, split: str) -> list[str]:
    """Track ids of one split list of the run (runs/<run_id>/splits/<split>.txt lists token files named <track_id>.*)."""
    from pipeline.data.splits import split_track_ids as read_ids

    return read_ids(paths.splits_dir(run_id), split)


def run_catalogs(run_id: str, url: str | None = None) -> list[str]:
    """The catalogs the run's split tracks belong to: what the run indexes when no catalog is named."""
    ids = [t for split in ("train", "val", "test") for t in split_track_ids(run_id, split)]
    with db.connect(url) as conn:
        names = conn.execute(select(tracks.c.catalog).where(tracks.c.track_id.in_(ids)).distinct()).scalars().all()
    if not names:
        raise ValueError(f"run {run_id}: none of its split tracks is in the tracks table of {config.db_url()}")
    return sorted(names)


def catalog_tracks(catalogs: list[str], url: str | None = None) -> list[Track]:
    with db.connect(url) as conn:
        rows = conn.execute(select(tracks.c.track_id, tracks.c.catalog, tracks.c.source_uri, tracks.c.audio_path, tracks.c.duration_s)
                            .where(tracks.c.catalog.in_(catalogs)).order_by(tracks.c.track_id)).all()
    if not rows:
        raise ValueError(f"catalog {', '.join(catalogs)}: no ingested tracks (run `cloudtune ingest` first)")
    return [Track(r.track_id, r.catalog, r.source_uri, paths.canonical_audio(r.audio_path), float(r.duration_s)) for r in rows]


def segmentation_of(embedder: SegmentEmbedder, settings: SegmentSettings) -> SegmentSettings:
    """The segmentation of an embedder's catalog vectors (and so of its queries): its own window and hop when it has them
    (``embedder.segmentation``: the fingerprint model's segment_s and hop_s), configs/index.yaml ``segments`` otherwise."""
    own = getattr(embedder, "segmentation", None)
    if not own:
        return settings
    return replace(settings, window_s=float(own["window_s"]), hop_s=float(own["hop_s"]), min_s=min(settings.min_s, float(own["window_s"])))


def read_track(track: Track, sr: int) -> np.ndarray:
    """A track's canonical audio at ``sr``."""
    wave, file_sr = audio_io.load_canonical(track.audio_path)
    return audio_io.resample(wave, file_sr, sr) if file_sr != sr else wave


def load_embeddings(files: paths.EmbeddingFiles) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """(vectors [N, dim], segments table [N rows: track_id, start_s, ...], manifest) of one embedder's catalog embeddings."""
    folder = files.folder
    if not files.manifest.exists():
        raise FileNotFoundError(f"{folder}: no catalog embeddings here (run `cloudtune embed-catalog` first)")
    import json

    manifest = json.loads(files.manifest.read_text())
    vectors = np.load(files.vectors, mmap_mode="r")
    segments = pd.read_csv(files.segments, dtype={"track_id": str})
    if len(vectors) != len(segments) or len(vectors) != manifest["count"]:
        raise ValueError(f"{folder}: vectors.npy ({len(vectors)}), segments.csv ({len(segments)}) and manifest ({manifest['count']}) disagree")
    return np.asarray(vectors), segments, manifest


def embed_catalog(run_id: str, embedder: SegmentEmbedder, catalogs: list[str] | None = None, *, settings: SegmentSettings,
                  hubs: HubSettings | None, url: str | None = None, progress: bool = True) -> dict:
    """Embed every segment of the run's catalogs (default: those of its split tracks) cut by ``settings`` (configs/index.yaml
    ``segments``) or by the embedder's own segmentation (:func:`segmentation_of`), and with ``hubs`` (configs/index.yaml
    ``hubs``; None: none) measure each segment's hub score. Returns the manifest."""
    catalogs = sorted(catalogs or run_catalogs(run_id, url))
    settings = segmentation_of(embedder, settings)
    items = catalog_tracks(catalogs, url)
    files = paths.embeddings(run_id, embedder.name)
    out = files.folder
    info = embedder.manifest()
    segmentation = asdict(settings) | {"sample_rate": embedder.sample_rate}
    hub_config = asdict(hubs) if hubs else None  # as the manifest records it
    track_ids = [t.track_id for t in items]

    previous: dict[str, np.ndarray] = {}
    old = None
    if files.manifest.exists():
        vectors, segments, recorded = load_embeddings(files)
        if recorded["embedder"] == info and recorded["segmentation"] == segmentation:
            old = recorded
            if old["track_ids"] == track_ids:
                if old.get("hubs") != hub_config:
                    return _with_hubness(files, embedder, vectors, dict(old), settings.window_s, hubs, write_manifest=True)
                print(f"embed-catalog: {out} is up to date ({old['count']} segments of {len(track_ids)} tracks); skipped", file=sys.stderr)
                return old
            for tid, rows in segments.groupby("track_id").indices.items():
                previous[tid] = rows  # rows of tracks embedded before: reused
            previous = {tid: (vectors[rows], segments.iloc[rows]) for tid, rows in previous.items()}

    started = time.perf_counter()
    all_vectors, all_segments, errors, audio_seconds = [], [], [], 0.0
    pending_waves, pending_spans, pending_meta = [], [], []

    def flush():
        if pending_waves:
            all_vectors.append(embed_spans(embedder, pending_waves, pending_spans))
            all_segments.extend(pending_meta)
            pending_waves.clear()
            pending_spans.clear()
            pending_meta.clear()

    from pipeline.prefetch import prefetch

    todo = [t for t in items if t.track_id not in previous]
    bar = tqdm(total=len(items), desc=f"embed-catalog ({embedder.name})", unit="track", disable=not progress)
    for t in items:
        if t.track_id in previous:
            vecs, segs = previous[t.track_id]
            flush()
            all_vectors.append(np.asarray(vecs))
            all_segments.extend(segs[["track_id", "start_s", "end_s"]].itertuples(index=False, name=None))
            bar.update(1)
    sr = embedder.sample_rate
    for track, wave in prefetch(lambda t: read_track(t, sr), todo):
        bar.update(1)
        if isinstance(wave, Exception):
            errors.append((track, wave))
            continue
        spans = segment_starts(len(wave), sr, settings)
        if not spans:
            errors.append((track, ValueError(f"{len(wave) / sr:.2f} s is shorter than segments.min_s {settings.min_s:g} s")))
            continue
        audio_seconds += len(wave) / sr
        pending_waves.append(wave)
        pending_spans.append(spans)
        pending_meta.extend((track.track_id, round(a / sr, 3), round(b / sr, 3)) for a, b in spans)
        if len(pending_meta) >= settings.batch_size:
            flush()
    flush()
    bar.close()
    if not all_vectors:
        raise RuntimeError(f"embed-catalog: no segment could be embedded ({len(errors)} tracks failed)")
    vectors = np.ascontiguousarray(np.concatenate(all_vectors), dtype=np.float32)
    segments = pd.DataFrame(all_segments, columns=["track_id", "start_s", "end_s"])
    embedded_ids = sorted(set(segments.track_id))
    if old is not None and embedded_ids == old["track_ids"]:  # every track left to embed failed (again): nothing to change
        _record_errors(run_id, embedder.name, errors, url)
        print(f"embed-catalog: {out} is up to date ({old['count']} segments of {len(embedded_ids)} tracks; {len(errors)} still "
              "failing); kept", file=sys.stderr)
        if old.get("hubs") != hub_config:  # the scores follow the stored rows (reused tracks first), not this run's order
            return _with_hubness(files, embedder, np.asarray(np.load(files.vectors, mmap_mode="r")), dict(old), settings.window_s, hubs,
                                 write_manifest=True)
        return old
    seconds = time.perf_counter() - started
    manifest = {"run_id": run_id, "embedder": info, "segmentation": segmentation, "catalogs": catalogs, "count": len(vectors),
                "dim": int(vectors.shape[1]), "tracks": len(embedded_ids), "track_ids": embedded_ids, "reused_tracks": len(previous),
                "failed_tracks": [t.track_id for t, _ in errors], "audio_seconds": audio_seconds, "seconds": seconds,
                "created_at": db.utcnow().isoformat()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(files.vectors) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    with atomic_path(files.segments) as tmp:
        segments.to_csv(tmp, index=False)
    manifest = _with_hubness(files, embedder, vectors, manifest, settings.window_s, hubs, write_manifest=False)
    write_json(files.manifest, manifest)
    _record_errors(run_id, embedder.name, errors, url)
    return manifest


def _with_hubness(files: paths.EmbeddingFiles, embedder: SegmentEmbedder, vectors: np.ndarray, manifest: dict, window_s: float,
                  hubs: HubSettings | None, *, write_manifest: bool) -> dict:
    """The manifest with ``hubs`` and what they measured, ``hubness.npy`` written for ``vectors`` (removed when ``hubs`` is None);
    with ``write_manifest`` the manifest is rewritten too (its vectors, and so ``created_at``, are unchanged)."""
    from pipeline.embed.hubness import catalog_hubness

    if hubs is None:
        files.hubness.unlink(missing_ok=True)
        manifest |= {"hubs": None, "hubness": None}
    else:
        started = time.perf_counter()
        scores, info = catalog_hubness(embedder, vectors, window_s, hubs)
        with atomic_path(files.hubness) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scores)
        manifest |= {"hubs": asdict(hubs), "hubness": info | {"seconds": round(time.perf_counter() - started, 2)}}
        print(f"embed-catalog: hub scores of {len(scores)} segments against {info['probes']} noise probes "
              f"(mean {info['mean']}) -> {files.hubness}", file=sys.stderr)
    if write_manifest:
        write_json(files.manifest, manifest)
    return manifest


def load_hubness(files: paths.EmbeddingFiles, manifest: dict) -> np.ndarray:
    """float32 [N]: the hub score of each catalog vector (:func:`embed_catalog` with ``hubs``); a ValueError naming the folder
    when the catalog was embedded without them or the file does not match its vectors."""
    if not manifest.get("hubs") or not files.hubness.exists():
        raise ValueError(f"{files.folder}: no hub scores (search.hub_penalty needs them: run `cloudtune embed-catalog` again with "
                         "configs/index.yaml hubs)")
    scores = np.load(files.hubness)
    if scores.shape != (manifest["count"],):
        raise ValueError(f"{files.hubness}: {scores.shape[0] if scores.ndim else 0} hub scores for {manifest['count']} vectors "
                         "(run `cloudtune embed-catalog` again)")
    return scores.astype(np.float32)


def _record_errors(run_id: str, embedder: str, errors: list, url: str | None) -> None:
    """One `run_errors` row per track that could not be embedded (read, decode or too short)."""
    if not errors:
        return
    with db.connect(url) as conn:
        db.ensure_run(conn, run_id)
        for track, exc in errors:
            print(f"embed-catalog: {track.audio_path}: {exc}", file=sys.stderr)
            conn.execute(run_errors.insert().values(error_id=uuid.uuid4().hex, run_id=run_id, stage=f"embed-catalog/{embedder}",
                                                    item=track.track_id, error_kind=type(exc).__name__, message=str(exc)[:2000],
                                                    occurred_at=db.utcnow()))
        conn.commit()

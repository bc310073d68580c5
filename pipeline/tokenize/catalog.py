"""Catalog tokenization: train the rvq codec on a catalog, and tokenize a catalog (or a folder) to token files.

The functions take their settings as arguments: ``settings`` is configs/pipeline.yaml as ``config.load_pipeline()`` gives it
(sections ``tokenize``, ``rvq``, ``moss``, ``audio`` and ``ingest`` are read), with any CLI overrides applied by the caller;
the steps that read the config are in :mod:`pipeline.steps.tokens`.

Artifacts (under $CLOUDTUNE_HOME unless given):
  tokenizers/<scope>/<codec_version>/codec.{npz,json}   a trained rvq codec; tokenizers/<scope>/current names the latest
  tokens/<scope>/<codec_version>/<track_id>.npz         one token file per track (or <track_id>.cNNNN.npz per chunk
                                                        plus <track_id>.chunks.json, written last, when chunking)
<scope> is the catalog name, or `dir-<hash>` for --input-root.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import xxhash
from sqlalchemy import select
from tqdm import tqdm

from pipeline import paths
from pipeline.audio import io as audio_io
from pipeline.config import MossSettings, PipelineConfig, RVQSettings
from pipeline.fsutil import write_json, write_text
from pipeline.names import TOKENIZER_BACKENDS
from pipeline.prefetch import prefetch
from pipeline.store import db
from pipeline.store.tables import run_errors, run_metrics, tracks
from pipeline.tokenize.files import FORMATS, save_tokens
from pipeline.tokenize.rvq import RVQCodec, codec_version


@dataclass(frozen=True)
class Item:
    track_id: str
    source: str  # source_uri of the track, or the path relative to --input-root
    path: Path  # audio to read
    canonical: bool  # a canonical FLAC (pipeline rate, mono) rather than an arbitrary file


def scope_name(catalog: str | None, input_root: str | Path | None) -> str:
    if (catalog is None) == (input_root is None):
        raise ValueError("give exactly one of --catalog NAME or --input-root DIR")
    if catalog is not None:
        return catalog
    return f"dir-{xxhash.xxh3_64_hexdigest(str(Path(input_root).resolve()).encode())[:10]}"


def list_items(catalog: str | None = None, input_root: str | Path | None = None, url: str | None = None, *,
               extensions: Iterable[str] | None = None) -> list[Item]:
    """The tracks of a catalog (from the metrics DB), or the audio files under a folder with one of ``extensions``
    (the ``ingest.extensions`` setting; needed for ``input_root`` only), sorted by id."""
    scope_name(catalog, input_root)
    if catalog is not None:
        with db.connect(url) as conn:
            q = select(tracks.c.track_id, tracks.c.source_uri, tracks.c.audio_path).where(tracks.c.catalog == catalog).order_by(tracks.c.track_id)
            rows = conn.execute(q).all()
        if not rows:
            raise ValueError(f"--catalog {catalog}: no tracks in this catalog (ingest it first: cloudtune ingest SRC --catalog {catalog})")
        return [Item(r.track_id, r.source_uri, paths.canonical_audio(r.audio_path), True) for r in rows]
    from pipeline.ingest import find_audio_files

    root = Path(input_root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"--input-root {input_root}: not a folder")
    if extensions is None:
        raise ValueError(f"list_items(input_root={str(input_root)!r}): no extensions given (the caller passes the ingest.extensions setting)")
    exts = tuple(extensions)
    items = []
    for f in find_audio_files([root], exts):
        rel = f.relative_to(root).as_posix()
        items.append(Item(xxhash.xxh3_64_hexdigest(rel.encode())[:16], rel, f, False))
    if not items:
        raise ValueError(f"--input-root {input_root}: no audio files ({', '.join(exts)})")
    return sorted(items, key=lambda i: i.track_id)


def read_audio(item: Item, sample_rate: int) -> np.ndarray:
    if item.canonical:
        wave, sr = audio_io.load_canonical(item.path)
        if sr != sample_rate:
            wave = audio_io.resample(wave, sr, sample_rate)
        return wave
    return audio_io.load(item.path, sr=sample_rate)[0]


def holdout_split(ids: list[str], ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic track-level holdout (by a hash of the id): (train, holdout); both non-empty from 2 tracks."""
    ranked = sorted(ids, key=lambda i: xxhash.xxh3_64_intdigest(f"{seed}:{i}".encode()))
    n_hold = min(len(ids) - 1, max(1, round(len(ids) * ratio))) if len(ids) >= 2 and ratio > 0 else 0
    return sorted(ranked[n_hold:]), sorted(ranked[:n_hold])


def current_rvq(scope: str) -> Path | None:
    pointer = paths.codec_pointer(scope)
    if not pointer.exists():
        return None
    path = paths.codec_dir(scope, pointer.read_text().strip())
    return path if (path / "codec.json").exists() else None


def find_codec(codec_version: str):
    """The rvq codec that made the tokens, if it is in this CLOUDTUNE_HOME (for online augmentation)."""
    for meta in sorted(paths.tokenizers_root().glob(f"*/{codec_version}/codec.json")):
        return RVQCodec.load(meta.parent)
    return None


def _record_metrics(conn, run_id: str, stage: str, values: dict[tuple[str, int], float]) -> None:
    now = db.utcnow()
    db.upsert(conn, run_metrics, [{"run_id": run_id, "stage": stage, "metric": m, "k": k, "value": float(v), "recorded_at": now}
                                  for (m, k), v in values.items()])


def train_tokenizer(settings: PipelineConfig, catalog: str | None = None, input_root: str | Path | None = None, *, url: str | None = None,
                    run_id: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Train the rvq codec (``settings.rvq``, at ``settings.audio.sample_rate``) on a catalog's tracks (minus a held-out set
    used to measure mel SNR per level).

    Idempotent: the same settings and tracks give the same codec version, which is not trained twice; when it is the scope's
    current codec already, nothing is written or recorded (the report's ``run_id`` is None).
    Returns (codec folder, report).
    """
    rvq, sample_rate = settings.rvq, settings.audio.sample_rate
    scope = scope_name(catalog, input_root)
    items = list_items(catalog, input_root, url, extensions=settings.ingest.extensions)
    train_ids, hold_ids = holdout_split([i.track_id for i in items], rvq.holdout_ratio, rvq.seed)
    version = codec_version(rvq, sample_rate, train_ids)
    folder = paths.codec_dir(scope, version)
    if current_rvq(scope) == folder:  # trained, and the scope's current codec already: nothing to do, no run to record
        print(f"tokenizer: {version} already trained for {scope} and current ({folder}); skipped", file=sys.stderr)
        return folder, {**RVQCodec.load(folder).info, "version": version, "run_id": None, "path": str(folder)}
    run_config = {"scope": scope, "version": version, "rvq": asdict(rvq), "train_tracks": len(train_ids), "holdout_tracks": len(hold_ids)}
    with db.connect(url) as conn, db.recorded_run(conn, "tokenizer_train", run_config, run_id) as run:
        if (folder / "codec.json").exists():
            report = RVQCodec.load(folder).info
            print(f"tokenizer: {version} already trained for {scope} ({folder})", file=sys.stderr)
        else:
            report = _train_and_save(items, train_ids, hold_ids, sample_rate, rvq, folder, progress)
        write_text(paths.codec_pointer(scope), version + "\n")
        metrics = {("mel_snr_db", q + 1): v for q, v in enumerate(report["mel_snr_db_by_level"])}
        metrics.update({("train_seconds", 0): report["train_seconds"], ("train_hours", 0): report["train_hours"]})
        _record_metrics(conn, run.run_id, "tokenizer", metrics)
        conn.commit()
        run.message = f"{version}: mel SNR dB by levels " + ", ".join(f"{q + 1}:{v:.1f}" for q, v in enumerate(report["mel_snr_db_by_level"]))
    return folder, {**report, "version": version, "run_id": run.run_id, "path": str(folder)}


def _train_and_save(items: list[Item], train_ids: list[str], hold_ids: list[str], sample_rate: int, settings: RVQSettings, folder: Path,
                    progress: bool) -> dict:
    by_id = {i.track_id: i for i in items}
    started = time.perf_counter()
    waves = [read_audio(by_id[t], sample_rate) for t in tqdm(train_ids, desc="tokenizer: read", unit="track", disable=not progress)]
    bar = tqdm(total=settings.levels, desc="tokenizer: k-means", unit="level", disable=not progress)
    codec = RVQCodec.train(waves, sample_rate, settings, train_ids, progress=lambda _: bar.update())
    bar.close()
    train_seconds = time.perf_counter() - started
    hold_waves = [read_audio(by_id[t], sample_rate) for t in hold_ids] or waves[:1]  # one track only: report on it
    z = np.concatenate([codec.normalized_frames(w) for w in hold_waves])
    codec.info = {**codec.info, "train_hours": sum(w.shape[0] for w in waves) / sample_rate / 3600, "train_seconds": train_seconds,
                  "holdout_tracks": len(hold_ids), "holdout_frames": int(z.shape[0]), "mel_snr_db_by_level": codec.snr_by_level(z)}
    codec.save(folder)
    return codec.info


def moss_tokenizer(settings: MossSettings, device: str = "auto"):
    """The MOSS model of the ``moss:`` settings."""
    from pipeline.tokenize.moss import MossTokenizer

    return MossTokenizer(settings.model_dir, device, settings.num_quantizers, settings.chunk_seconds, settings.batch_size, settings.dtype)


def load_tokenizer(backend: str, settings: PipelineConfig, scope: str, device: str = "auto", num_quantizers: int | None = None,
                   catalog: str | None = None, input_root: str | Path | None = None, url: str | None = None, progress: bool = True):
    """The rvq codec of ``scope`` (trained first when there is none, with ``settings``) or the MOSS model of ``settings.moss``;
    ``num_quantizers`` keeps the first N levels."""
    from pipeline.devices import resolve_device

    if backend == "rvq":
        folder = current_rvq(scope)
        if folder is None:
            print(f"tokenize: no rvq codec for {scope} yet: training one", file=sys.stderr)
            folder, _ = train_tokenizer(settings, catalog, input_root, url=url, progress=progress)
        codec = RVQCodec.load(folder, device=resolve_device(device))
        if num_quantizers:
            if not 1 <= num_quantizers <= codec.num_quantizers:
                raise ValueError(f"--num-quantizers {num_quantizers}: the codec has {codec.num_quantizers} levels")
            codec = RVQCodec(codec.settings, codec.sample_rate, codec.mean, codec.std, codec.codebooks[:num_quantizers],
                             codec.version + f"-q{num_quantizers}", codec.info, codec.device)
        return codec
    if backend == "moss":
        return moss_tokenizer(settings.moss if num_quantizers is None else replace(settings.moss, num_quantizers=num_quantizers), device)
    raise ValueError(f"--backend {backend!r}: expected one of {', '.join(TOKENIZER_BACKENDS)}")


@dataclass
class TokenizeSummary:
    run_id: str | None  # None: every track was tokenized before, so nothing was done or recorded
    output_root: str
    backend: str
    codec_version: str
    written: int = 0  # tracks tokenized now
    skipped: int = 0  # already done
    failed: int = 0
    files: int = 0  # token files written
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    shard: tuple[int, int] | None = None

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def line(self) -> str:
        if self.run_id is None:
            what = f"shard {self.shard[0]} of {self.shard[1]}" if self.shard else "every track"
            return (f"tokenize: {what} already tokenized ({self.skipped} tracks, {self.backend} {self.codec_version} -> {self.output_root}); "
                    "skipped")
        return (f"tokenize: {self.written} tracks tokenized ({self.files} files), {self.skipped} already done, {self.failed} failed; "
                f"{self.audio_seconds / 3600:.3f} h in {self.wall_seconds:.1f} s ({self.realtime_factor:.0f}x realtime) "
                f"with {self.backend} {self.codec_version} -> {self.output_root} [run {self.run_id}]")


def _done_marker(out: Path, track_id: str, ext: str, chunked: bool) -> Path:
    return out / (f"{track_id}.chunks.json" if chunked else f"{track_id}.{ext}")


def _write_track(out: Path, item: Item, codes: np.ndarray, tok, ext: str, chunk_frames: int, duration_s: float) -> int:
    """Write one track's token file(s); with chunking the .chunks.json listing comes last. Returns files written."""
    base = {"track_id": item.track_id, "source": item.source, "sample_rate": tok.sample_rate, "backend": tok.name,
            "codec_version": tok.version, "frame_rate": tok.frame_rate, "codebook_size": tok.codebook_size}
    if not chunk_frames:
        save_tokens(out / f"{item.track_id}.{ext}", codes, {**base, "duration_s": duration_s, "chunk_index": 0, "num_chunks": 1, "token_shape": []})
        return 1
    n = max(1, math.ceil(codes.shape[1] / chunk_frames))
    names = []
    for c in range(n):
        part = codes[:, c * chunk_frames : (c + 1) * chunk_frames]
        name = f"{item.track_id}.c{c:04d}.{ext}"
        save_tokens(out / name, part, {**base, "duration_s": part.shape[1] / tok.frame_rate, "chunk_index": c, "num_chunks": n,
                                       "token_shape": [], "start_s": c * chunk_frames / tok.frame_rate})
        names.append(name)
    write_json(_done_marker(out, item.track_id, ext, True), {"track_id": item.track_id, "num_chunks": n, "files": names})
    return n


def tokenize(settings: PipelineConfig, catalog: str | None = None, input_root: str | Path | None = None, output_root: str | Path | None = None,
             *, device: str = "auto", max_files: int | None = None, num_quantizers: int | None = None, overwrite: bool = False,
             fail_fast: bool = False, url: str | None = None, run_id: str | None = None, progress: bool = True,
             shard: tuple[int, int] | None = None) -> TokenizeSummary:
    """Tokenize every track of a catalog (or every audio file under a folder) into token files, with the backend, format
    and chunking of ``settings.tokenize`` (the tokenizer from ``settings.rvq`` or ``settings.moss``).

    Re-runs skip tracks whose files exist (unless ``overwrite``); when every track is done, nothing is written or recorded (the
    summary's ``run_id`` is None and its line says so). A track that fails is recorded in
    `run_errors` and the run goes on (unless ``fail_fast``). ``shard=(i, n)`` tokenizes only every n-th track
    (by track id) starting at the i-th, so n workers can share a catalog (the rvq codec must exist already);
    the shard's summary goes to ``summary.shard-<i>-of-<n>.json``.
    """
    s = settings.tokenize
    if s.save_format not in FORMATS:
        raise ValueError(f"--save-format {s.save_format!r}: expected one of {', '.join(FORMATS)}")
    if s.chunk_seconds < 0:
        raise ValueError(f"--chunk-seconds {s.chunk_seconds:g}: must be >= 0")
    scope = scope_name(catalog, input_root)
    items = list_items(catalog, input_root, url, extensions=settings.ingest.extensions)[: max_files or None]
    if shard is not None:
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise ValueError(f"shard {index}/{count}: expected 0 <= index < count")
        if s.backend == "rvq" and current_rvq(scope) is None:
            raise ValueError(f"shard {index}/{count}: no rvq codec for {scope} yet (train it once before tokenizing in shards)")
        items = items[index::count]
    tok = load_tokenizer(s.backend, settings, scope, device, num_quantizers, catalog, input_root, url, progress)
    out = Path(output_root) if output_root else paths.tokens_dir(scope, tok.version)
    out.mkdir(parents=True, exist_ok=True)
    chunk_frames = round(s.chunk_seconds * tok.frame_rate)
    if s.chunk_seconds and chunk_frames < 1:
        raise ValueError(f"--chunk-seconds {s.chunk_seconds:g}: shorter than one token frame ({1 / tok.frame_rate:g} s)")
    started = time.perf_counter()
    todo = [i for i in items if overwrite or not _done_marker(out, i.track_id, s.save_format, bool(chunk_frames)).exists()]
    if items and not todo:  # a re-run: nothing to do, no run to record, the shard's summary left as it is
        return TokenizeSummary(None, str(out), tok.name, tok.version, skipped=len(items), shard=shard)
    tok.load_weights()  # only now that there is work, and before it starts (a broken model is one error, not one per track)
    run_config = {"scope": scope, "backend": tok.name, "codec_version": tok.version, "output_root": str(out), "device": device, **asdict(s)}
    with db.connect(url) as conn, db.recorded_run(conn, "tokenize", run_config, run_id) as run:
        run_id = run.run_id
        summary = TokenizeSummary(run_id, str(out), tok.name, tok.version, shard=shard)
        summary.skipped = len(items) - len(todo)

        def fail(item: Item, kind: str, exc: BaseException) -> None:
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            conn.execute(run_errors.insert().values(error_id=uuid.uuid4().hex, run_id=run_id, stage="tokenize", item=item.source,
                                                    error_kind=kind, message=message, occurred_at=db.utcnow()))
            conn.commit()
            summary.failed += 1
            summary.errors.append(f"{item.source}: {kind}: {message}")
            tqdm.write(f"warning: tokenize: {item.source}: {kind}: {message}", file=sys.stderr)
            if fail_fast:
                raise exc

        bar = tqdm(total=len(todo), desc=f"tokenize ({tok.name})", unit="track", disable=not progress or not todo)
        batch: list[tuple[Item, np.ndarray]] = []
        batch_samples = s.batch_seconds * tok.sample_rate

        def flush() -> None:
            if not batch:
                return
            try:
                all_codes = tok.encode_batch([w for _, w in batch], tok.sample_rate)
            except Exception:  # find the clip that breaks the batch: encode one by one
                all_codes = []
                for item, wave in batch:
                    try:
                        all_codes.append(tok.encode(wave, tok.sample_rate))
                    except Exception as exc:
                        fail(item, "encode_error", exc)
                        all_codes.append(None)
            for (item, wave), codes in zip(batch, all_codes, strict=True):
                if codes is None:
                    continue
                summary.files += _write_track(out, item, codes, tok, s.save_format, chunk_frames, wave.shape[0] / tok.sample_rate)
                summary.written += 1
                summary.audio_seconds += wave.shape[0] / tok.sample_rate
            bar.update(len(batch))
            batch.clear()

        for item, wave in prefetch(lambda i: read_audio(i, tok.sample_rate), todo):
            if isinstance(wave, Exception):
                fail(item, "read_error", wave)
                bar.update()
                continue
            batch.append((item, wave))
            if sum(w.shape[0] for _, w in batch) >= batch_samples:
                flush()
        flush()
        bar.close()
        summary.wall_seconds = time.perf_counter() - started
        summary_name = f"summary.shard-{shard[0]}-of-{shard[1]}.json" if shard else "summary.json"
        write_json(out / summary_name, {**asdict(summary), "realtime_factor": summary.realtime_factor, "shard": list(shard) if shard else None})
        _record_metrics(conn, run_id, "tokenize", {("x_realtime", 0): summary.realtime_factor, ("tracks", 0): summary.written,
                                                   ("failed", 0): summary.failed})
        conn.commit()
        nothing_usable = summary.failed and not (summary.written or summary.skipped)
        run.status, run.message = ("failed" if nothing_usable else "succeeded"), summary.line()
    return summary

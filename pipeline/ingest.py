"""Ingest: audio files -> canonical mono FLAC under $CLOUDTUNE_HOME/audio + one `tracks` row per unique content.

- Files are decoded in parallel worker processes (decode, downmix, resample, normalise, FLAC encode);
  the main process alone writes the database, in batches.
- Identity is a 128-bit hash (XXH3) of the decoded PCM, so a copy of a file, or a re-run, adds nothing.
- Files already seen with the same size and mtime are not decoded again (`ingest_sources`).
- A bad file becomes one `ingest_errors` row and a one-line warning; the run goes on.
- Killed outright (SIGKILL), the run leaves no decode worker behind (they die with it: :func:`pipeline.lifeline.die_with_parent`);
  its `runs` row is marked failed, "interrupted", by the next ingest, and the next ingest redoes only the uncommitted files.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import xxhash
from sqlalchemy import Connection, select
from tqdm import tqdm

from pipeline import paths
from pipeline.audio import io as audio_io
from pipeline.config import AudioSettings, IngestSettings
from pipeline.lifeline import die_with_parent
from pipeline.store import db
from pipeline.store.tables import ingest_errors, ingest_sources, tracks

# Every error_kind an `ingest_errors` row can carry (README lists them for users).
ERROR_KINDS = (
    "empty_file",  # zero bytes
    "not_audio",  # no known audio container signature
    "unsupported_codec",  # a known container libsndfile cannot decode
    "no_frames",  # a valid header with no audio frames
    "too_long",  # longer than ingest.max_seconds (from the header, before decoding)
    "decode_error",  # decoding failed part-way (truncated or corrupt data)
    "too_short",  # shorter than ingest.min_seconds
    "non_finite",  # NaN or Inf samples
    "silent",  # below audio.silence_rms_dbfs
    "io_error",  # the file vanished or could not be read or written
)


class IngestError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class FileResult:
    source_uri: str
    size_bytes: int
    mtime_ns: int
    ok: bool = False
    content_hash: str | None = None
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    source_format: str = ""
    audio_path: str | None = None  # relative to CLOUDTUNE_HOME
    error_kind: str | None = None
    message: str | None = None


@dataclass
class IngestSummary:
    run_id: str | None  # None: every file was ingested before and is unchanged, so no run was recorded
    added: int = 0
    duplicates: int = 0
    unchanged: int = 0
    errors: int = 0
    known_errors: int = 0  # unchanged files that failed in an earlier run
    audio_seconds: float = 0.0  # decoded in this run (added + duplicates)
    wall_seconds: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ingested(self) -> int:
        """Good files: new, duplicate or unchanged."""
        return self.added + self.duplicates + self.unchanged

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def line(self) -> str:
        if self.run_id is None:
            known = f", {self.known_errors} known bad" if self.known_errors else ""
            return f"ingest: {self.unchanged + self.known_errors} files already ingested ({self.unchanged} unchanged{known}); skipped"
        skipped = self.duplicates + self.unchanged
        errs = f"{self.errors} errors" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(self.error_kinds.items()))})" if self.error_kinds else "")
        known = f", {self.known_errors} known bad unchanged" if self.known_errors else ""
        return (
            f"ingest: {self.added} tracks added, {skipped} skipped ({self.duplicates} duplicate, {self.unchanged} unchanged), "
            f"{errs}{known}; {self.audio_seconds / 3600:.3f} h of audio decoded in {self.wall_seconds:.1f} s "
            f"({self.realtime_factor:.0f}x realtime) [run {self.run_id}]"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "ingested": self.ingested, "realtime_factor": self.realtime_factor}


def find_audio_files(sources: Iterable[str | os.PathLike], extensions: Iterable[str]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated list of files.

    Files named explicitly are taken whatever their extension; inside folders only ``extensions`` count.
    Hidden files and folders (``.name``, e.g. our own temp files) are skipped.
    """
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found: dict[Path, None] = {}
    for src in sources:
        path = Path(src).expanduser()
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in exts:
                        found[(Path(root) / name).resolve()] = None
        else:
            raise FileNotFoundError(f"ingest: source not found: {src}")
    return sorted(found)


NOT_AUDIO = "not an audio file (no WAV/FLAC/OGG/MP3/AIFF signature in its first bytes)"


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(16)


def _classify_open_error(path: Path, exc: Exception) -> IngestError:
    """libsndfile's open errors are vague ("Malformed 'fmt ' chunk", "File does not exist" for text named .mp3):
    a file with no audio signature is `not_audio`; a known container it cannot open is `unsupported_codec`."""
    container = audio_io.sniff_container(_read_head(path))
    if container is None:
        return IngestError("not_audio", NOT_AUDIO)
    reason = str(exc).split(": ", 1)[-1].strip() if "Error opening" in str(exc) else str(exc)
    return IngestError("unsupported_codec", f"{container} container with data libsndfile cannot decode: {reason}")


BLOCK_FRAMES = 65536  # decode block: cache-sized, and memory stays flat however long the file


@dataclass
class Decoded:
    mono: np.ndarray  # float32, resampled to the pipeline rate, not yet normalised
    content_hash: str
    duration_s: float
    sample_rate: int
    channels: int
    source_format: str


def _open(path: Path, settings: IngestSettings) -> sf.SoundFile:
    """Open and check what the header tells: container, codec, frame count, length."""
    if path.stat().st_size == 0:
        raise IngestError("empty_file", "file is empty (0 bytes)")
    if path.suffix.lower() == ".mp3" and audio_io.sniff_container(_read_head(path)) != "MP3":
        # mpg123 would scan the whole file for a frame sync, printing notes to stderr, then fail anyway
        raise IngestError("not_audio", NOT_AUDIO)
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _classify_open_error(path, exc) from None
    fmt, seconds = f"{f.format}/{f.subtype}", f.frames / f.samplerate
    problem = None
    if f.frames == 0:
        problem = IngestError("no_frames", f"{fmt} header with no audio frames")
    elif seconds > settings.max_seconds:
        problem = IngestError("too_long", f"{seconds:.1f} s is over the maximum of {settings.max_seconds:g} s (ingest.max_seconds)")
    elif seconds < settings.min_seconds:
        problem = IngestError("too_short", f"{seconds:.3f} s is under the minimum of {settings.min_seconds:g} s (ingest.min_seconds)")
    if problem:
        f.close()
        raise problem
    return f


def decode_file(path: Path, audio: AudioSettings, settings: IngestSettings) -> Decoded:
    """Stream one file block by block: hash the decoded PCM, check it, downmix and resample it.

    The content hash is XXH3-128 of the decoded float32 frames and the sample rate, so a copy of a file,
    or the same audio as WAV and as FLAC, hashes alike.
    """
    with _open(path, settings) as f:
        sr, channels, fmt, expected = f.samplerate, f.channels, f"{f.format}/{f.subtype}", f.frames
        hasher = xxhash.xxh3_128(f"{sr}:{channels}:".encode())
        stream = soxr.ResampleStream(sr, audio.sample_rate, 1, dtype="float32", quality=audio.resample_quality) if sr != audio.sample_rate else None
        parts, frames, energy, non_finite = [], 0, 0.0, 0
        # One decode buffer and one mix buffer per file: fresh 512 KB arrays per block cost an
        # mmap/munmap pair each (glibc), which showed as a third of the CPU time in system time.
        buf = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
        mix = np.empty(BLOCK_FRAMES, dtype=np.float32)
        weights = audio_io.mix_weights(channels)
        try:
            for block in f.blocks(out=buf):  # blocksize, dtype and 2-D shape come from buf
                hasher.update(block)  # C-contiguous: the buffer, or its leading rows for the last block
                n = block.shape[0]
                mono = np.dot(block, weights, out=mix[:n]) if channels > 1 else block[:, 0]
                block_energy = float(np.dot(mono, mono))
                if not np.isfinite(block_energy):  # NaN/Inf propagate through the mix
                    non_finite += int(np.count_nonzero(~np.isfinite(block))) or 1
                energy += block_energy
                parts.append(stream.resample_chunk(mono) if stream else mono.copy())
                frames += n
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise IngestError("decode_error", f"{fmt} decoding failed after {frames / sr:.2f} s: {exc}") from None
    if stream:
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    if frames == 0:
        raise IngestError("no_frames", f"{fmt} file decoded to no audio frames")
    if frames < expected and f.format != "MP3":  # MP3 frame counts in headers are estimates
        raise IngestError("decode_error", f"{fmt} truncated: decoded {frames} of the {expected} frames its header declares")
    if frames / sr < settings.min_seconds:
        raise IngestError("too_short", f"{frames / sr:.3f} s is under the minimum of {settings.min_seconds:g} s (ingest.min_seconds)")
    if non_finite:
        raise IngestError("non_finite", f"{non_finite} NaN/Inf sample(s)")
    level = 10.0 * np.log10(energy / frames) if energy > 0 else -np.inf
    if level < audio.silence_rms_dbfs:
        what = "digital silence" if energy == 0 else f"level {level:.1f} dBFS"
        raise IngestError("silent", f"{what} is below audio.silence_rms_dbfs={audio.silence_rms_dbfs:g}")
    return Decoded(np.concatenate(parts), hasher.hexdigest(), frames / sr, sr, channels, fmt)


def process_file(path: Path, home: Path, audio: AudioSettings, settings: IngestSettings) -> FileResult:
    """Worker: decode and check one file, write its canonical FLAC (unless that content exists). Never raises."""
    try:
        st = path.stat()
    except OSError as exc:
        return FileResult(path.as_uri(), 0, 0, error_kind="io_error", message=str(exc))
    result = FileResult(path.as_uri(), st.st_size, st.st_mtime_ns)
    try:
        d = decode_file(path, audio, settings)
        rel = paths.canonical_relpath(d.content_hash)
        if not (home / rel).exists():
            wave = audio_io.normalize(d.mono, audio.target_rms_dbfs, audio.peak_ceiling_dbfs, inplace=True)
            audio_io.write_flac(home / rel, wave, audio.sample_rate, audio.flac_subtype, audio.flac_compression_level)
        result.ok, result.content_hash, result.audio_path = True, d.content_hash, rel
        result.duration_s, result.sample_rate, result.channels, result.source_format = d.duration_s, d.sample_rate, d.channels, d.source_format
    except IngestError as exc:
        result.error_kind, result.message = exc.kind, str(exc)
    except OSError as exc:
        result.error_kind, result.message = "io_error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # an unforeseen failure of one file must not stop the run
        result.error_kind, result.message = "decode_error", f"{type(exc).__name__}: {exc}"
    return result


def _process_star(args: tuple) -> FileResult:
    return process_file(*args)


def _results(files: list[Path], home: Path, audio: AudioSettings, settings: IngestSettings, workers: int) -> Iterator[FileResult]:
    jobs = [(f, home, audio, settings) for f in files]
    if workers <= 1 or len(files) <= 1:
        yield from map(_process_star, jobs)
        return
    # Largest files first, so no long file is left to one worker at the end. Results come back in
    # that (deterministic) order, which also fixes which of two identical files becomes the track.
    jobs.sort(key=lambda j: (-_size(j[0]), str(j[0])))
    # The workers die with this process (kill -9 included): no orphaned decoder outlives a killed ingest.
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        yield from pool.map(_process_star, jobs, chunksize=1)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _known_sources(conn: Connection, uris: list[str]) -> dict[str, tuple]:
    known = {}
    for i in range(0, len(uris), 500):
        chunk = uris[i : i + 500]
        q = select(ingest_sources.c.source_uri, ingest_sources.c.size_bytes, ingest_sources.c.mtime_ns, ingest_sources.c.status).where(
            ingest_sources.c.source_uri.in_(chunk)
        )
        known.update({r.source_uri: (r.size_bytes, r.mtime_ns, r.status) for r in conn.execute(q)})
    return known


def _todo(conn: Connection, files: list[Path], summary: IngestSummary) -> list[Path]:
    """The files to decode: new or changed (size or mtime) since ingest last saw them; counts the others in ``summary``."""
    known = _known_sources(conn, [f.as_uri() for f in files])
    todo = []
    for f in files:
        prev = known.get(f.as_uri())
        try:
            st = f.stat()
        except OSError:  # vanished since the walk: the worker records it as io_error
            todo.append(f)
            continue
        if prev and prev[0] == st.st_size and prev[1] == st.st_mtime_ns:
            if prev[2] == "error":
                summary.known_errors += 1
            else:
                summary.unchanged += 1
        else:
            todo.append(f)
    return todo


def _record(conn: Connection, r: FileResult, catalog: str, run_id: str, summary: IngestSummary) -> None:
    now = db.utcnow()
    source_row = {"source_uri": r.source_uri, "size_bytes": r.size_bytes, "mtime_ns": r.mtime_ns, "seen_at": now, "track_id": None, "error_kind": None}
    if not r.ok:
        summary.errors += 1
        summary.error_kinds[r.error_kind] = summary.error_kinds.get(r.error_kind, 0) + 1
        conn.execute(
            ingest_errors.insert().values(
                error_id=uuid.uuid4().hex, run_id=run_id, source_uri=r.source_uri, error_kind=r.error_kind, message=r.message, occurred_at=now
            )
        )
        db.upsert(conn, ingest_sources, [{**source_row, "status": "error", "error_kind": r.error_kind}])
        tqdm.write(f"warning: ingest: {r.source_uri}: {r.error_kind}: {r.message}", file=sys.stderr)
        return
    summary.audio_seconds += r.duration_s
    track_id = conn.execute(select(tracks.c.track_id).where(tracks.c.content_hash == r.content_hash)).scalar()
    if track_id is None:
        track_id = r.content_hash[:16]
        conn.execute(
            tracks.insert().values(
                track_id=track_id, catalog=catalog, source_uri=r.source_uri, content_hash=r.content_hash, duration_s=r.duration_s,
                sample_rate=r.sample_rate, channels=r.channels, source_format=r.source_format, audio_path=r.audio_path,
                ingest_run_id=run_id, ingested_at=now,
            )
        )
        summary.added += 1
        status = "track"
    else:
        summary.duplicates += 1
        status = "duplicate"
    db.upsert(conn, ingest_sources, [{**source_row, "status": status, "track_id": track_id}])


def ingest(
    sources: Iterable[str | os.PathLike],
    catalog: str = "default",
    workers: int | None = None,
    *,
    audio: AudioSettings,
    settings: IngestSettings,
    url: str | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> IngestSummary:
    """Ingest files and folders into the catalog with the ``audio:`` and ``ingest:`` settings (``workers``: None takes
    ``settings.workers``; 0 or less, one per core). Returns the run's summary; bad files never raise. When every file was seen
    before and is unchanged there is nothing to do: no `runs` row is recorded (the summary's ``run_id`` is None)."""
    workers = workers if workers is not None else settings.workers
    workers = workers if workers and workers > 0 else (os.cpu_count() or 1)
    sources = [str(s) for s in sources]
    home = paths.home()
    files = find_audio_files(sources, settings.extensions)
    started = time.perf_counter()
    engine = db.get_engine(url)
    run_config = {"sources": sources, "catalog": catalog, "workers": workers, "audio": asdict(audio), "ingest": asdict(settings)}
    summary = IngestSummary(run_id=None)
    with engine.connect() as conn:
        todo = _todo(conn, files, summary)
    if files and not todo:  # every file seen before, unchanged: nothing to decode, no run to record
        summary.wall_seconds = time.perf_counter() - started
        return summary
    with engine.connect() as conn, db.recorded_run(conn, "ingest", run_config, run_id) as run:
        summary.run_id = run.run_id
        bar = tqdm(total=len(todo), desc="ingest", unit="file", disable=not progress or not todo)
        pending, committed = 0, time.monotonic()
        for result in _results(todo, home, audio, settings, workers):
            _record(conn, result, catalog, run.run_id, summary)
            bar.update()
            pending += 1
            if pending >= settings.commit_every or time.monotonic() - committed >= settings.commit_seconds:
                conn.commit()
                pending, committed = 0, time.monotonic()
        bar.close()
        conn.commit()
        summary.wall_seconds = time.perf_counter() - started
        if not files:
            run.status, run.message = "failed", f"no audio files ({', '.join(settings.extensions)}) under {', '.join(sources)}"
        else:
            run.status, run.message = ("succeeded" if summary.ingested else "failed"), summary.line()
    return summary

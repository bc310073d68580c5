"""Track-level train/val/test splits of a folder of token files.

Every chunk of a track lands in the same split; with ``group_by`` whole groups do (e.g. all tracks of
a folder), so no near-duplicate material leaks from training into evaluation. The assignment depends
only on the set of groups and the seed, not on file order.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
from sqlalchemy import func, select
from tqdm import tqdm

from pipeline import paths
from pipeline.fsutil import write_json, write_text
from pipeline.store import db
from pipeline.store.tables import run_errors, splits
from pipeline.tokenize.files import TokenFileError, load_tokens

SPLITS = ("train", "val", "test")
TOKEN_SUFFIXES = (".npz", ".pt")


def split_track_ids(splits_dir: str | Path, split: str) -> list[str]:
    """Track ids of one split list (``<split>.txt`` names token files ``<track_id>.*``: only the names are read, never the files)."""
    path = paths.split_list(Path(splits_dir), split)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {split} split here (cloudtune splits / train embedder writes it)")
    return sorted({PurePosixPath(line).name.split(".")[0] for line in path.read_text().split()})


@dataclass
class SplitSummary:
    run_id: str
    output_root: str
    seed: int
    val_ratio: float
    test_ratio: float
    group_by: str | None
    groups: dict[str, int]
    tracks: dict[str, int]
    files: dict[str, int]
    skipped_files: int
    reused: bool = False  # made before from the same token files and settings (see existing_splits)

    def line(self) -> str:
        if self.reused:
            counts = ", ".join(f"{s} {self.tracks[s]}" for s in SPLITS)
            return f"splits: {self.output_root} already made ({counts} tracks) [run {self.run_id}]; skipped"
        parts = ", ".join(f"{s} {self.tracks[s]} tracks/{self.files[s]} files" for s in SPLITS)
        return f"splits: {parts} ({sum(self.groups.values())} groups by {self.group_by or 'track'}) -> {self.output_root} [run {self.run_id}]"


def group_value(meta: dict, field: str) -> str:
    """The value of ``field`` in a token file's metadata; ``folder`` is the parent folder of its source."""
    if field == "folder":
        source = str(meta.get("source", ""))
        path = urlparse(source).path if source.startswith("file://") else source
        return str(PurePosixPath(path).parent)
    if field not in meta:
        raise ValueError(f"--group-by {field}: not in the token metadata (fields: folder, {', '.join(sorted(meta))})")
    return str(meta[field])


def assign(groups: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, str]:
    """Group -> split. At least one group in val and in test, the rest (at least one) in train."""
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(f"--val-ratio {val_ratio:g} and --test-ratio {test_ratio:g}: each in [0, 1) and together under 1")
    keys = sorted(set(groups))
    if len(keys) < 3:
        raise ValueError(f"splits: need at least 3 tracks (or groups) for train, val and test; found {len(keys)}")
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = max(1, round(len(keys) * test_ratio))
    n_val = max(1, round(len(keys) * val_ratio))
    if n_test + n_val >= len(keys):
        n_test, n_val = 1, 1
    out = {}
    for rank, i in enumerate(order):
        out[keys[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def existing_splits(token_files: list[Path], tokens_root: Path, output_root: Path, val_ratio: float, test_ratio: float, seed: int,
                    group_by: str | None, url: str | None = None) -> SplitSummary | None:
    """The splits in ``output_root`` when they are finished and current: summary.json (written after the lists) made from the same
    tokens root and settings, over as many token files as there are now, with its `splits` rows; else None."""
    path = output_root / "summary.json"
    if not path.exists() or not all(paths.split_list(output_root, s).exists() for s in SPLITS):
        return None
    old = json.loads(path.read_text())
    if (old.get("tokens_root"), old.get("val_ratio"), old.get("test_ratio"), old.get("seed"), old.get("group_by")) != (
            str(tokens_root), val_ratio, test_ratio, seed, group_by):
        return None
    if sum(old["files"].values()) + old["skipped_files"] != len(token_files):
        return None
    with db.connect(url) as conn:
        rows = conn.execute(select(func.count()).select_from(splits).where(splits.c.run_id == old["run_id"])).scalar()
    if rows != sum(old["tracks"].values()):
        return None
    return SplitSummary(**{f: old[f] for f in SplitSummary.__dataclass_fields__ if f != "reused"}, reused=True)


def build_splits(tokens_root: str | Path, output_root: str | Path, val_ratio: float, test_ratio: float, seed: int, group_by: str | None,
                 url: str | None = None, run_id: str | None = None, progress: bool = True, parent_run_id: str | None = None) -> SplitSummary:
    """Write train.txt / val.txt / test.txt (token file paths relative to ``tokens_root``) and summary.json. The ratios, seed
    and ``group_by`` are configs/train.yaml ``splits`` (the caller reads them: the CLI, the steps); ``parent_run_id``: the pipeline
    run the splits are made for (their `runs` row points to it). Splits made before from the same token files and settings
    are kept (:func:`existing_splits`): nothing is written or recorded, and the summary says ``reused``."""
    root = Path(tokens_root)
    files = sorted(p for p in root.rglob("*") if p.suffix in TOKEN_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"--tokens-root {tokens_root}: no token files (.npz/.pt)")
    out = Path(output_root)
    done = existing_splits(files, root, out, val_ratio, test_ratio, seed, group_by, url)
    if done is not None:
        return done
    run_config = {"tokens_root": str(root), "output_root": str(out), "val_ratio": val_ratio, "test_ratio": test_ratio, "seed": seed, "group_by": group_by}
    with db.connect(url) as conn, db.recorded_run(conn, "splits", run_config, run_id, parent_run_id=parent_run_id) as run:
        track_files: dict[str, list[str]] = defaultdict(list)
        track_group: dict[str, str] = {}
        bad_tracks: set[str] = set()
        skipped = 0
        for path in tqdm(files, desc="splits: read metadata", unit="file", disable=not progress):
            try:
                _, meta = load_tokens(path)
            except TokenFileError as exc:
                skipped += 1
                bad_tracks.add(path.name.split(".")[0])  # <track_id>.npz or <track_id>.cNNNN.npz
                conn.execute(run_errors.insert().values(error_id=uuid.uuid4().hex, run_id=run.run_id, stage="splits", item=str(path),
                                                        error_kind="corrupt_token_file", message=str(exc), occurred_at=db.utcnow()))
                print(f"warning: splits: {exc}", file=sys.stderr)
                continue
            track = str(meta["track_id"])
            track_files[track].append(path.relative_to(root).as_posix())
            track_group[track] = group_value(meta, group_by) if group_by else track
        for track in bad_tracks & set(track_files):  # a track with a corrupt chunk is left out whole
            skipped += len(track_files.pop(track))
        split_of_group = assign([track_group[t] for t in track_files], val_ratio, test_ratio, seed)
        lists: dict[str, list[str]] = {s: [] for s in SPLITS}
        tracks_in: dict[str, int] = dict.fromkeys(SPLITS, 0)
        rows = []
        for track in sorted(track_files):
            split = split_of_group[track_group[track]]
            lists[split].extend(sorted(track_files[track]))
            tracks_in[split] += 1
            rows.append({"run_id": run.run_id, "track_id": track, "split": split, "group_key": track_group[track] if group_by else None})
        for split in SPLITS:
            write_text(paths.split_list(out, split), "".join(f"{f}\n" for f in lists[split]))
        groups_in = dict.fromkeys(SPLITS, 0)
        for split in split_of_group.values():
            groups_in[split] += 1
        summary = SplitSummary(run.run_id, str(out), seed, val_ratio, test_ratio, group_by, groups_in, tracks_in,
                               {s: len(lists[s]) for s in SPLITS}, skipped)
        write_json(out / "summary.json", {**asdict(summary), "tokens_root": str(root)})
        db.upsert(conn, splits, rows)
        conn.commit()
        run.message = summary.line()
    return summary

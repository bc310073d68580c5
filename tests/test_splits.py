import json
from dataclasses import asdict

import numpy as np
import pytest
from sqlalchemy import select

from pipeline.cli import main
from pipeline.config import SplitSettings, defaults
from pipeline.data.splits import assign, build_splits
from pipeline.store import db
from pipeline.store.tables import run_errors, splits
from pipeline.tokenize.files import save_tokens


def write_tracks(root, n_tracks, chunks=1, folders=1):
    """Token files as `cloudtune tokenize` writes them: <track_id>.npz, or <track_id>.cNNNN.npz per chunk."""
    for t in range(n_tracks):
        tid = f"{t:016x}"
        for c in range(chunks):
            name = f"{tid}.npz" if chunks == 1 else f"{tid}.c{c:04d}.npz"
            save_tokens(root / name, np.zeros((2, 5), np.int64), {
                "track_id": tid, "source": f"file:///music/album{t % folders}/song{t}.flac", "sample_rate": 24000, "duration_s": 1.0,
                "chunk_index": c, "num_chunks": chunks, "token_shape": [], "backend": "rvq", "codec_version": "v"})
    return root


def configured(**overrides) -> dict:
    """build_splits' val_ratio, test_ratio, seed and group_by: configs/train.yaml `splits` with ``overrides``."""
    return asdict(defaults(SplitSettings, **overrides))


def read_lists(out):
    return {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}


def test_assign_is_deterministic_with_at_least_one_in_val_and_test():
    groups = [f"g{i}" for i in range(20)]
    a = assign(groups, 0.1, 0.1, 42)
    assert a == assign(list(reversed(groups)), 0.1, 0.1, 42)
    assert sorted(a.values()).count("val") == 2 and sorted(a.values()).count("test") == 2
    assert a != assign(groups, 0.1, 0.1, 43)
    small = assign(["a", "b", "c"], 0.01, 0.01, 0)
    assert sorted(small.values()) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="need at least 3 tracks"):
        assign(["a", "b"], 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="together under 1"):
        assign(groups, 0.6, 0.5, 0)


def test_chunks_of_a_track_never_cross_splits(db_url, tmp_path):
    tokens = write_tracks(tmp_path / "tok", 10, chunks=3)
    s = build_splits(tokens, tmp_path / "splits", 0.2, 0.2, seed=7, group_by=None, progress=False)
    lists = read_lists(tmp_path / "splits")
    track_split = {}
    for split, files in lists.items():
        for f in files:
            assert track_split.setdefault(f.split(".")[0], split) == split
    assert sum(len(v) for v in lists.values()) == 30 and len(track_split) == 10
    assert s.tracks == {"train": 6, "val": 2, "test": 2} and s.files == {"train": 18, "val": 6, "test": 6}
    with db.connect(db_url) as conn:
        rows = dict(conn.execute(select(splits.c.track_id, splits.c.split).where(splits.c.run_id == s.run_id)).all())
    assert rows == track_split
    summary = json.loads((tmp_path / "splits" / "summary.json").read_text())
    assert summary["seed"] == 7 and summary["tracks"]["val"] == 2
    again = build_splits(tokens, tmp_path / "again", 0.2, 0.2, seed=7, group_by=None, progress=False)
    assert read_lists(tmp_path / "again") == lists and again.tracks == s.tracks


def test_group_by_folder_keeps_related_tracks_together(tmp_path):
    tokens = write_tracks(tmp_path / "tok", 12, folders=4)  # 4 albums of 3 tracks
    s = build_splits(tokens, tmp_path / "splits", 0.25, 0.25, seed=1, group_by="folder", progress=False)
    assert s.groups == {"train": 2, "val": 1, "test": 1} and s.tracks == {"train": 6, "val": 3, "test": 3}
    with pytest.raises(ValueError, match="--group-by album: not in the token metadata"):
        build_splits(tokens, tmp_path / "x", **configured(group_by="album"), progress=False)


def test_a_corrupt_token_file_is_named_and_its_track_left_out(db_url, tmp_path, capsys):
    tokens = write_tracks(tmp_path / "tok", 6, chunks=2)
    bad = sorted(tokens.glob("*.npz"))[1]  # second chunk of the first track
    bad.write_bytes(b"\x00" * 10)
    s = build_splits(tokens, tmp_path / "splits", **configured(), progress=False)
    assert sum(s.tracks.values()) == 5 and s.skipped_files == 2
    assert f"warning: splits: {bad}: corrupt token file" in capsys.readouterr().err
    with db.connect(db_url) as conn:
        err = conn.execute(select(run_errors)).one()
    assert err.item == str(bad) and err.error_kind == "corrupt_token_file"


def test_splits_cli(tmp_path, capsys):
    tokens = write_tracks(tmp_path / "tok", 5)
    assert main(["splits", "--tokens-root", str(tokens), "--output-root", str(tmp_path / "s"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.startswith("splits: train 3 tracks/3 files, val 1 tracks/1 files, test 1 tracks/1 files")
    few = write_tracks(tmp_path / "few", 2)
    assert main(["splits", "--tokens-root", str(few), "--output-root", str(tmp_path / "f")]) == 2
    assert "need at least 3 tracks" in capsys.readouterr().err
    assert main(["splits", "--tokens-root", str(tmp_path / "empty"), "--output-root", str(tmp_path / "e")]) == 2


def test_splits_cli_takes_its_defaults_from_the_config(tmp_path, monkeypatch):
    """`cloudtune splits` restates no default: configs/train.yaml `splits` (here through the environment) fills each flag left out."""
    tokens = write_tracks(tmp_path / "tok", 10)
    assert main(["splits", "--tokens-root", str(tokens), "--output-root", str(tmp_path / "flags"), "--seed", "5", "--val-ratio", "0.3"]) == 0
    monkeypatch.setenv("CLOUDTUNE__SPLITS__SEED", "5")
    monkeypatch.setenv("CLOUDTUNE__SPLITS__VAL_RATIO", "0.3")
    assert main(["splits", "--tokens-root", str(tokens), "--output-root", str(tmp_path / "config")]) == 0
    assert read_lists(tmp_path / "config") == read_lists(tmp_path / "flags")
    summary = json.loads((tmp_path / "config" / "summary.json").read_text())
    assert (summary["seed"], summary["val_ratio"], summary["test_ratio"]) == (5, 0.3, 0.1)
    assert main(["splits", "--tokens-root", str(tokens), "--output-root", str(tmp_path / "flag-wins"), "--seed", "6"]) == 0
    assert json.loads((tmp_path / "flag-wins" / "summary.json").read_text())["seed"] == 6


def test_finished_splits_are_kept_and_redone_when_the_token_files_or_settings_change(tmp_path):
    tokens = write_tracks(tmp_path / "tok", 6)
    out = tmp_path / "splits"
    first = build_splits(tokens, out, 0.2, 0.2, seed=7, group_by=None, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = build_splits(tokens, out, 0.2, 0.2, seed=7, group_by=None, progress=False)
    assert again.reused and again.run_id == first.run_id and again.tracks == first.tracks
    assert again.line().endswith("; skipped") and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    with db.connect() as conn:
        assert len(conn.execute(select(splits)).all()) == 6  # no second run's rows
    assert not build_splits(tokens, out, 0.2, 0.2, seed=8, group_by=None, progress=False).reused  # other settings
    write_tracks(tokens, 8)  # two more tracks tokenized
    grown = build_splits(tokens, out, 0.2, 0.2, seed=8, group_by=None, progress=False)
    assert not grown.reused and sum(grown.tracks.values()) == 8

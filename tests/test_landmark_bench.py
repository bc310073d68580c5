"""bench/landmark.py without audfprint's source: the gallery and query tracks are evaluate's, audfprint's answers are scored
as Recall@1 with no match a miss, and a missing audfprint is one line that says how to get it."""

import importlib.util

import pytest

from pipeline import config, paths
from pipeline.audio.synth import build_catalog
from pipeline.steps.evaluation import gallery_and_queries
from pipeline.steps.ingest import ingest


@pytest.fixture(scope="module")
def landmark():
    spec = importlib.util.spec_from_file_location("bench_landmark", config.PROJECT_ROOT / "bench" / "landmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_match_lines_are_scored_with_no_match_a_miss(landmark):
    lines = [  # audfprint's `match` output at its default verbosity
        "Mon Nov 30 08:04:05 2026 Reading hash table /v/db.pklz",
        "Read fprints for 3 files ( 5988 hashes) from /v/db.pklz (0.00% dropped)",
        "Mon Nov 30 07:57:55 2026 Analyzed #0 /q/5s/clean/00000.wav of 4.923 s to 625 hashes",
        "Matched /q/5s/clean/00000.wav 4.9 sec 625 raw hashes as /g/aa11.wav at    5.0 s with    48 of   472 common hashes at rank  0",
        "Matched /q/5s/clean/00001.wav 4.9 sec 795 raw hashes as /g/bb22.wav at    5.0 s with    71 of   656 common hashes at rank  0",
        "NOMATCH /q/5s/clean/00002.wav 4.9 sec 12 raw hashes",
        "Processed 3 files (15.0 s total dur) in 0.4 s sec = 0.027 x RT",
    ]
    matched = landmark.parse_matches(lines)
    assert matched == {"/q/5s/clean/00000.wav": "/g/aa11.wav", "/q/5s/clean/00001.wav": "/g/bb22.wav", "/q/5s/clean/00002.wav": None}
    stems = [None if m is None else m.rsplit("/", 1)[1].removesuffix(".wav") for m in matched.values()]
    assert landmark.recall_at_1(["aa11", "cc33", "cc33"], stems) == pytest.approx(1 / 3)


def test_without_audfprint_it_says_how_to_get_it(landmark, tmp_path, capsys):
    assert landmark.main(["--run-id", "r", "--home", str(tmp_path), "--audfprint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"no audfprint source in {tmp_path / 'none'}" in err and "git clone" in err and "pip install" in err


def test_gallery_and_queries_is_evaluates_selection(tmp_path):
    """The run's catalogs plus distractors are searched; only the run's test tracks outside the distractors are queried."""
    ingest([build_catalog(tmp_path / "c", tracks=4, seconds=2, seed=3, sample_rate=24000, channels=1, shared_motif_ratio=0.0)],
           catalog="c", workers=1, progress=False)
    ingest([build_catalog(tmp_path / "d", tracks=2, seconds=2, seed=4, sample_rate=24000, channels=1, shared_motif_ratio=0.0)],
           catalog="d", workers=1, progress=False)
    from pipeline.embed.catalog import catalog_tracks

    own = [t.track_id for t in catalog_tracks(["c"])]
    distractor = [t.track_id for t in catalog_tracks(["d"])]
    splits = paths.splits_dir("r")
    splits.mkdir(parents=True)
    for name, ids in {"train": own[:2], "val": own[2:3], "test": own[3:]}.items():
        (splits / f"{name}.txt").write_text("".join(f"{t}.npz\n" for t in ids))

    catalogs, gallery, queries = gallery_and_queries("r", None, [], "test")
    assert catalogs == ["c"] and len(gallery) == 4 and [t.track_id for t in queries] == own[3:]
    catalogs, gallery, queries = gallery_and_queries("r", None, ["d"], "test")
    assert catalogs == ["c", "d"] and sorted(t.track_id for t in gallery) == sorted(own + distractor) and [t.track_id for t in queries] == own[3:]
    (splits / "test.txt").write_text(f"{own[3]}.npz\n{distractor[0]}.npz\n")  # a distractor track is never queried, even when listed
    assert [t.track_id for t in gallery_and_queries("r", None, ["d"], "test")[2]] == own[3:]
    with pytest.raises(ValueError, match="--distractors nope: no ingested tracks"):
        gallery_and_queries("r", None, ["nope"], "test")

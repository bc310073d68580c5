"""Broken artifacts of a tiny real published run (issue 18, faults): a truncated index file, a truncated embedder checkpoint and
a corrupt published.json. `cloudtune search`, `cloudtune serve` (at start, and its hot swap while serving) and the nightly DAG's
first step each refuse with one line naming the file and the reason, and the run published before stays published:
published.json is never replaced by a publish that fails its checks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from api_server import ENV as API_ENV
from api_server import Server

from pipeline import config, paths
from pipeline.audio.synth import build_catalog
from pipeline.cli import main
from pipeline.cli.serve import app_from_config
from pipeline.models.fingerprint import FingerprintNet, save_fingerprint
from pipeline.models.token_embedder import load_embedder
from pipeline.steps.evaluation import evaluate
from pipeline.steps.ingest import ingest
from pipeline.steps.nightly import nightly_prepare
from pipeline.steps.retrieval import publish
from pipeline.steps.tokens import tokenize
from pipeline.steps.training import make_splits
from pipeline.store import db

pytestmark = pytest.mark.faults
# the runs here are never exported to ONNX (an untrained checkpoint saved by hand): their fingerprint runs the traced torch model
# without the fallback's note, so each refusal is the one line on stderr
ENV = {**API_ENV, "CLOUDTUNE__FINGERPRINT_INFERENCE__BACKEND": "torch"}


def _fingerprinted_run(run_id: str, tokens_root: str) -> None:
    """Run ``run_id``: splits, a toy-size fingerprint model (untrained: what matters here is its file), its catalog embedded,
    flat-indexed and evaluated."""
    make_splits(run_id, [tokens_root])
    settings = config.defaults(config.FingerprintSettings, channels=(8, 16, 32, 32, 64, 64), dim=32, head_hidden=8)
    paths.models_dir(run_id).mkdir(parents=True, exist_ok=True)
    save_fingerprint(paths.fingerprint_checkpoint(run_id), FingerprintNet(settings).eval(), epoch=0)
    evaluate(run_id, embedders=["fingerprint"], index_kinds=["flat"], device="cpu", progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """6 tracks ingested and tokenized; runs r1 (published) and r2 (evaluated, not published), each a fingerprint over a flat index;
    a 3 s clip of a catalog track."""
    root = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        mp.delenv("CLOUDTUNE_DB_URL", raising=False)
        for key, value in ENV.items():
            mp.setenv(key, value)
        src = build_catalog(root / "src", tracks=6, seconds=8, seed=5, sample_rate=22050, channels=1, shared_motif_ratio=0.5)
        ingest([src], catalog="c", workers=1, progress=False)
        tokens = str(tokenize("rvq", "c", progress=False).output_root)
        for run_id in ("r1", "r2"):
            _fingerprinted_run(run_id, tokens)
        publish("r1")
        wave, sr = sf.read(sorted(Path(src).rglob("*.flac"))[0], dtype="float32")
        sf.write(root / "clip.wav", wave[2 * sr : 5 * sr], sr)
        db.dispose_engines()
    return root


@pytest.fixture
def home(built, tmp_path, monkeypatch):
    """A copy of the built CLOUDTUNE_HOME, for this test to break."""
    home = tmp_path / "home"
    shutil.copytree(built / "home", home)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__DEVICE", "cpu")
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__TRANSCRIBE", "false")
    return home


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _refused(capsys, argv: list[str], *names: str) -> str:
    """``cloudtune argv`` exits 2 with one line on stderr that names each of ``names``; returns the line."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in names), lines
    return lines[0]


def _check_all_refuse(capsys, built: Path, broken: Path, reason: str) -> None:
    """search, serve and the nightly's prepare step all refuse naming ``broken`` and ``reason``; r1 stays published."""
    before = paths.published_json().read_bytes()
    _refused(capsys, ["search", str(built / "clip.wav")], str(broken), reason)
    line = _refused(capsys, ["serve", "--port", "1"], str(broken), reason)  # refused before it binds: the port is never used
    assert line.startswith("cloudtune serve: error: the published run cannot be served: ")
    with pytest.raises(ValueError, match=reason) as err:
        nightly_prepare("n1")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)
    assert not paths.nightly_plan("n1").exists()  # refused before it copied or wrote anything
    assert paths.published_json().read_bytes() == before


def test_the_published_run_is_sound_and_searchable(built, home, capsys):
    assert main(["search", str(built / "clip.wav"), "--json"]) == 0
    assert '"results"' in capsys.readouterr().out


def test_a_truncated_index_file_is_refused_naming_it(built, home, capsys):
    index = _truncate(paths.index("r1", "fingerprint", "flat").index)
    _check_all_refuse(capsys, built, index, "truncated or replaced")


def test_a_truncated_checkpoint_is_refused_naming_it(built, home, capsys):
    checkpoint = _truncate(paths.fingerprint_checkpoint("r1"))
    _check_all_refuse(capsys, built, checkpoint, "not a readable fingerprint checkpoint")


@pytest.mark.parametrize("content, reason", [
    (b'{"run_id": "r1", "embedder": "finger', "not JSON"),
    (b'{"run": "r1", "embedder": "fingerprint"}', "no run_id, index_kind, published_at"),
    (b'{"run_id": "r1", "embedder": "fingerprints", "index_kind": "flat", "published_at": "x"}', "embedder 'fingerprints' is not one of"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b"\xff\xfe\x00", "not JSON"),
])
def test_a_corrupt_published_json_is_refused_naming_it_and_a_publish_repairs_it(built, home, capsys, content, reason):
    record = paths.published_json()
    record.write_bytes(content)
    _check_all_refuse(capsys, built, record, reason)
    publish("r2")  # a good run replaces the unreadable record, and says what it replaced
    repaired = json.loads(record.read_text())
    assert repaired["run_id"] == "r2" and reason in repaired["replaced_unreadable"]


def test_a_truncated_token_embedder_checkpoint_is_refused_naming_it(tmp_path):
    path = tmp_path / "embedder.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # the head of a torch zip, cut short
    with pytest.raises(ValueError, match=f"{path}: not a readable token embedder checkpoint"):
        load_embedder(path)


@pytest.mark.parametrize("what", ["index", "checkpoint"])
def test_a_publish_of_a_run_with_a_broken_artifact_is_refused_and_the_last_good_run_stays(built, home, capsys, what):
    broken = _truncate(paths.index("r2", "fingerprint", "flat").index if what == "index" else paths.fingerprint_checkpoint("r2"))
    before = paths.published_json().read_bytes()
    line = _refused(capsys, ["publish", "--run-id", "r2"], str(broken))
    assert line.startswith("cloudtune publish: error: ")
    assert paths.published_json().read_bytes() == before
    assert not [p for p in paths.home().iterdir() if p.name.startswith(".published.json.")]  # no temp file left beside it
    rows = db.connect().exec_driver_sql("SELECT status, message FROM runs WHERE kind = 'publish' ORDER BY started_at DESC").all()
    assert rows[0][0] == "failed" and str(broken) in rows[0][1]


def test_while_serving_a_corrupt_published_json_keeps_the_last_good_run_and_readyz_says_why(built, home, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__RELOAD_POLL_S", "0.05")
    clip = (built / "clip.wav").read_bytes()
    with Server(app_from_config()) as server:
        assert server.wait_ready()["run_id"] == "r1"
        paths.published_json().write_text('{"run_id": "r2", "embe')  # a half-written record (not ours: ours are atomic)
        ready = _wait_readyz(server.url, lambda r: "swap_error" in r)
        assert ready["run_id"] == "r1" and ready["swap_error"].startswith(f"published record not read: {paths.published_json()}: not a published record")
        r = httpx.post(f"{server.url}/v1/search", content=clip, headers={"Content-Type": "audio/wav"}, timeout=30)
        assert r.status_code == 200 and r.json()["run_id"] == "r1"
        _truncate(paths.fingerprint_checkpoint("r2"))
        with pytest.raises(ValueError, match="not a readable fingerprint checkpoint"):
            publish("r2")  # refused: the unreadable record stays, the service keeps r1
        publish("r1")  # the record repaired: the error goes and r1 keeps serving (same run, a new stamp: reloaded)
        ready = _wait_readyz(server.url, lambda r: "swap_error" not in r)
        assert ready["run_id"] == "r1"


def _wait_readyz(url: str, done, timeout_s: float = 30) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready = httpx.get(f"{url}/readyz").json()
        if done(ready):
            return ready
        time.sleep(0.05)
    raise AssertionError(f"/readyz: {ready}")

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from moss_standin import make_standin_dir
from sqlalchemy import select

from pipeline import config
from pipeline.audio.synth import build_catalog
from pipeline.cli import main
from pipeline.steps.ingest import ingest
from pipeline.steps.tokens import tokenize, train_tokenizer
from pipeline.store import db
from pipeline.store.tables import run_errors, run_metrics, runs, tracks
from pipeline.tokenize.catalog import holdout_split
from pipeline.tokenize.files import load_tokens

N_TRACKS = 5


@pytest.fixture
def small_codec(monkeypatch):
    for key, value in {"LEVELS": "3", "CODEBOOK_SIZE": "16", "KMEANS_ITERS": "8", "HOLDOUT_RATIO": "0.2"}.items():
        monkeypatch.setenv(f"CLOUDTUNE__RVQ__{key}", value)


@pytest.fixture
def catalog(tmp_path, small_codec):
    src = build_catalog(tmp_path / "src", tracks=N_TRACKS, seconds=5, seed=11, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    ingest([src], catalog="cat", workers=1, progress=False)
    return "cat"


def test_holdout_split_is_deterministic_and_disjoint():
    ids = [f"t{i}" for i in range(20)]
    train, hold = holdout_split(ids, 0.1, 0)
    assert (train, hold) == holdout_split(list(reversed(ids)), 0.1, 0)
    assert len(hold) == 2 and not set(train) & set(hold) and sorted(train + hold) == sorted(ids)
    assert holdout_split(["a", "b"], 0.1, 0)[1] and holdout_split(["a"], 0.5, 0) == (["a"], [])


def test_rvq_tokenize_trains_a_codec_and_writes_every_track(db_url, catalog, home):
    s = tokenize("rvq", catalog, progress=False)
    assert (s.written, s.skipped, s.failed, s.files) == (N_TRACKS, 0, 0, N_TRACKS)
    out = home / "tokens" / "cat" / s.codec_version
    assert s.output_root == str(out) and (home / "tokenizers" / "cat" / "current").read_text().strip() == s.codec_version
    with db.connect(db_url) as conn:
        ids = sorted(conn.execute(select(tracks.c.track_id)).scalars())
        snr = dict(conn.execute(select(run_metrics.c.k, run_metrics.c.value).where(run_metrics.c.metric == "mel_snr_db")).all())
        kinds = dict(conn.execute(select(runs.c.kind, runs.c.status)).all())
    assert sorted(p.stem for p in out.glob("*.npz")) == ids
    codes, meta = load_tokens(out / f"{ids[0]}.npz")
    assert codes.shape == (3, int(5 * 12.5)) and codes.max() < 16
    assert {k: meta[k] for k in ("track_id", "sample_rate", "duration_s", "chunk_index", "num_chunks", "backend", "codec_version")} == {
        "track_id": ids[0], "sample_rate": 24000, "duration_s": 5.0, "chunk_index": 0, "num_chunks": 1, "backend": "rvq",
        "codec_version": s.codec_version}
    assert meta["source"].startswith("file://") and meta["token_shape"] == [3, 62]
    assert sorted(snr) == [1, 2, 3] and snr[1] < snr[2] < snr[3]
    assert kinds == {"ingest": "succeeded", "tokenizer_train": "succeeded", "tokenize": "succeeded"}
    assert json.loads((out / "summary.json").read_text())["written"] == N_TRACKS


def test_rerun_writes_nothing_overwrite_rewrites_and_chunks(catalog, home, tmp_path):
    first = tokenize("rvq", catalog, progress=False)
    out = tmp_path / "tok"
    mtimes = {}
    again = tokenize("rvq", catalog, output_root=first.output_root, progress=False)
    assert (again.written, again.skipped) == (0, N_TRACKS)
    chunked = tokenize("rvq", catalog, output_root=out, chunk_seconds=2.0, save_format="pt", max_files=2, progress=False)
    assert (chunked.written, chunked.files) == (2, 6)  # 62 frames in chunks of 25: 25 + 25 + 12
    listing = sorted(out.glob("*.chunks.json"))
    assert len(listing) == 2
    index = json.loads(listing[0].read_text())
    parts = [load_tokens(out / name) for name in index["files"]]
    assert [m["chunk_index"] for _, m in parts] == [0, 1, 2] and {m["num_chunks"] for _, m in parts} == {3}
    assert [c.shape[1] for c, _ in parts] == [25, 25, 12] and parts[1][1]["start_s"] == 2.0
    whole, _ = load_tokens(next(p for p in (home / "tokens" / "cat" / first.codec_version).glob("*.npz") if p.stem == index["track_id"]))
    assert np.array_equal(np.concatenate([c for c, _ in parts], axis=1), whole)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    redo = tokenize("rvq", catalog, output_root=out, chunk_seconds=2.0, save_format="pt", max_files=2, overwrite=True, progress=False)
    assert redo.written == 2 and all(p.stat().st_mtime_ns >= t for p, t in mtimes.items())


def test_a_failing_track_is_recorded_and_the_run_goes_on(db_url, catalog, home):
    train_tokenizer(catalog, progress=False)
    with db.connect(db_url) as conn:
        broken_id, path = conn.execute(select(tracks.c.track_id, tracks.c.audio_path).order_by(tracks.c.track_id)).first()
    (home / path).write_bytes(b"not flac any more")
    s = tokenize("rvq", catalog, progress=False)
    assert (s.written, s.failed) == (N_TRACKS - 1, 1)
    with db.connect(db_url) as conn:
        err = conn.execute(select(run_errors)).one()
    assert err.stage == "tokenize" and err.error_kind == "read_error" and err.run_id == s.run_id
    with pytest.raises(sf.LibsndfileError, match="Format not recognised"):
        tokenize("rvq", catalog, output_root=home / "other", fail_fast=True, progress=False)


def test_input_root_mode_without_a_catalog(tmp_path, small_codec):
    src = build_catalog(tmp_path / "music", tracks=4, seconds=4, seed=2, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    s = tokenize("rvq", input_root=src, progress=False)
    assert s.written == 4
    _, meta = load_tokens(next((tmp_path / "home" / "tokens").rglob("*.npz")))
    assert meta["source"].startswith("track_000") and meta["duration_s"] == pytest.approx(4.0)


def test_moss_backend_through_the_auto_model_code_path(tmp_path, catalog, monkeypatch):
    model = make_standin_dir(tmp_path / "moss", num_quantizers=4, codebook_size=32)
    monkeypatch.setenv("CLOUDTUNE__MOSS__CHUNK_SECONDS", "1.92")  # tracks are 5 s: streamed in chunks
    s = tokenize("moss", catalog, model_dir=str(model), device="cpu", num_quantizers=2, save_format="pt", progress=False)
    assert (s.written, s.failed) == (N_TRACKS, 0) and s.codec_version.endswith("-q2")
    codes, meta = load_tokens(next(Path(s.output_root).glob("*.pt")))
    assert codes.shape == (2, 63) and meta["backend"] == "moss" and codes.max() < 32
    (weights,) = model.glob("*.safetensors")
    weights.write_bytes(b"not weights")  # a re-run finds every track done from the config alone: the weights are never read
    again = tokenize("moss", catalog, model_dir=str(model), device="cpu", num_quantizers=2, save_format="pt", progress=False)
    assert (again.run_id, again.skipped, again.codec_version) == (None, N_TRACKS, s.codec_version)
    with pytest.raises(ValueError, match="moss: cannot load the weights of"):  # with work to do: one clear error before any track
        tokenize("moss", catalog, model_dir=str(model), device="cpu", num_quantizers=3, save_format="pt", progress=False)


def test_contrastive_over_moss_tokens_gets_the_moss_settings_from_its_caller(tmp_path, monkeypatch):
    from dataclasses import asdict

    import torch

    from pipeline import paths
    from pipeline.config import EmbedderSettings, defaults
    from pipeline.embed.registry import get_embedder
    from pipeline.models.token_embedder import TokenEmbedder
    from pipeline.steps.retrieval import embedder_settings

    model_dir = str(make_standin_dir(tmp_path / "moss", num_quantizers=4, codebook_size=32))
    tiny = defaults(EmbedderSettings, embedding_dim=32, hidden=64, layers=1, heads=2, dropout=0.0, max_frames=64)
    ckpt = paths.embedder_checkpoint("r1")
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": TokenEmbedder(4, 32, tiny).state_dict(), "embedder": asdict(tiny), "num_quantizers": 4, "codebook_size": 32,
                "codec_version": moss(model_dir, device="cpu").version, "history": []}, ckpt)
    with pytest.raises(ValueError, match="is not an rvq codec in this CLOUDTUNE_HOME and no moss settings were given"):
        get_embedder("contrastive", "r1", "cpu", batch_size=8)
    monkeypatch.setenv("CLOUDTUNE__MOSS__MODEL_DIR", model_dir)
    embedder = get_embedder("contrastive", "r1", "cpu", **embedder_settings())
    assert embedder.tokenizer.name == "moss" and embedder.embed([np.zeros(24000, np.float32)]).shape == (1, 32)


def moss(model, **kw):
    """A MossTokenizer with configs/pipeline.yaml moss settings but those given."""
    from pipeline.config import MossSettings
    from pipeline.tokenize.moss import MossTokenizer

    s = config.defaults(MossSettings)
    return MossTokenizer(model, **({"device": "auto", "num_quantizers": s.num_quantizers, "chunk_seconds": s.chunk_seconds, "batch_size": s.batch_size,
                                    "dtype": s.dtype} | kw))


def test_moss_batched_and_streamed_encodes_agree(tmp_path):
    tok = moss(str(make_standin_dir(tmp_path / "m")), device="cpu", chunk_seconds=0.96, batch_size=3)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (9600, 23040, 3840, 48000)]
    batched = tok.encode_batch(clips, 24000)  # three padded together, the long one streamed
    assert [c.shape for c in batched] == [(4, 5), (4, 12), (4, 2), (4, 25)]
    for clip, codes in zip(clips[:3], batched[:3], strict=True):
        assert np.array_equal(codes, tok.encode(clip, 24000))  # padding does not change a clip's codes
    assert tok.decode(batched[1]).shape == (12 * 1920,)


def test_moss_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no model given"):
        moss(None)
    with pytest.raises(ValueError, match="cannot load a model from"):
        moss(str(tmp_path / "nowhere"), device="cpu")
    model = str(make_standin_dir(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"chunk_seconds 12: must be at most 10 s and a multiple of 0.08 s"):
        moss(model, device="cpu", chunk_seconds=12)
    with pytest.raises(ValueError, match="the model has 4 levels"):
        moss(model, device="cpu", num_quantizers=5)


def test_tokenize_cli_errors(capsys, catalog):
    assert main(["tokenize", "--catalog", "nope"]) == 2
    assert "no tracks in this catalog" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["tokenize", "--catalog", catalog, "--device", "cuda"]) == 2
        assert "--device cuda: no CUDA device is available" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--catalog", catalog]) == 0
    assert "mel SNR dB by levels" in capsys.readouterr().out

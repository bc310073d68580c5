"""The fingerprint embedder: its model, augmentation, contrastive training (checkpoints, resume, epoch rows), catalog segmentation
and the `cloudtune train fingerprint` command, on a tiny synthesized catalog."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sqlalchemy import select

from pipeline import config, paths
from pipeline.audio.augment import TRAIN_ROOMS, Augmenter
from pipeline.audio.synth import build_catalog
from pipeline.cli import main
from pipeline.config import FingerprintSettings
from pipeline.data.fingerprint import SegmentPairs
from pipeline.embed import embed_spans
from pipeline.embed.catalog import embed_catalog
from pipeline.embed.fingerprint import FingerprintEmbedder
from pipeline.embed.registry import get_embedder
from pipeline.models.fingerprint import FingerprintNet, LogMelFrontEnd, for_inference, load_fingerprint, save_fingerprint
from pipeline.steps.evaluation import evaluate
from pipeline.steps.ingest import ingest
from pipeline.steps.retrieval import embedder_settings
from pipeline.steps.tokens import tokenize
from pipeline.steps.training import make_splits, train_fingerprint_model
from pipeline.store import db
from pipeline.store.tables import tracks, training_epochs
from pipeline.train.fingerprint import nt_xent, step_threads

ENV = {"CLOUDTUNE__RVQ__LEVELS": "2", "CLOUDTUNE__RVQ__CODEBOOK_SIZE": "16", "CLOUDTUNE__RVQ__KMEANS_ITERS": "4",
       "CLOUDTUNE__QUERIES__PER_TRACK": "2", "CLOUDTUNE__QUERIES__PLAN": "tiny",
       "CLOUDTUNE__QUERIES__PLANS": "{tiny: {lengths_s: [2, 5], sets: {clean: clean, pink0db: 'pink:0'}}}",
       "CLOUDTUNE__LATENCY__SINGLE_QUERIES": "4", "CLOUDTUNE__LATENCY__BATCH_SIZE": "8", "CLOUDTUNE__EVALUATION__CATALOG_VAE": "false"}
SMALL = {"fingerprint": {"channels": [8, 16, 32, 32, 64, 64], "dim": 32, "head_hidden": 8},
         "fingerprint_training": {"epochs": 2, "batch_size": 24, "num_workers": 0, "val_queries_per_track": 4},
         "augment": {"rir_bank": 2}}


def small_settings() -> FingerprintSettings:
    return config.defaults(FingerprintSettings, channels=(8, 16, 32, 32, 64, 64), dim=32, head_hidden=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """8 demo tracks ingested and tokenized (the splits are built from token files) and run r1's splits."""
    root = tmp_path_factory.mktemp("fingerprint")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        mp.delenv("CLOUDTUNE_DB_URL", raising=False)
        for key, value in ENV.items():
            mp.setenv(key, value)
        src = build_catalog(root / "src", tracks=8, seconds=6, seed=3, sample_rate=22050, channels=1, shared_motif_ratio=0.5)
        ingest([src], catalog="c", workers=1, progress=False)
        make_splits("r1", [str(tokenize("rvq", "c", progress=False).output_root)])
        (root / "fp.yaml").write_text(yaml.safe_dump(SMALL))
        db.dispose_engines()
    return root, src


@pytest.fixture
def run_home(built, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(built[0] / "home", home)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return home


def test_the_model_gives_unit_vectors_whatever_the_level():
    torch.manual_seed(0)
    model = FingerprintNet(small_settings()).eval()
    wave = torch.randn(3, model.segment_samples) * 0.1
    with torch.no_grad():
        out, louder = model(wave), model(wave * 8)
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out, louder, atol=1e-4)  # the front end normalizes each segment's level


def test_the_split_head_computes_what_its_grouped_convolutions_would():
    """The head runs its weights as batched matrix products for speed: the numbers must stay those of the grouped 1x1
    convolutions the weights belong to (every checkpoint's meaning), forward and backward."""
    torch.manual_seed(0)
    head = FingerprintNet(small_settings()).head
    h = torch.randn(5, 64, requires_grad=True)
    fast = head(h)
    slow = head.second(torch.nn.functional.elu(head.first(h.unsqueeze(-1)))).squeeze(-1)
    assert fast.shape == (5, 32)
    assert torch.allclose(fast, slow, atol=1e-6)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), h)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), h)
    assert torch.allclose(g_fast, g_slow, atol=1e-5)


def test_a_checkpoint_round_trips_and_a_broken_one_is_refused_naming_the_file(tmp_path):
    model = FingerprintNet(small_settings()).eval()
    path = tmp_path / "fp.pt"
    save_fingerprint(path, model, epoch=0)
    loaded, ckpt = load_fingerprint(path)
    x = torch.randn(2, model.segment_samples)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert ckpt["epoch"] == 0 and loaded.settings == model.settings
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{path}: not a readable fingerprint checkpoint"):
        load_fingerprint(path)


def test_the_numpy_front_end_makes_the_torch_front_ends_log_mel():
    """ONNX inference takes its log-mel from the NumPy front end; the network must see what training gave it: noise at any
    level, digital silence, a segment silent for half its length."""
    front = FingerprintNet(small_settings()).front
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((6, 8000)) * rng.uniform(0.001, 0.5, (6, 1))).astype(np.float32)
    waves[1] = 0.0
    waves[2, :4000] = 0.0
    waves[3] = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000)
    with torch.inference_mode():
        want = front(torch.from_numpy(waves)).numpy()
    got = front.numpy(waves)
    assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.abs(got - want).max() < 1e-4


def test_the_frozen_inference_model_gives_the_eager_vectors_at_any_batch_size():
    torch.manual_seed(1)
    model = FingerprintNet(small_settings())
    model.train()(torch.randn(16, model.segment_samples))  # BatchNorm statistics that are not the identity
    model.eval()
    frozen = for_inference(model)
    assert frozen is not model  # traced: the pinned torch has TorchScript
    for batch in (1, 5):
        x = torch.randn(batch, model.segment_samples) * 0.1
        with torch.inference_mode():
            assert torch.allclose(frozen(x), model(x), atol=1e-5)


def test_the_fingerprint_cuts_a_wave_resampled_once_like_its_pieces_resampled_alone(tmp_path):
    path = tmp_path / "fp.pt"
    save_fingerprint(path, FingerprintNet(small_settings()).eval(), epoch=0)
    emb = FingerprintEmbedder(path, "cpu", batch_size=4, sample_rate=24000)
    wave = np.random.default_rng(2).standard_normal(24000 * 3).astype(np.float32) * 0.1
    spans = [(0, 24000), (12000, 36000), (48000, 72000), (60000, 72000)]  # the last one short: zero-padded in both
    once = embed_spans(emb, [wave, wave[:100]], [spans, []])
    alone = emb.embed([wave[a:b] for a, b in spans])
    assert once.shape == (4, 32)
    # edges of a piece resampled alone differ from the same samples cut from the whole: close, not equal
    assert np.all(np.sum(once * alone, axis=1) > 0.98)


def test_augmented_views_have_the_asked_length_and_replay_from_their_seed():
    s = config.defaults(config.AugmentSettings, rir_bank=2, codec_p=1.0, band_p=1.0, speed_p=1.0, reverb_p=1.0)
    aug = Augmenter(s, 8000, [np.random.default_rng(0).standard_normal(16000).astype(np.float32)])
    wave = np.random.default_rng(1).standard_normal(aug.margin(8000)).astype(np.float32) * 0.1
    a = aug(wave, 8000, np.random.default_rng(5))
    b = aug(wave, 8000, np.random.default_rng(5))
    assert a.shape == (8000,) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.allclose(a, wave[:8000])
    assert len(aug.rooms) == 2 and TRAIN_ROOMS >= 8  # the query sets' rooms are ids 0-7


def test_pairs_handed_as_log_mels_are_the_front_end_of_the_pairs_as_waves():
    """CPU training has its data workers compute the log-mels: the same numbers the model's front end makes of the waves."""
    s = small_settings()
    front = LogMelFrontEnd(s)
    aug = Augmenter(config.defaults(config.AugmentSettings, rir_bank=2, codec_p=0.5), s.sample_rate)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(s.sample_rate * 3).astype(np.float32) * 0.1 for _ in range(2)]
    n, hop = s.sample_rate, s.sample_rate // 2
    plain, mels = SegmentPairs(waves, n, hop, 0.5, aug, seed=3), SegmentPairs(waves, n, hop, 0.5, aug, seed=3, front=front)
    for k in (0, 4, len(plain) - 1):
        anchor, positive, track, start = plain[k]
        m_anchor, m_positive, m_track, m_start = mels[k]
        assert (m_track, m_start) == (track, start) and m_anchor.shape == m_positive.shape == (1, s.n_mels, front.frames(n))
        assert torch.allclose(m_anchor, front(anchor[None])[0], atol=1e-5)
        assert torch.allclose(m_positive, front(positive[None])[0], atol=1e-5)


def test_nt_xent_rewards_matching_pairs_and_drops_overlapping_segments_from_the_negatives():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    noisy = torch.nn.functional.normalize(a + 0.1 * torch.randn(8, 16, generator=g), dim=1)
    other = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    assert nt_xent(a, noisy, 0.1) < nt_xent(a, other, 0.1)
    twin = torch.cat([a[:4], a[:4]])  # rows 4-7 repeat rows 0-3: without the mask they are hard false negatives
    same = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(4):
        same[i, i + 4] = same[i + 4, i] = True
    assert nt_xent(twin, twin, 0.1, same) < nt_xent(twin, twin, 0.1)


def test_a_cpu_training_step_takes_the_cores_its_data_workers_leave():
    cores = torch.get_num_threads()
    assert step_threads("cpu", 1) == max(1, cores - 1) and step_threads("cpu", cores + 3) == 1
    assert step_threads("cpu", 0) == 0 and step_threads("cuda:0", 1) == 0  # 0: torch's threads left as they are


def test_training_writes_checkpoints_and_epoch_rows_and_a_resumed_run_ends_with_the_same_weights(built, run_home):
    cfg = built[0] / "fp.yaml"
    full = train_fingerprint_model(run_id="r1", config_path=cfg, device="cpu", progress=False)
    assert len(full["history"]) == 2 and paths.fingerprint_curve("r1").exists() and paths.fingerprint_summary("r1").exists()
    with db.connect() as conn:
        rows = conn.execute(select(training_epochs).where(training_epochs.c.model == "fingerprint")).mappings().all()
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["val_recall_at_1"] <= 1 for r in rows)
    final = torch.load(paths.fingerprint_checkpoint("r1"), weights_only=False)["model"]

    paths.fingerprint_checkpoint("r1").unlink()

    def killed(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after epoch 1 ...
        train_fingerprint_model(run_id="r1", config_path=cfg, device="cpu", progress=False, on_epoch_end=killed)
    assert torch.load(paths.fingerprint_checkpoint("r1"), weights_only=False)["epoch"] == 0
    resumed = train_fingerprint_model(run_id="r1", config_path=cfg, device="cpu", resume=True, progress=False)  # ... and resumed
    assert len(resumed["history"]) == 2
    weights = torch.load(paths.fingerprint_checkpoint("r1"), weights_only=False)["model"]
    assert all(torch.equal(weights[k], final[k]) for k in final)


def test_the_catalog_is_cut_into_the_models_segments(built, run_home):
    train_fingerprint_model(run_id="r1", config_path=built[0] / "fp.yaml", device="cpu", epochs=1, progress=False)
    inference = config.load_fingerprint().fingerprint_inference
    assert inference.hop_s == 0.25  # configs/fingerprint.yaml: half the trained hop

    # hop_s null: the checkpoint's own grid, the one it was trained on
    own = get_embedder("fingerprint", "r1", "cpu", **(embedder_settings() | {"fingerprint": replace(inference, hop_s=None)}))
    manifest = embed_catalog("r1", own, settings=config.load_index().segments, hubs=config.load_index().hubs, progress=False)
    seg = manifest["segmentation"]
    assert (seg["window_s"], seg["hop_s"]) == (1.0, 0.5)  # the model's, not index.yaml's 5 s / 1 s
    assert manifest["dim"] == 32 and manifest["tracks"] == 8
    assert manifest["count"] == 8 * (int((6 - 1.0) / 0.5) + 1)  # 6 s tracks: a 1 s segment every 0.5 s

    # the default: a finer grid than the checkpoint's, for the catalog (re-embedded: its manifest differs) and the queries
    embedder = get_embedder("fingerprint", "r1", "cpu", **embedder_settings())
    manifest = embed_catalog("r1", embedder, settings=config.load_index().segments, hubs=config.load_index().hubs, progress=False)
    assert manifest["segmentation"]["hop_s"] == 0.25 and manifest["count"] == 8 * (int((6 - 1.0) / 0.25) + 1)


def test_train_fingerprint_command(built, run_home, capsys):
    assert main(["train", "fingerprint", "--run-id", "r1", "--config", str(built[0] / "fp.yaml"), "--epochs", "1", "--device", "cpu"]) == 0
    assert "train: fingerprint r1: 1 epochs" in capsys.readouterr().out
    assert main(["train", "fingerprint", "--config", str(built[0] / "fp.yaml")]) == 2
    assert "--run-id is required" in capsys.readouterr().err
    assert main(["train", "fingerprint", "--run-id", "nosuchrun", "--config", str(built[0] / "fp.yaml")]) != 0
    assert "run nosuchrun has no splits yet" in capsys.readouterr().err


def test_training_music_joins_the_train_split_and_never_a_held_out_track(built, run_home, tmp_path, capsys):
    music = build_catalog(tmp_path / "music", tracks=3, seconds=6, seed=11, sample_rate=22050, channels=1, shared_motif_ratio=0.0)
    ingest([music], catalog="music", workers=1, progress=False)
    cfg = str(built[0] / "fp.yaml")
    assert main(["train", "fingerprint", "--run-id", "r1", "--config", cfg, "--epochs", "1", "--device", "cpu", "--train-catalog", "music"]) == 0
    split_ids = paths.split_list(paths.splits_dir("r1"), "train").read_text().split()
    trained = torch.load(paths.fingerprint_checkpoint("r1"), weights_only=False)["train_tracks"]
    with db.connect() as conn:
        music_ids = {r.track_id for r in conn.execute(select(tracks.c.track_id).where(tracks.c.catalog == "music"))}
    assert len(music_ids) == 3 and music_ids <= set(trained) and len(trained) == len(split_ids) + 3
    with pytest.raises(ValueError, match="was trained on 3 of their tracks"):  # nor is training music ever a distractor
        evaluate("r1", embedders=["fingerprint"], distractors=["music"], progress=False)
    capsys.readouterr()

    # the run's own catalog holds its val and test tracks: training on all of it is refused, as is a catalog with no tracks
    assert main(["train", "fingerprint", "--run-id", "r2", "--splits-dir", str(paths.splits_dir("r1")), "--config", cfg,
                 "--device", "cpu", "--train-catalog", "c"]) != 0
    assert "are in the val split" in capsys.readouterr().err
    assert main(["train", "fingerprint", "--run-id", "r2", "--splits-dir", str(paths.splits_dir("r1")), "--config", cfg,
                 "--device", "cpu", "--train-catalog", "nosuch"]) != 0
    assert "catalog 'nosuch' has no tracks" in capsys.readouterr().err
    assert main(["train", "embedder", "--catalog", "c", "--train-catalog", "music"]) == 2


def test_evaluate_and_search_go_through_the_fingerprint_with_offsets(built, run_home, tmp_path, capsys):
    import json

    import soundfile as sf

    from pipeline.steps.evaluation import evaluate

    summary = train_fingerprint_model(run_id="r1", config_path=built[0] / "fp.yaml", device="cpu", epochs=1, progress=False)
    assert Path(summary["onnx"]["path"]) == paths.fingerprint_onnx("r1")  # backend onnx (the default): trained, then exported
    result = evaluate("r1", embedders=["fingerprint"], index_kinds=["flat"], device="cpu", progress=False)
    rows = {(r["query_set"], r["metric"], r["k"]): r["value"] for r in result["rows"] if r["embedder"] == "fingerprint"}
    assert {("5s/clean", "recall", 1), ("2s/pink0db", "recall", 1), ("5s/clean", "offset_hit", 0)} <= set(rows)
    assert not result["skipped"] and result["choice"]["embedder"] == "fingerprint"
    wave, sr = sf.read(built[1] / "track_0003.flac")
    sf.write(tmp_path / "clip.wav", wave[int(1.5 * sr) : int(4.5 * sr)], sr)
    search = ["search", str(tmp_path / "clip.wav"), "--run-id", "r1", "--embedder", "fingerprint", "--kind", "flat", "--json"]
    assert main(search) == 0
    out = capsys.readouterr()
    results = json.loads(out.out)["results"]
    assert results and all(0 <= r["offset_s"] <= 6 for r in results) and {"rank", "track_id", "score", "offset_s"} <= set(results[0])
    assert "torch inference" not in out.err  # the network ran in ONNX Runtime
    # without the export, the same search runs the traced torch model, says so, and answers the same
    paths.fingerprint_onnx("r1").unlink()
    assert main(search) == 0
    out = capsys.readouterr()
    assert "fingerprint: torch inference: no ONNX export at" in out.err
    again = json.loads(out.out.splitlines()[-1])["results"]
    # the same scores rank by rank; the vectors agree to ~1e-7, so near-tied hits (this one-epoch model has many, several tracks at
    # a score of 1.0, each with several tied alignments) may swap places or offsets, but a hit both backends return has one score
    assert np.allclose([r["score"] for r in again], [r["score"] for r in results], atol=1e-4)
    onnx_hits = {(r["track_id"], r["offset_s"]): r["score"] for r in results}
    shared = [r for r in again if (r["track_id"], r["offset_s"]) in onnx_hits]
    assert all(abs(onnx_hits[(r["track_id"], r["offset_s"])] - r["score"]) < 1e-4 for r in shared)
    assert {r["track_id"] for r in again} & {r["track_id"] for r in results}  # ties reorder the tracks, never replace them all


def test_an_int8_export_calibrated_on_the_runs_tracks_embeds_a_catalog_that_only_int8_queries_search(built, run_home, tmp_path, capsys,
                                                                                                     monkeypatch):
    import json

    import soundfile as sf

    train_fingerprint_model(run_id="r1", config_path=built[0] / "fp.yaml", device="cpu", epochs=1, progress=False)  # and its float32 export
    assert not evaluate("r1", embedders=["fingerprint"], index_kinds=["flat"], device="cpu", progress=False).get("reused")
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__PRECISION", "int8")
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__INT8_CALIBRATION", "64")
    assert main(["export", "onnx", "--run-id", "r1"]) == 0
    assert "export: int8 -> " in capsys.readouterr().out and paths.fingerprint_onnx("r1", "int8").exists()
    assert main(["export", "onnx", "--run-id", "r1"]) == 0
    assert "is already the int8 export of that checkpoint" in capsys.readouterr().out
    again = evaluate("r1", embedders=["fingerprint"], index_kinds=["flat"], device="cpu", progress=False)  # int8 vectors: evaluated anew
    assert not again.get("reused") and json.loads(paths.evaluation_json("r1").read_text())["config"]["fingerprint_precision"] == "int8"

    settings = embedder_settings()
    int8 = get_embedder("fingerprint", "r1", "cpu", **settings)
    f32 = get_embedder("fingerprint", "r1", "cpu", **{**settings, "fingerprint": replace(settings["fingerprint"], precision="float32")})
    assert (int8.backend, int8.precision, f32.precision) == ("onnx", "int8", "float32")
    assert int8.manifest()["version"] == f32.manifest()["version"] + "-int8-w7a8" and "precision" not in f32.manifest()
    waves = [sf.read(p, dtype="float32")[0] for p in sorted(built[1].glob("*.flac"))[:3]]
    a, b = int8.embed_spans(waves, [[(0, 22050), (11025, 33075)]] * 3), f32.embed_spans(waves, [[(0, 22050), (11025, 33075)]] * 3)
    assert (a * b).sum(1).min() > 0.95  # a little off float32, never another vector

    assert main(["embed-catalog", "--embedder", "fingerprint", "--run-id", "r1"]) == 0
    assert main(["index", "build", "--kind", "flat", "--embedder", "fingerprint", "--run-id", "r1"]) == 0
    wave, sr = sf.read(built[1] / "track_0003.flac")
    sf.write(tmp_path / "clip.wav", wave[int(1.5 * sr) : int(4.5 * sr)], sr)
    search = ["search", str(tmp_path / "clip.wav"), "--run-id", "r1", "--embedder", "fingerprint", "--kind", "flat", "--json"]
    capsys.readouterr()
    assert main(search) == 0
    assert json.loads(capsys.readouterr().out)["results"]
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__PRECISION", "float32")  # queries in float32 against the int8 catalog: refused
    assert main(search) != 0
    assert "built for embedder version='r1/fingerprint-1-int8-w7a8', but the embedder has 'r1/fingerprint-1'" in capsys.readouterr().err


def test_an_int8_export_its_check_refuses_is_not_written_and_float32_serves(built, run_home, capsys, monkeypatch):
    train_fingerprint_model(run_id="r1", config_path=built[0] / "fp.yaml", device="cpu", epochs=1, progress=False)
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__PRECISION", "int8")
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__INT8_CALIBRATION", "32")
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__INT8_MIN_COSINE", "1.0")  # no quantized vector is float32's exactly
    assert main(["export", "onnx", "--run-id", "r1"]) == 2
    err = capsys.readouterr().err
    assert "fingerprint int8 export: its vectors' mean cosine to float32's is" in err and "nothing written" in err
    assert sorted(p.name for p in paths.models_dir("r1").iterdir() if "onnx" in p.name) == ["fingerprint.onnx"]
    emb = get_embedder("fingerprint", "r1", "cpu", **embedder_settings())
    assert (emb.backend, emb.precision) == ("onnx", "float32") and "fingerprint: float32 inference: no ONNX export at" in capsys.readouterr().err


def test_an_int8_export_of_an_older_scheme_is_not_used_and_is_made_again(built, run_home, capsys, monkeypatch):
    """An int8 export whose metadata name no scheme (8-bit weights, which saturate on x86 without VNNI) or another one: search
    runs float32 and says why, and `export onnx` quantizes again instead of keeping it."""
    import onnx

    train_fingerprint_model(run_id="r1", config_path=built[0] / "fp.yaml", device="cpu", epochs=1, progress=False)
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__PRECISION", "int8")
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__INT8_CALIBRATION", "32")
    assert main(["export", "onnx", "--run-id", "r1"]) == 0
    path = paths.fingerprint_onnx("r1", "int8")
    proto = onnx.load(str(path))
    assert {p.key: p.value for p in proto.metadata_props}["scheme"] == "w7a8"
    onnx.helper.set_model_props(proto, {p.key: p.value for p in proto.metadata_props if p.key != "scheme"})
    onnx.save_model(proto, str(path))
    capsys.readouterr()
    emb = get_embedder("fingerprint", "r1", "cpu", **embedder_settings())
    assert (emb.backend, emb.precision) == ("onnx", "float32")
    assert "was quantized by another int8 scheme (8-bit weights; this code makes w7a8)" in capsys.readouterr().err
    assert main(["export", "onnx", "--run-id", "r1"]) == 0
    assert "export: int8 -> " in capsys.readouterr().out
    assert get_embedder("fingerprint", "r1", "cpu", **embedder_settings()).precision == "int8"

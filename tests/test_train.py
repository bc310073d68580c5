import numpy as np
import pytest
import torch
import yaml
from sqlalchemy import select

from pipeline.audio.synth import build_catalog
from pipeline.cli import main
from pipeline.config import EmbedderSettings, SplitSettings, TrainSettings, defaults
from pipeline.data.dataset import AudioView, PairCollator, RetrievalProbe, TokenPairDataset, TrackSource, pad_codes, token_dropout
from pipeline.models.token_embedder import TokenEmbedder, info_nce, load_embedder
from pipeline.steps.ingest import ingest
from pipeline.steps.tokens import tokenize
from pipeline.steps.training import train_token_embedder as train_embedder
from pipeline.store import db
from pipeline.store.tables import training_epochs
from pipeline.tokenize import mask_id, pad_id
from pipeline.tokenize.files import save_tokens

TINY_MODEL = defaults(EmbedderSettings, embedding_dim=32, hidden=64, layers=1, heads=2, dropout=0.1, max_frames=64)


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    for key, value in {"LEVELS": "3", "CODEBOOK_SIZE": "16", "KMEANS_ITERS": "8"}.items():
        monkeypatch.setenv(f"CLOUDTUNE__RVQ__{key}", value)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "embedder": TINY_MODEL.__dict__,
        "training": {"epochs": 3, "batch_size": 16, "lr": 2e-3, "clip_seconds": 2.0, "clips_per_track": 8, "val_queries_per_track": 3,
                     "warmup_ratio": 0.1, "degrade_p": 0.5},
        "splits": {"val_ratio": 0.2, "test_ratio": 0.2, "seed": 1, "group_by": None},
    }))
    return path


@pytest.fixture
def tokens(tmp_path, tiny_config):
    src = build_catalog(tmp_path / "src", tracks=10, seconds=8, seed=4, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    ingest([src], catalog="c", workers=1, progress=False)
    return tokenize("rvq", "c", progress=False).output_root


def test_embedder_output_is_unit_norm_and_ignores_padding():
    torch.manual_seed(0)
    model = TokenEmbedder(3, 16, TINY_MODEL).eval()
    clip = torch.randint(0, 16, (1, 3, 10))
    clip[0, :, 0] = 0  # code 0 is a real code
    alone = model(clip, torch.ones(1, 10, dtype=torch.bool))
    longer = torch.randint(0, 16, (1, 3, 20))
    batch, mask = pad_codes([clip[0].numpy(), longer[0].numpy()], 16)
    assert batch[0, 0, 15] == pad_id(16) and mask.tolist()[0] == [True] * 10 + [False] * 10
    together = model(batch, mask)
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="at most 64"):
        model(torch.zeros(1, 3, 65, dtype=torch.long), torch.ones(1, 65, dtype=torch.bool))


def test_info_nce_ignores_other_clips_of_the_same_track():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    plain = info_nce(a, a, 0.1)
    same_track = info_nce(a, a, 0.1, torch.tensor([0, 0, 1, 2]))
    assert same_track < plain  # the false negative no longer counts against row 0 and 1
    assert torch.isfinite(same_track)


def test_token_dropout_uses_the_mask_id_and_keeps_a_frame():
    codes = np.zeros((2, 50), np.int64)
    out = token_dropout(codes, 0.5, 16, np.random.default_rng(0))
    dropped = (out == mask_id(16)).all(axis=0)
    assert 10 < dropped.sum() < 40 and (out[:, ~dropped] == 0).all()
    assert (token_dropout(codes[:, :1], 1.0, 16, np.random.default_rng(0)) == 0).all()


def test_pair_dataset_views_are_random_crops_and_reproducible(tmp_path):
    # frame f of track i holds code 100 * i + f (mod 1000) on both levels: a view shows where it was cut
    files = [save_tokens(tmp_path / f"t{i}.npz", np.tile((100 * i + np.arange(100)) % 1000, (2, 1)), {
        "track_id": f"t{i}", "source": "s", "sample_rate": 24000, "duration_s": 8.0, "chunk_index": 0, "num_chunks": 1, "token_shape": [],
        "backend": "rvq", "codec_version": "v"}) for i in range(3)]
    s = defaults(TrainSettings, clip_seconds=4.0, clips_per_track=2, token_dropout=0.0)
    ds = TokenPairDataset([TrackSource(f"t{i}", (f,)) for i, f in enumerate(files)], s, 1024, 12.5)
    assert len(ds) == 6 and ds.clip_frames == 50
    a, b, t = ds[4]
    assert t == 1
    for view in (a, b):
        assert 30 <= view.shape[1] <= 50  # 0.6-1.0 of the clip
        start = view[0, 0] - 100
        assert np.array_equal(view[0], 100 + start + np.arange(view.shape[1]))  # a contiguous slice of track 1
    again = ds[4]
    assert np.array_equal(again[0], a) and np.array_equal(again[1], b)  # same (seed, epoch, item): same views
    ds.set_epoch(1)
    epoch1 = [ds[i][0] for i in range(6)]
    ds.set_epoch(0)
    epoch0 = [ds[i][0] for i in range(6)]
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(epoch0, epoch1, strict=True))
    batch = PairCollator(1024)([ds[i] for i in range(6)])
    assert batch["a"].shape[:2] == (6, 2) and batch["a_mask"].sum(1).min() >= 30 and batch["track"].tolist() == [0, 1, 2, 0, 1, 2]
    assert (batch["a"][~batch["a_mask"].unsqueeze(1).expand_as(batch["a"])] == pad_id(1024)).all()
    # training.pair_window_s: the second view starts within that many seconds (12.5 frames/s) of the first, anywhere else in range
    near = TokenPairDataset(ds.tracks, defaults(TrainSettings, clip_seconds=4.0, clips_per_track=200, token_dropout=0.0, pair_window_s=0.8), 1024, 12.5)
    pairs = [(int(a[0, 0]) % 100, int(b[0, 0]) % 100, b.shape[1]) for a, b, _ in (near[i] for i in range(len(near)))]
    gaps = [sb - sa for sa, sb, length in pairs if sb < 100 - length]  # not pushed back by the track's end
    assert max(abs(g) for g in gaps) == 10 and min(gaps) < 0 < max(gaps)  # 0.8 s = 10 frames, both ways
    assert all(sb <= sa + 10 for sa, sb, _ in pairs)  # at the end: as close as the track allows
    assert max(abs(int(b[0, 0]) - int(a[0, 0])) for a, b, _ in (ds[i] for i in range(6))) > 10  # without it: anywhere in the track


def test_retrieval_probe_searches_val_queries_among_val_and_distractor_tracks(tmp_path):
    # 2 val tracks and 3 distractor (train) tracks of distinct codes; an embedder that is a bag of the clip's codes finds
    # every clean query's own track, a constant one ties everywhere and "finds" track 0 only
    meta = {"source": "s", "sample_rate": 24000, "duration_s": 8.0, "chunk_index": 0, "num_chunks": 1, "token_shape": [], "backend": "rvq",
            "codec_version": "v"}
    codes = [np.tile((100 * i + np.arange(100)) % 1000, (2, 1)) for i in range(5)]
    files = [save_tokens(tmp_path / f"t{i}.npz", codes[i], {"track_id": f"t{i}", **meta}) for i in range(2)]
    val = TokenPairDataset([TrackSource(f"t{i}", (f,)) for i, f in enumerate(files)], defaults(TrainSettings, clip_seconds=2.0), 1024, 12.5)
    probe = RetrievalProbe(val, queries_per_track=6, seed=0, distractors=codes[2:])
    assert probe.n_tracks == 5 and len(probe.queries) == 12 and sorted(set(probe.gallery_track)) == [0, 1, 2, 3, 4]

    def bag(c, m):
        out = torch.zeros(c.shape[0], 1026)
        return torch.nn.functional.normalize(out.scatter_add(1, c[:, 0], m.float()), dim=1)

    assert probe.recall_at_1(bag) == 1.0
    assert probe.recall_at_1(lambda c, m: torch.ones(c.shape[0], 4)) == 0.5


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_training_learns_and_a_killed_run_resumes_to_the_same_weights(db_url, tokens, tiny_config, home, ema_decay):
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["training"]["ema_decay"] = ema_decay
    tiny_config.write_text(yaml.safe_dump(cfg))
    straight = train_embedder(tokens, run_id="straight", config_path=tiny_config, device="cpu", progress=False)
    hist = straight["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and straight["online_augmentation"] is True
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(0.0 <= h["val_recall_at_1"] <= 1.0 for h in hist)
    with db.connect(db_url) as conn:
        rows = conn.execute(select(training_epochs).where(training_epochs.c.run_id == "straight").order_by(training_epochs.c.epoch)).all()
    assert [r.epoch for r in rows] == [1, 2, 3] and rows[0].train_loss == pytest.approx(hist[0]["train_loss"])
    assert all(len(h["batch_losses"]) >= 1 and np.mean(h["batch_losses"]) == pytest.approx(h["train_loss"]) for h in hist)
    from PIL import Image

    with Image.open(home / "runs" / "straight" / "models" / "training_curve.png") as im:  # loss and val Recall@1 per epoch
        assert im.size == (1000, 400)

    def kill_after_two(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embedder(tokens, run_id="killed", config_path=tiny_config, device="cpu", progress=False, on_epoch_end=kill_after_two)
    resumed = train_embedder(tokens, run_id="killed", config_path=tiny_config, device="cpu", progress=False, resume=True)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in hist]
    a, _ = load_embedder(straight["checkpoint"])
    b, meta = load_embedder(resumed["checkpoint"])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert meta["epoch"] == 2 and not list((home / "runs" / "killed" / "models").glob(".*"))
    raw = torch.load(straight["checkpoint"], weights_only=False)
    assert ("ema_model" in raw) == (ema_decay > 0)  # search loads the averaged weights when training kept them
    if ema_decay:
        assert not torch.equal(raw["model"]["project.weight"], raw["ema_model"]["project.weight"])
        assert torch.equal(a.state_dict()["project.weight"], raw["ema_model"]["project.weight"])
    splits_dir = home / "runs" / "straight" / "splits"
    sets = {s: {line.split(".")[0] for line in (splits_dir / f"{s}.txt").read_text().split()} for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])


def test_audio_views_are_tokenized_together_in_the_collator(tokens, tiny_config):
    from pathlib import Path

    from pipeline.tokenize.catalog import find_codec
    from pipeline.train.token_embedder import read_split

    root = Path(tokens)
    from pipeline.data.splits import build_splits

    build_splits(root, root.parent / "sp", 0.2, 0.2, defaults(SplitSettings).seed, None, progress=False)
    tracks = read_split(root.parent / "sp", "train", root)
    codec = find_codec(root.name)
    ds = TokenPairDataset(tracks, defaults(TrainSettings, clip_seconds=2.0, clips_per_track=2), 16, 12.5, codec)
    a, b, _ = ds[0]
    assert isinstance(a, AudioView) and isinstance(b, AudioView)
    batch = ds.collator()([ds[i] for i in range(4)])
    assert batch["a"].shape[1] == 3 and batch["a"].shape[2] <= 25 and (batch["a"][batch["a_mask"].unsqueeze(1).expand_as(batch["a"])] < 18).all()


def test_train_cli(tokens, tiny_config, capsys):
    assert main(["train", "embedder", "--config", str(tiny_config), "--tokens-root", tokens, "--epochs", "1", "--run-id", "cli", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "train: embedder" in out and "val R@1" in out
    assert main(["train", "embedder", "--config", str(tiny_config), "--tokens-root", "/no/such", "--run-id", "x"]) == 2


def test_token_tables_start_from_the_codebooks():
    rng = np.random.default_rng(0)
    books = rng.normal(size=(3, 16, 8)).astype(np.float32)
    books[0, 1] = books[0, 0] + 0.01  # two neighbouring centroids on level 1
    model = TokenEmbedder(3, 16, TINY_MODEL)
    model.init_from_codebooks(books, seed=0)
    tables = [emb.weight.detach().numpy() for emb in model.tokens]
    w = np.linalg.lstsq(books[0], tables[0][:16], rcond=None)[0]  # one shared projection W maps every level's centroids
    for q in range(3):
        assert np.allclose(books[q] @ w, tables[q][:16], atol=1e-4)
        assert np.allclose(tables[q][16], 0)  # PAD stays the zero vector
    near = np.linalg.norm(tables[0][0] - tables[0][1])
    far = np.linalg.norm(tables[0][0] - tables[0][2:16], axis=1).min()
    assert near < 0.1 * far
    with pytest.raises(ValueError, match="do not match"):
        model.init_from_codebooks(books[:2], seed=0)

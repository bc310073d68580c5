"""The dream generator (MNIST VAE) and the catalog VAE: IDX reading, the model, training, the CLI contract, the DB rows."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import func, select

from pipeline.cli import main
from pipeline.config import CatalogVAESettings, DreamSettings, defaults
from pipeline.data.mnist import IdxError, MnistNotFound, find_mnist, idx_bytes, load_digits_28, load_mnist, read_idx
from pipeline.models.vae import VAE, gaussian_loss_function, loss_function
from pipeline.store import db, reports
from pipeline.store.tables import training_epochs, vae_latents
from pipeline.train.catalog_vae import train_catalog_vae
from pipeline.train.vae import tile, train_dream, train_epoch


def fake_mnist(n=300, seed=0):
    """uint8 images [n, 28, 28]: a bright bar at a random place on a dark background (something a VAE can learn)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(2, 20, size=2)
        images[i, r:r + 6, c:c + 3] = 255
    return images


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


# --- IDX / MNIST ---------------------------------------------------------------------------------


@pytest.mark.parametrize("array", [np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), np.arange(5, dtype=np.int8) - 2,
                                   np.array([[1, -300], [7, 40000]], dtype=np.int32), np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
                                   np.array([1.5, -2.25], dtype=np.float64), np.array([-3, 512], dtype=np.int16)])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_plain_and_gzipped(tmp_path, array, gz):
    raw = idx_bytes(array)
    assert raw[:2] == b"\0\0" and raw[3] == array.ndim
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


def test_mnist_images_header_is_the_standard_one():
    assert idx_bytes(np.zeros((2, 28, 28), np.uint8))[:16].hex() == "00000803" "00000002" "0000001c" "0000001c"


@pytest.mark.parametrize("where", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte",
                                   "MNIST/raw/train-images-idx3-ubyte.gz", "train-images.idx3-ubyte"])
def test_mnist_is_found_in_each_layout_and_read_as_totensor_floats(tmp_path, where):
    images = fake_mnist(20)
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(images)) if where.endswith(".gz") else idx_bytes(images))
    assert find_mnist(tmp_path) == path
    x = load_mnist(tmp_path)
    assert x.dtype == np.float32 and x.shape == (20, 28, 28)
    np.testing.assert_array_equal(x, images / np.float32(255.0))


def test_mnist_search_order_prefers_the_top_folder(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(idx_bytes(fake_mnist(3)))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(fake_mnist(5))))
    assert find_mnist(tmp_path).name == "train-images-idx3-ubyte.gz"
    assert load_mnist(tmp_path).shape[0] == 5


def test_corrupt_idx_files_are_named_with_the_reason(tmp_path):
    good = idx_bytes(fake_mnist(4))
    bad_magic = tmp_path / "train-images-idx3-ubyte"
    bad_magic.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte: bad IDX magic number 0x12340803 \(expected 0x000008NN"):
        load_mnist(tmp_path)
    (tmp_path / "t.idx").write_bytes(good[:-100])
    with pytest.raises(IdxError, match=r"t.idx: 3036 data bytes, expected 3136 for dims 4x28x28 of uint8 \(truncated or corrupt\)"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "g.idx").write_bytes(gzip.compress(good)[:40])
    with pytest.raises(IdxError, match=r"g.idx: corrupt gzip data"):
        read_idx(tmp_path / "g.idx")
    bad_magic.write_bytes(idx_bytes(np.zeros(10, np.uint8)))  # a labels file in the images' place
    with pytest.raises(IdxError, match=r"expected unsigned-byte images N x 28 x 28, found uint8 10"):
        load_mnist(tmp_path)


def test_missing_mnist_says_which_files_go_where(tmp_path):
    with pytest.raises(MnistNotFound) as err:
        find_mnist(tmp_path / "data")
    msg = str(err.value)
    assert "train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)" in msg and "/MNIST/raw/" in msg and str(tmp_path / "data") in msg
    assert "nothing is downloaded" in msg and "--dataset digits" in msg


def test_digits_are_real_and_upscaled_to_28x28():
    x = load_digits_28()
    assert x.shape == (1797, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert x[:, :4].max() == x[:, -4:].max() == x[:, :, :4].max() == x[:, :, -4:].max() == 0.0  # MNIST's 4-pixel margin
    ink = x[:, 4:24, 4:24].mean(axis=(1, 2))
    assert ink.min() > 0.1 and ink.max() < 0.6  # every digit has ink in its 20x20 box, none is a filled square


# --- model ---------------------------------------------------------------------------------------


def test_vae_shapes_and_losses():
    torch.manual_seed(0)
    model = VAE(784, 400, 2)  # the spec's sizes (configs/pipeline.yaml dream: hidden 400, latent_dim 2)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = model.encode(x.view(5, 784))
    assert mu.shape == logvar.shape == (5, 2)
    z = model.reparameterize(mu, logvar)
    assert z.shape == (5, 2) and not torch.equal(z, mu)
    out = model.decode(z)
    assert out.shape == (5, 784) and out.min() > 0 and out.max() < 1
    recon, mu2, logvar2 = model(x)  # forward flattens [B, 1, 28, 28]
    assert recon.shape == (5, 784) and mu2.shape == (5, 2)
    loss = loss_function(recon, x, mu2, logvar2)
    assert loss.ndim == 0 and 5 * 784 * 0.5 < loss.item() < 5 * 784 * 1.0  # BCE near log 2 per pixel at random init
    real = VAE(input_dim=12, hidden=8, latent_dim=2, sigmoid=False)
    recon, mu, logvar = real(torch.randn(3, 12))
    assert recon.shape == (3, 12) and (recon < 0).any()
    assert gaussian_loss_function(recon, recon.detach(), torch.zeros(3, 2), torch.zeros(3, 2)).item() == 0.0


def test_the_loss_falls_over_a_few_epochs_on_tiny_data():
    torch.manual_seed(0)
    data = torch.from_numpy(load_digits_28()[:256].reshape(256, 784))
    model = VAE(784, 64, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = [train_epoch(model, optimizer, data, 32, gen, progress=False)[0] for _ in range(6)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.75 * losses[0]


def test_tile_layout_and_exact_dimensions():
    images = np.stack([np.full((28, 28), i / 63, dtype=np.float32) for i in range(64)])
    grid = tile(images, cols=8, padding=2)
    assert grid.shape == (8 * 28 + 9 * 2, 8 * 28 + 9 * 2) == (242, 242) and grid.dtype == np.uint8
    assert tile(images, cols=8, padding=0).shape == (224, 224)
    assert grid[2 + 30 * 3, 2 + 30 * 5] == round(29 / 63 * 255)  # tile 29 = row 3, column 5
    assert grid[0].max() == 0 and grid[:, 30:32].max() == 0  # black padding around and between tiles
    assert tile(images[:10], cols=8, padding=2).shape == (2 * 28 + 3 * 2, 242)


# --- cloudtune dream ------------------------------------------------------------------------------


def test_dream_on_the_digits_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "dreams" / "dream_sample.png"
    code = main(["dream", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--seed", "3"])
    captured = capsys.readouterr()
    result = last_json(captured.out)
    assert code == 0 and result["success"] is True, captured.err
    assert set(result) == {"success", "files", "message"}
    assert result["files"] == [str(out), str(out.parent / "latent_manifold.png"), str(out.parent / "loss_curve.png"), str(out.parent / "vae_digits.pt")]
    assert result["message"].startswith("Dreams are ready: 64 samples in") and "1797 images, 1 epochs on cpu" in result["message"]
    assert "note: no CUDA GPU found, trained on the CPU" in result["message"]
    assert "dream: epoch 1/1 average loss" in captured.err
    with Image.open(out) as im:
        assert im.size == (242, 242) and im.mode == "L"
        assert np.asarray(im)[2:30, 2:30].std() > 0  # a decoded sample, not a blank tile
    with Image.open(out.parent / "latent_manifold.png") as im:
        assert im.size == (20 * 28, 20 * 28)
    with Image.open(out.parent / "loss_curve.png") as im:
        assert im.size == (700, 400)
    ckpt = torch.load(out.parent / "vae_digits.pt", weights_only=False)
    model = VAE(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    assert ckpt["model_config"] == {"input_dim": 784, "hidden": 400, "latent_dim": 2, "sigmoid": True} and len(ckpt["epoch_losses"]) == 1
    assert not list(out.parent.glob(".*")), "no temporary files left behind"


def test_dream_on_generated_mnist_files(tmp_path):
    (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(fake_mnist(200))))
    s = defaults(DreamSettings, data_dir=str(tmp_path / "data"), epochs=2, batch_size=32, latent_dim=3, device="cpu", out=str(tmp_path / "d" / "s.png"))
    result = train_dream(s, progress=False)
    assert result["success"] and "(mnist, 200 images, 2 epochs on cpu" in result["message"]
    assert "no latent manifold image: latent_dim is 3" in result["message"] and "CUDA" not in result["message"]
    assert [p.rsplit("/", 1)[1] for p in result["files"]] == ["s.png", "loss_curve.png", "vae_mnist.pt"]
    first = (tmp_path / "d" / "s.png").read_bytes()
    again = train_dream(s, progress=False)  # seeded: the same samples again
    assert again["files"] == result["files"] and (tmp_path / "d" / "s.png").read_bytes() == first
    ckpt = torch.load(tmp_path / "d" / "vae_mnist.pt", weights_only=False)
    assert ckpt["epoch_losses"][1] < ckpt["epoch_losses"][0]


def test_dream_cuda_without_a_gpu_fails_naming_the_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "dreams" / "dream_sample.png"
    code = main(["dream", "--dataset", "digits", "--device", "cuda", "--out", str(out)])
    captured = capsys.readouterr()
    result = last_json(captured.out)
    assert code == 2
    assert result["success"] is False and result["files"] == []
    assert result["message"].startswith("--device cuda: this run needs a CUDA GPU (NVIDIA, with a CUDA build of torch)")
    assert captured.err.startswith("cloudtune dream: error: --device cuda: this run needs a CUDA GPU")
    assert not out.parent.exists()


def test_dream_without_mnist_files_fails_with_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["dream", "--device", "cpu"])  # defaults: --data ./data, --dataset mnist
    result = last_json(capsys.readouterr().out)
    assert code == 2 and result["success"] is False and result["files"] == []
    assert result["message"].startswith(f"MNIST training images not found in {tmp_path / 'data'}: put train-images-idx3-ubyte")
    assert "data/MNIST/raw/" in result["message"] and "--dataset digits" in result["message"]
    assert not (tmp_path / "dreams").exists()


def test_dream_that_fails_while_working_exits_1_with_the_json(tmp_path, capsys):
    (tmp_path / "vae_digits.pt").mkdir()  # the checkpoint cannot be written
    code = main(["dream", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "s.png")])
    result = last_json(capsys.readouterr().out)
    assert code == 1 and result["success"] is False and result["files"] == []
    assert result["message"].startswith("IsADirectoryError: ") and "vae_digits.pt" in result["message"]


def test_the_cloudtune_script_ends_stdout_with_the_json_line(tmp_path):
    p = subprocess.run([str(Path(sys.executable).parent / "cloudtune"), "dream", "--data", str(tmp_path)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout.endswith("\n") and json.loads(p.stdout.splitlines()[-1])["success"] is False
    assert p.stderr.startswith("cloudtune dream: error: MNIST training images not found in")


@pytest.mark.parametrize("flags, message", [(["--epochs", "0"], "--epochs 0: must be at least 1"), (["--lr", "-1"], "--lr -1.0: must be positive"),
                                            (["--out", "x.jpg"], "--out x.jpg: must be a .png file"),
                                            (["--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda"),
                                            (["--epochs", "1.5"], None)])
def test_dream_bad_flags_exit_2(flags, message, capsys):
    if message is None:  # argparse rejects it before the command runs
        with pytest.raises(SystemExit) as exc:
            main(["dream", *flags])
        assert exc.value.code == 2
        return
    assert main(["dream", "--dataset", "digits", *flags]) == 2
    assert last_json(capsys.readouterr().out) == {"success": False, "files": [], "message": message}


def test_dream_config_override_is_used_and_checked(monkeypatch, capsys):
    monkeypatch.setenv("CLOUDTUNE__DREAM__EPOCHS", "0")
    assert main(["dream", "--dataset", "digits"]) == 2
    assert last_json(capsys.readouterr().out)["message"] == "--epochs 0: must be at least 1"
    monkeypatch.setenv("CLOUDTUNE__DREAM__EPOCHS", "many")
    assert main(["dream"]) == 2
    assert "config dream.epochs: expected int, got 'many'" in capsys.readouterr().err


# --- catalog VAE ----------------------------------------------------------------------------------


def clustered_embeddings(per=30, dim=64, planted=4, seed=0):
    """3 catalogs as tight Gaussian blobs around random directions, plus ``planted`` random directions (the outliers); rows L2-normalized."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, dim))
    x, ids, cats = [], [], []
    for k, center in enumerate(centers / np.linalg.norm(centers, axis=1, keepdims=True)):
        x.append(center + 0.5 * rng.normal(size=(per, dim)) / np.sqrt(dim))
        ids += [f"{k}-{i:03d}" for i in range(per)]
        cats += [f"catalog-{'abc'[k]}"] * per
    x.append(rng.normal(size=(planted, dim)))
    ids += [f"planted-{i}" for i in range(planted)]
    cats += [f"catalog-{'abc'[i % 3]}" for i in range(planted)]
    x = np.concatenate(x)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids, cats


def test_catalog_vae_finds_the_planted_outliers_and_writes_its_rows(db_url, tmp_path):
    x, ids, cats = clustered_embeddings()
    with db.connect() as conn:
        run_id = db.start_run(conn, "pipeline", {})
    s = defaults(CatalogVAESettings, epochs=100, top_outliers=6)
    summary = train_catalog_vae(x, ids, cats, run_id, tmp_path / "vae", s, device="cpu", progress=False)
    top = [o["track_id"] for o in summary["outliers"]]
    assert len(top) == 6 and set(top[:4]) == {f"planted-{i}" for i in range(4)}, summary["outliers"]
    assert summary["outliers"][3]["recon_error"] > 2 * summary["outliers"][4]["recon_error"]
    assert (summary["tracks"], summary["dim"], summary["catalogs"]) == (94, 64, ["catalog-a", "catalog-b", "catalog-c"])
    with Image.open(tmp_path / "vae" / "catalog_map.png") as im:
        assert im.size == (700, 600)
    assert json.loads((tmp_path / "vae" / "catalog_vae.json").read_text())["outliers"] == summary["outliers"]
    ckpt = torch.load(tmp_path / "vae" / "catalog_vae.pt", weights_only=False)
    assert ckpt["model_config"] == {"input_dim": 64, "hidden": 128, "latent_dim": 2, "sigmoid": False} and ckpt["mean"].shape == (64,)

    def rows():
        with db.connect() as conn:
            latents = conn.execute(select(vae_latents).where(vae_latents.c.run_id == run_id).order_by(vae_latents.c.track_id)).all()
            epochs = conn.execute(select(func.count()).select_from(training_epochs).where(training_epochs.c.model == "catalog_vae")).scalar()
        return latents, epochs

    latents, epochs = rows()
    assert len(latents) == 94 and epochs == 100
    by_id = {r.track_id: r for r in latents}
    assert by_id["planted-2"].catalog == "catalog-c"
    assert by_id["planted-2"].recon_error == pytest.approx(summary["outliers"][top.index("planted-2")]["recon_error"])
    # catalogs land in separate places on the map: each blob's spread is small next to the distances between blob centers
    z = {c: np.array([[r.z1, r.z2] for r in latents if r.catalog == c and not r.track_id.startswith("planted")]) for c in summary["catalogs"]}
    centers = {c: v.mean(axis=0) for c, v in z.items()}
    spread = max(np.linalg.norm(v - centers[c], axis=1).mean() for c, v in z.items())
    gaps = [np.linalg.norm(centers[a] - centers[b]) for a in centers for b in centers if a < b]
    assert min(gaps) > 3 * spread

    report = reports.run_report("catalog_outliers", {"run_id": run_id})
    assert list(report["track_id"][:4].sort_values()) == [f"planted-{i}" for i in range(4)] and len(report) == 20
    assert list(reports.run_report("catalog_outliers")["track_id"]) == list(report["track_id"])  # default: the latest run

    # a re-run replaces the rows with the same values; a track that is gone loses its row
    again = train_catalog_vae(x[1:], ids[1:], cats[1:], run_id, tmp_path / "vae", s, device="cpu", progress=False)
    assert [o["track_id"] for o in again["outliers"]][:4] == top[:4]
    latents2, epochs2 = rows()
    assert len(latents2) == 93 and epochs2 == 100 and ids[0] not in {r.track_id for r in latents2}


def test_catalog_vae_rejects_bad_inputs(tmp_path):
    settings = defaults(CatalogVAESettings, epochs=2)
    x, ids, cats = clustered_embeddings(per=3, dim=8, planted=0)
    with pytest.raises(ValueError, match=r"9 embeddings but 8 track ids and 9 catalogs"):
        train_catalog_vae(x, ids[:-1], cats, "r", tmp_path, settings, progress=False)
    with pytest.raises(ValueError, match=r"embeddings must be \[N, D\], got shape \(72,\)"):
        train_catalog_vae(x.ravel(), ids, cats, "r", tmp_path, settings, progress=False)
    x[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"embeddings of 1 track\(s\) hold NaN or Inf"):
        train_catalog_vae(x, ids, cats, "r", tmp_path, settings, progress=False)
    with pytest.raises(ValueError, match=r"run 'nope' is not in the runs table"):
        train_catalog_vae(np.nan_to_num(x), ids, cats, "nope", tmp_path, settings, progress=False)

"""The catalog VAE: the dream generator's VAE trained on track embeddings, for a 2-D catalog map and outlier scores.

    embeddings [N, D] -> standardized per dimension -> VAE(input_dim=D, latent 2, linear output)
    each track: z = its latent mean (map coordinates), recon_error = mean squared error of decode(z) (outlier score)

Why not the MNIST loss: BCE models pixels in [0, 1]; embedding coordinates are real numbers of either sign, so the
decoder has no sigmoid and the reconstruction term is a unit-variance Gaussian's negative log-likelihood (0.5 * squared
error). Unit variance is only the right scale after standardizing each dimension (L2-normalized embeddings have
coordinates near 1/sqrt(D), which the KL term would swamp, collapsing the map to a point).

    <out_dir>/catalog_map.png    latent means colored by catalog, the top outliers circled and named
    <out_dir>/catalog_vae.pt     weights, standardization, settings, loss history (atomic)
    <out_dir>/catalog_vae.json   summary and outliers (atomic)
    vae_latents                  one row per track (run_id, track_id, catalog, z1, z2, recon_error)
    training_epochs              one row per epoch (model 'catalog_vae')
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import delete, select
from tqdm import tqdm

from pipeline.config import CatalogVAESettings
from pipeline.devices import resolve_device, torch_threads
from pipeline.fsutil import atomic_path, write_json
from pipeline.models.vae import VAE, gaussian_loss_function
from pipeline.store import db
from pipeline.store.tables import runs, training_epochs, vae_latents
from pipeline.train.vae import train_epoch

MODEL_NAME = "catalog_vae"


def check_inputs(embeddings: np.ndarray, track_ids: list[str], catalogs: list[str]) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"catalog VAE: embeddings must be [N, D], got shape {x.shape}")
    if len(track_ids) != len(x) or len(catalogs) != len(x):
        raise ValueError(f"catalog VAE: {len(x)} embeddings but {len(track_ids)} track ids and {len(catalogs)} catalogs")
    if len(set(track_ids)) != len(track_ids):
        raise ValueError("catalog VAE: track ids must be unique")
    if len(x) < 2:
        raise ValueError(f"catalog VAE: needs at least 2 tracks, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"catalog VAE: embeddings of {int((~np.isfinite(x)).any(axis=1).sum())} track(s) hold NaN or Inf")
    return x


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension z-scores; a constant dimension keeps scale 1 (it becomes all zeros)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    return (x - mean) / std, mean, std


@torch.no_grad()
def latents_and_errors(model: VAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Latent means [N, 2] and per-track reconstruction error (mean squared error of decode(mean)) [N]."""
    model.eval()
    mu, _ = model.encode(x)
    errors = (model.decode(mu) - x).pow(2).mean(dim=1)
    return mu.cpu().numpy().astype(np.float64), errors.cpu().numpy().astype(np.float64)


def plot_catalog_map(z: np.ndarray, catalogs: list[str], outliers: list[dict], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.add_subplot()
    names = sorted(set(catalogs))
    labels = np.asarray(catalogs)
    colors = [f"C{i % 10}" for i in range(len(names))]
    for name, color in zip(names, colors, strict=True):
        pts = z[labels == name]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.75, color=color, label=f"{name} ({len(pts)})")
    if outliers:
        oz = np.array([[o["z1"], o["z2"]] for o in outliers])
        ax.scatter(oz[:, 0], oz[:, 1], s=120, facecolors="none", edgecolors="red", linewidths=1.2, label=f"top {len(outliers)} outliers")
        for o in outliers:
            ax.annotate(o["track_id"], (o["z1"], o["z2"]), xytext=(4, 4), textcoords="offset points", fontsize=7, color="red")
    ax.set(xlabel="z1", ylabel="z2", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def fit(model: VAE, data: torch.Tensor, s: CatalogVAESettings, progress: bool = True) -> list[dict]:
    """Adam on the Gaussian VAE loss for ``s.epochs`` shuffled epochs; returns each epoch's loss per track and seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    generator = torch.Generator().manual_seed(s.seed)
    history = []
    bar = tqdm(range(1, s.epochs + 1), desc=f"catalog VAE ({data.shape[0]} tracks x {data.shape[1]})", unit="epoch", disable=not progress,
               file=sys.stderr)
    for epoch in bar:
        t = time.perf_counter()
        loss, _ = train_epoch(model, optimizer, data, s.batch_size, generator, gaussian_loss_function, progress=False)
        if not np.isfinite(loss):
            raise RuntimeError(f"catalog VAE: training diverged (loss {loss}) in epoch {epoch}; lower catalog_vae.lr")
        history.append({"epoch": epoch, "train_loss": loss, "seconds": time.perf_counter() - t})
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    return history


def train_catalog_vae(embeddings: np.ndarray, track_ids: list[str], catalogs: list[str], run_id: str, out_dir: str | Path,
                      settings: CatalogVAESettings, *, device: str = "auto", url: str | None = None, progress: bool = True) -> dict:
    """Train the VAE on one embedding per track, write the map, checkpoint, `vae_latents` and `training_epochs` rows of ``run_id``
    (which must already be in `runs`), and return the summary with the ``top_outliers`` tracks of highest reconstruction error.

    Re-running with the same inputs and settings replaces the run's rows with the same values (seeded; exact on CPU).
    """
    s = settings
    x = check_inputs(embeddings, track_ids, catalogs)
    with db.connect(url) as conn:
        if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is None:
            raise ValueError(f"catalog VAE: run {run_id!r} is not in the runs table (start it with db.recorded_run first)")
    device = resolve_device(device)
    out_dir = Path(out_dir)
    xs, mean, std = standardize(x)

    torch.manual_seed(s.seed)
    data = torch.from_numpy(xs).to(device)
    model = VAE(input_dim=x.shape[1], hidden=s.hidden, latent_dim=2, sigmoid=False).to(device)
    t0 = time.perf_counter()
    with torch_threads(s.threads):  # the model is tiny: more intra-op threads only add synchronization
        history = fit(model, data, s, progress)
    seconds = time.perf_counter() - t0

    z, errors = latents_and_errors(model, data)
    order = sorted(range(len(x)), key=lambda i: (-errors[i], track_ids[i]))
    outliers = [{"track_id": track_ids[i], "catalog": catalogs[i], "recon_error": float(errors[i]), "z1": float(z[i, 0]), "z2": float(z[i, 1])}
                for i in order[:s.top_outliers]]

    now = db.utcnow()
    with db.connect(url) as conn:
        stale = set(conn.execute(select(vae_latents.c.track_id).where(vae_latents.c.run_id == run_id)).scalars()) - set(track_ids)
        for chunk in (sorted(stale)[i:i + 500] for i in range(0, len(stale), 500)):
            conn.execute(delete(vae_latents).where(vae_latents.c.run_id == run_id, vae_latents.c.track_id.in_(chunk)))
        db.upsert(conn, vae_latents, [{"run_id": run_id, "track_id": t, "catalog": c, "z1": float(a), "z2": float(b), "recon_error": float(e),
                                       "recorded_at": now} for t, c, (a, b), e in zip(track_ids, catalogs, z, errors, strict=True)])
        conn.execute(delete(training_epochs).where(training_epochs.c.run_id == run_id, training_epochs.c.model == MODEL_NAME))
        db.upsert(conn, training_epochs, [{"run_id": run_id, "model": MODEL_NAME, "epoch": h["epoch"], "train_loss": h["train_loss"], "lr": s.lr,
                                           "seconds": h["seconds"], "recorded_at": now} for h in history])
        conn.commit()

    map_path = plot_catalog_map(z, list(catalogs), outliers, out_dir / "catalog_map.png",
                                f"Catalog map: VAE latent means of {len(x)} tracks\nrun {run_id}")
    checkpoint = out_dir / "catalog_vae.pt"
    with atomic_path(checkpoint) as tmp:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "model_config": model.config(), "mean": mean, "std": std,
                    "settings": asdict(s), "history": history}, tmp)
    summary = {"run_id": run_id, "tracks": len(x), "dim": int(x.shape[1]), "catalogs": sorted(set(catalogs)), "epochs": s.epochs,
               "final_loss": history[-1]["train_loss"], "train_seconds": seconds, "device": device, "outliers": outliers,
               "files": [str(map_path), str(checkpoint), str(out_dir / "catalog_vae.json")]}
    write_json(out_dir / "catalog_vae.json", summary)
    return summary

"""Training the dream generator (`cloudtune dream`): the VAE of pipeline/models/vae.py on MNIST or the bundled digits.

    <out>                      the 8x8 grid of 64 decoded samples z ~ N(0, I) (the spec's dreams/dream_sample.png)
    <out dir>/latent_manifold.png  decoded grid over z in [-span, span]^2 (latent_dim 2)
    <out dir>/loss_curve.png   loss per image, per batch and per epoch
    <out dir>/vae_<dataset>.pt checkpoint: weights, model config, settings, loss history

Every file is written atomically. The result is the spec's contract: {"success": bool, "files": [...], "message": "..."}.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import DreamSettings
from pipeline.data.mnist import IdxError, MnistNotFound, load_images
from pipeline.devices import DEVICES, resolve_device, torch_threads
from pipeline.errors import one_line
from pipeline.fsutil import atomic_path
from pipeline.models.vae import VAE, loss_function

EXIT_FAILED = 1  # training failed
EXIT_USAGE = 2  # bad input: settings, missing data, no CUDA GPU for --device cuda


class DreamError(Exception):
    """The run cannot go on, for a reason stated in one line; ``code`` is the exit code (1 failed, 2 bad input)."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def train_epoch(model: VAE, optimizer: torch.optim.Optimizer, data: torch.Tensor, batch_size: int, generator: torch.Generator,
                loss_fn: Callable = loss_function, desc: str = "train", progress: bool = True) -> tuple[float, list[float]]:
    """One shuffled pass over ``data`` [N, input_dim] (already on the model's device).

    Returns the average loss per item over the epoch (the spec's "Average loss") and each batch's loss per item.
    """
    model.train()
    n = data.shape[0]
    order = torch.randperm(n, generator=generator).to(data.device)
    total = torch.zeros((), device=data.device)
    batch_losses = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
        for start in range(0, n, batch_size):
            x = data[order[start:start + batch_size]]
            optimizer.zero_grad(set_to_none=True)
            recon, mu, logvar = model(x)
            loss = loss_fn(recon, x, mu, logvar)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            batch_losses.append(loss.detach() / x.shape[0])
            bar.update(x.shape[0])
            if progress and len(batch_losses) % 50 == 0:
                bar.set_postfix(avg_loss=f"{total.item() / min(n, start + batch_size):.2f}", refresh=False)
    return total.item() / n, torch.stack(batch_losses).tolist()


def tile(images: np.ndarray, cols: int, padding: int = 2) -> np.ndarray:
    """Images [N, H, W] in [0, 1] -> one uint8 image of ceil(N / cols) rows x cols tiles, ``padding`` black pixels
    between and around the tiles (torchvision's make_grid layout): (rows*H + (rows+1)*p) x (cols*W + (cols+1)*p)."""
    n, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding), dtype=np.uint8)
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        out[y:y + h, x:x + w] = pixels[i]
    return out


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """A uint8 [H, W] array as an 8-bit grayscale PNG, written atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return Path(path)


@torch.no_grad()
def sample_images(model: VAE, n: int, device: str, side: int = 28) -> np.ndarray:
    """Decode ``n`` points drawn from N(0, I): float [n, side, side] in [0, 1]."""
    model.eval()
    z = torch.randn(n, model.latent_dim, device=device)
    return model.decode(z).view(n, side, side).cpu().numpy()


@torch.no_grad()
def manifold_images(model: VAE, steps: int, span: float, device: str, side: int = 28) -> np.ndarray:
    """Decode a steps x steps grid over z in [-span, span]^2, z1 left to right, z2 bottom to top: [steps*steps, side, side]."""
    model.eval()
    values = torch.linspace(-span, span, steps, device=device)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    return model.decode(z).view(-1, side, side).cpu().numpy()


def plot_loss(epoch_losses: list[float], batch_losses: list[list[float]], path: str | Path, title: str) -> Path:
    """Loss per image: every batch (thin line) and each epoch's average (dots), as a PNG written atomically."""
    from matplotlib.figure import Figure

    from pipeline.plots import draw_loss, save_figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    draw_loss(ax, epoch_losses, batch_losses, "loss per image")
    ax.set_title(title)
    return save_figure(fig, path)


def check_settings(s: DreamSettings) -> None:
    """Bad settings are bad input (exit 2), named by their flag."""
    problems = [(s.dataset not in ("mnist", "digits"), f"--dataset {s.dataset!r}: expected mnist or digits"),
                (s.device not in DEVICES and not s.device.startswith("cuda:"), f"--device {s.device!r}: expected auto, cpu or cuda"),
                (s.epochs < 1, f"--epochs {s.epochs}: must be at least 1"),
                (s.batch_size < 1, f"--batch-size {s.batch_size}: must be at least 1"),
                (s.latent_dim < 1, f"--latent-dim {s.latent_dim}: must be at least 1"),
                (not s.lr > 0, f"--lr {s.lr}: must be positive"),
                (s.hidden < 1, f"dream.hidden {s.hidden}: must be at least 1"),
                (s.threads < 0, f"dream.threads {s.threads}: must be 0 (torch's default) or more"),
                (s.samples < 1 or s.grid_cols < 1 or s.grid_padding < 0, "dream.samples and dream.grid_cols must be >= 1, dream.grid_padding >= 0"),
                (s.manifold_steps < 1 or not s.manifold_span > 0, "dream.manifold_steps must be >= 1 and dream.manifold_span > 0"),
                (Path(s.out).suffix.lower() != ".png", f"--out {s.out}: must be a .png file")]
    for bad, message in problems:
        if bad:
            raise DreamError(message, EXIT_USAGE)


def pick_device(spec: str) -> tuple[str, str | None]:
    """The device to train on and a note when ``auto`` falls back to CPU; ``cuda`` without a CUDA GPU is an error (exit 2)."""
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise DreamError(f"--device {spec}: this run needs a CUDA GPU (NVIDIA, with a CUDA build of torch) but torch {torch.__version__} finds "
                         "none; use --device auto to fall back to the CPU", EXIT_USAGE)
    device = resolve_device(spec)
    note = "no CUDA GPU found, trained on the CPU (the spec's default device is CUDA)" if spec == "auto" and device == "cpu" else None
    return device, note


def fit(model: VAE, data: torch.Tensor, s: DreamSettings, generator: torch.Generator, progress: bool = True) -> tuple[list[float], list[list[float]]]:
    """The spec's training: ``s.epochs`` shuffled epochs of Adam on BCE + KLD; the average loss per image of each epoch, and of each batch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    epoch_losses, batch_losses = [], []
    for epoch in range(1, s.epochs + 1):
        avg, per_batch = train_epoch(model, optimizer, data, s.batch_size, generator, desc=f"dream epoch {epoch}/{s.epochs}", progress=progress)
        if not math.isfinite(avg):
            raise DreamError(f"training diverged: the average loss is {avg} in epoch {epoch} (try a lower --lr)", EXIT_FAILED)
        epoch_losses.append(avg)
        batch_losses.append(per_batch)
        if progress:
            tqdm.write(f"dream: epoch {epoch}/{s.epochs} average loss {avg:.4f}", file=sys.stderr)
    return epoch_losses, batch_losses


def train_dream(settings: DreamSettings, progress: bool = True) -> dict:
    """Train the VAE, write the sample grid, manifold, loss curve and checkpoint; return {"success": True, "files", "message"}.

    Raises DreamError (with its exit code) when the run cannot go on: bad settings, missing or corrupt data, no CUDA GPU.
    """
    s = settings
    check_settings(s)
    device, note = pick_device(s.device)
    try:
        images = load_images(s.dataset, s.data_dir)
    except (MnistNotFound, IdxError) as exc:
        raise DreamError(str(exc), EXIT_USAGE) from None
    n, side = images.shape[0], images.shape[1]

    torch.manual_seed(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    data = torch.from_numpy(images).reshape(n, side * side).to(device)
    model = VAE(side * side, s.hidden, s.latent_dim).to(device)

    t0 = time.perf_counter()
    with torch_threads(s.threads):
        epoch_losses, batch_losses = fit(model, data, s, generator, progress)
    seconds = time.perf_counter() - t0

    out = Path(s.out)
    files = [save_png(tile(sample_images(model, s.samples, device, side), s.grid_cols, s.grid_padding), out)]
    if s.latent_dim == 2:
        files.append(save_png(tile(manifold_images(model, s.manifold_steps, s.manifold_span, device, side), s.manifold_steps, 0),
                              out.parent / "latent_manifold.png"))
    else:
        note = "; ".join(filter(None, [note, f"no latent manifold image: latent_dim is {s.latent_dim}, not 2"]))
    files.append(plot_loss(epoch_losses, batch_losses, out.parent / "loss_curve.png", f"dream VAE on {s.dataset} ({n} images)"))
    checkpoint = out.parent / f"vae_{s.dataset}.pt"
    with atomic_path(checkpoint) as tmp:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "model_config": model.config(), "settings": asdict(s),
                    "dataset": s.dataset, "images": n, "epoch_losses": epoch_losses, "device": device}, tmp)
    files.append(checkpoint)

    message = (f"Dreams are ready: {s.samples} samples in {out} ({s.dataset}, {n} images, {s.epochs} epochs on {device} in {seconds:.1f} s, "
               f"final average loss {epoch_losses[-1]:.2f})")
    if note:
        message += f"; note: {note}"
    return {"success": True, "files": [str(f) for f in files], "message": message}


def run_dream(settings: DreamSettings, progress: bool = True) -> tuple[dict, int]:
    """train_dream that never raises (Ctrl-C aside): (the JSON result, the exit code 0 / 1 / 2)."""
    try:
        return train_dream(settings, progress), 0
    except DreamError as exc:
        return {"success": False, "files": [], "message": str(exc)}, exc.code
    except Exception as exc:  # noqa: BLE001 - any failure of the work becomes the contract's failure result
        logging.getLogger(__name__).debug("dream: training failed", exc_info=True)  # the traceback, with cloudtune -v
        return {"success": False, "files": [], "message": f"{type(exc).__name__}: {one_line(exc)}"}, EXIT_FAILED

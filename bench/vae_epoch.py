"""One training epoch of the dream generator VAE over MNIST-sized data: seconds per epoch and images/s.

    .venv/bin/python bench/vae_epoch.py [--images 60000] [--batch-size 128] [--epochs 3] [--device auto|cpu|cuda] [--threads N]

The images are generated (uniform in [0, 1], 28x28, seeded): the cost of an epoch depends only on their
number and shape, so no MNIST files are needed. The model, loss, optimizer and loop are those of
`cloudtune dream` (pipeline/train/vae.py: train_epoch). Each epoch is timed on its own; the first one
includes warm-up.
"""

from __future__ import annotations

import argparse
import platform
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs to time (each reported)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    from pipeline import config
    from pipeline.config import DreamSettings
    from pipeline.devices import resolve_device
    from pipeline.models.vae import VAE
    from pipeline.train.vae import train_epoch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    data = torch.rand(args.images, 28 * 28, generator=torch.Generator().manual_seed(0)).to(device)
    s = config.defaults(DreamSettings)
    model = VAE(28 * 28, s.hidden, s.latent_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(0)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"bench: VAE 784-400-2, {args.images} images 28x28, batch {args.batch_size}, {device} ({name}), torch {torch.__version__}")
    times = []
    for epoch in range(1, args.epochs + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss, _ = train_epoch(model, optimizer, data, args.batch_size, gen, desc=f"epoch {epoch}", progress=False)  # .item() syncs the GPU
        times.append(time.perf_counter() - t)
        print(f"epoch {epoch}: {times[-1]:.2f} s/epoch, {args.images / times[-1]:,.0f} images/s, average loss {loss:.2f}")
    best = min(times)
    print(f"best: {best:.2f} s/epoch, {args.images / best:,.0f} images/s; median {sorted(times)[len(times) // 2]:.2f} s/epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training steps: track-level splits of a run, the token embedder's and the fingerprint's training (``cloudtune train`` and the
DAG tasks), and the fingerprint's ONNX export (``cloudtune export onnx``).

A step reads configs/train.yaml (or a partial ``--config`` file over it), builds what is missing (the splits) and calls
:mod:`pipeline.train.token_embedder` with settings objects and paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from pipeline import config, paths
from pipeline.errors import one_line
from pipeline.fsutil import write_text_if_changed
from pipeline.store import db


def make_splits(run_id: str, tokens_roots: list[str]) -> str:
    """Track-level splits of the run (configs/train.yaml `splits`) into runs/<run_id>/splits; returns that folder."""
    from pipeline.data.splits import build_splits

    roots = sorted(set(tokens_roots))
    if len(roots) != 1:
        raise ValueError(f"splits: the tokenize shards wrote to {len(roots)} folders ({', '.join(roots)}); expected one")
    s = config.load_train().splits
    out = paths.splits_dir(run_id)
    print(build_splits(roots[0], out, s.val_ratio, s.test_ratio, s.seed, s.group_by, parent_run_id=run_id).line(), file=sys.stderr)
    return str(out)


def train_config(run_id: str, embedding_dim: int | None) -> Path:
    """configs/train.yaml (with its env overrides) and the run's embedding_dim, written to runs/<run_id>/train.yaml (left as it
    is when a re-run finds the same config there)."""
    data = config.load("train")
    if embedding_dim is not None:
        heads = int(data["embedder"]["heads"])
        if embedding_dim < 1 or embedding_dim % heads:
            raise ValueError(f"embedding_dim {embedding_dim}: must be a positive multiple of configs/train.yaml embedder.heads ({heads})")
        data["embedder"]["embedding_dim"] = int(embedding_dim)
    path = paths.train_config(run_id)
    write_text_if_changed(path, yaml.safe_dump(data, sort_keys=False))
    return path


def train_token_embedder(tokens_root: str | Path, splits_dir: str | Path | None = None, *, run_id: str | None = None,
                         config_path: str | Path | None = None, device: str = "auto", epochs: int | None = None, resume: bool = False,
                         url: str | None = None, progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train (or, with ``resume``, continue) the token embedder of ``run_id`` (a new id when None), building the run's splits
    (configs/train.yaml ``splits``) when ``splits_dir`` has none. Returns the training summary."""
    from pipeline.data.splits import build_splits
    from pipeline.devices import resolve_device
    from pipeline.train.token_embedder import train

    cfg = config.load_train(config_path)
    emb_s, train_s, split_s, raw = cfg.embedder, cfg.training, cfg.splits, cfg.raw
    if epochs is not None:
        train_s = replace(train_s, epochs=epochs)
    run_id = run_id or db.new_run_id("train")
    tokens_root = Path(tokens_root)
    splits_dir = Path(splits_dir) if splits_dir else paths.splits_dir(run_id)
    if not paths.split_list(splits_dir, "train").exists():
        build_splits(tokens_root, splits_dir, split_s.val_ratio, split_s.test_ratio, split_s.seed, split_s.group_by, url=url, progress=progress,
                     parent_run_id=run_id)
    return train(tokens_root, splits_dir, run_id, emb_s, train_s, device=resolve_device(device), resume=resume, run_config={"config": raw},
                 url=url, progress=progress, on_epoch_end=on_epoch_end)


def train_embedder(run_id: str, tokens_root: str, splits_dir: str, epochs: int | None, embedding_dim: int | None, device: str = "auto") -> str:
    """The DAG's training task: the run's token embedder with the run's params (resumes from its last checkpoint on a retry);
    returns the checkpoint path."""
    summary = train_token_embedder(tokens_root, splits_dir, run_id=run_id, config_path=train_config(run_id, embedding_dim), device=device,
                                   epochs=epochs, resume=True)
    return summary["checkpoint"]


def train_fingerprint_model(splits_dir: str | Path | None = None, *, run_id: str, config_path: str | Path | None = None, device: str = "auto",
                            epochs: int | None = None, train_catalogs: list[str] | None = None, resume: bool = False, url: str | None = None,
                            progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train (or, with ``resume``, continue) the fingerprint model of ``run_id`` with configs/fingerprint.yaml (or a partial
    ``config_path`` over it) on the run's track-level splits (``splits_dir``, default the run's: the same train tracks as the
    token embedder's; only the track ids of the lists are read) and every track of ``train_catalogs`` (default
    ``fingerprint_training.train_catalogs``). Returns the training summary. With
    ``fingerprint_inference.backend: onnx`` the trained model is also exported for ONNX Runtime (``onnx`` in the summary: the
    export's record, or why there is none), so the evaluation, publish and the service run the model as it will be served."""
    from pipeline.devices import resolve_device
    from pipeline.train.fingerprint import train

    cfg = config.load_fingerprint(config_path)
    train_s = replace(cfg.fingerprint_training, epochs=epochs) if epochs is not None else cfg.fingerprint_training
    if train_catalogs is not None:
        train_s = replace(train_s, train_catalogs=tuple(train_catalogs))
    splits_dir = Path(splits_dir) if splits_dir else paths.splits_dir(run_id)
    if not paths.split_list(splits_dir, "train").exists():
        raise FileNotFoundError(f"{paths.split_list(splits_dir, 'train')}: run {run_id} has no splits yet (cloudtune splits, or the "
                                "audio_retrieval DAG's splits task, writes them; the fingerprint trains on the same tracks as the token embedder)")
    summary = train(splits_dir, run_id, cfg.fingerprint, train_s, cfg.augment, device=resolve_device(device), root=config.PROJECT_ROOT,
                    resume=resume, run_config={"config": cfg.raw}, url=url, progress=progress, on_epoch_end=on_epoch_end)
    if cfg.fingerprint_inference.backend == "onnx":
        try:
            summary["onnx"] = export_fingerprint_onnx(run_id, url)
        except (ImportError, ValueError, RuntimeError) as exc:  # no onnxruntime, or an export that failed its check: torch serves
            summary["onnx"] = f"not exported: {type(exc).__name__}: {one_line(exc)}"
            print(f"train fingerprint: {summary['onnx']} (the traced torch model serves it)", file=sys.stderr)
    return summary


def train_fingerprint(run_id: str, splits_dir: str, epochs: int | None, device: str = "auto", train_catalogs: list[str] | None = None) -> str:
    """The DAG's fingerprint training task: the run's fingerprint model on the run's splits and ``train_catalogs`` (resumes
    from its last checkpoint on a retry); returns the checkpoint path."""
    return train_fingerprint_model(splits_dir, run_id=run_id, device=device, epochs=epochs, train_catalogs=train_catalogs,
                                   resume=True)["checkpoint"]


def export_fingerprint_onnx(run_id: str, url: str | None = None) -> dict:
    """The run's fingerprint model exported for ONNX Runtime to runs/<run_id>/models/fingerprint.onnx, with the opset and the
    check's tolerance of configs/fingerprint.yaml ``fingerprint_inference``, and with ``precision: int8`` also quantized to
    fingerprint.int8.onnx (``int8`` in the result: its record, or {"error": why} when its check refused it, and float32 serves);
    an export of the same checkpoint is kept. Returns {"path", "opset", "max_abs_diff" (when written), "reused",
    "checkpoint_sha256", ...}."""
    from pipeline.embed.fingerprint_onnx import export_checkpoint

    ckpt = paths.fingerprint_checkpoint(run_id)
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: run {run_id} has no fingerprint model (cloudtune train fingerprint --run-id {run_id})")
    s = config.load_fingerprint().fingerprint_inference
    out = {"run_id": run_id, **export_checkpoint(ckpt, paths.fingerprint_onnx(run_id), s.opset, s.tolerance)}
    if s.precision == "int8":
        try:
            out["int8"] = export_fingerprint_int8(run_id, s, out["checkpoint_sha256"], url)
        except ValueError as exc:
            out["int8"] = {"error": one_line(exc)}
            print(f"export: {out['int8']['error']} (the float32 export serves)", file=sys.stderr)
    return out


CALIBRATION_HOURS = 0.5  # at most this much of a split's audio is read for the int8 calibration and its check (a seeded sample of tracks)


def export_fingerprint_int8(run_id: str, s: config.FingerprintInferenceSettings, digest: str, url: str | None = None) -> dict:
    """The run's float32 export quantized to runs/<run_id>/models/fingerprint.int8.onnx, calibrated on ``s.int8_calibration``
    segments of its train tracks and checked on as many of its val tracks (:func:`pipeline.data.fingerprint.calibration_segments`);
    kept when it is already the int8 export of this checkpoint (SHA-256 ``digest``, as the float32 export found it) with this
    calibration and int8 scheme. Returns {"path", "precision", "reused",
    "mean_cosine", ...}; a ValueError when the check refuses it (:func:`pipeline.embed.fingerprint_onnx.quantize_int8`)."""
    from pipeline.data.fingerprint import calibration_segments, load_split_audio
    from pipeline.embed.fingerprint_onnx import INT8_SCHEME, export_metadata, quantize_int8
    from pipeline.models.fingerprint import load_fingerprint

    ckpt, src, out = paths.fingerprint_checkpoint(run_id), paths.fingerprint_onnx(run_id), paths.fingerprint_onnx(run_id, "int8")
    if out.exists():
        meta = export_metadata(out)
        if meta.get("checkpoint_sha256") == digest and meta.get("calibration") == str(s.int8_calibration) and meta.get("scheme") == INT8_SCHEME:
            return {"path": str(out), "precision": "int8", "reused": True, "mean_cosine": float(meta.get("mean_cosine", "nan"))}
    model, _ = load_fingerprint(ckpt)
    rate, size = model.settings.sample_rate, model.segment_samples

    def log_mels(split: str, seed: int):
        _, waves = load_split_audio(paths.splits_dir(run_id), split, rate, max_hours=CALIBRATION_HOURS, seed=seed, url=url, progress=False)
        return model.front.numpy(calibration_segments(waves, s.int8_calibration, size, seed))

    return {**quantize_int8(src, out, log_mels("train", 0), log_mels("val", 1), s.int8_min_cosine), "reused": False}

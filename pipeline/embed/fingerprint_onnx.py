"""The fingerprint model's network in ONNX, and ONNX Runtime running it (configs/fingerprint.yaml ``fingerprint_inference``).

The graph holds the convolutional encoder and the split head: log-mel ``[batch, 1, n_mels, frames]`` in, unit vectors
``[batch, dim]`` out, the batch axis dynamic. The log-mel front end stays in torch (the model's own
:class:`~pipeline.models.fingerprint.LogMelFrontEnd`, so both backends feed the network the same numbers): torch's exporter
does write ``torch.stft`` as ONNX's STFT, but ONNX Runtime ran that whole graph slower than torch's front end plus the network
in ONNX Runtime (``bench/onnx_speed.py --with-front``, bench/RESULTS.md).

An export records the SHA-256 of the checkpoint it came from; :func:`load_onnx` refuses an export whose checkpoint has
changed since (a run trained further), so vectors never come from an older model than the checkpoint the catalog was
embedded with.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.fsutil import atomic_path
from pipeline.models.fingerprint import FingerprintNet, LogMelFrontEnd, load_fingerprint

INPUT, OUTPUT = "logmel", "vectors"
CHECK_BATCHES = (1, 7)  # batch sizes of the check: one, and one the exporter's example (2) did not use
CALIBRATION_BATCH = 64  # log-mels per calibration pass of the int8 quantizer
# The int8 scheme, named in an int8 export's metadata and in the embedder's version: int8 weights in the 7-bit range
# (ONNX Runtime's reduce_range) and uint8 activations. x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply u8 x s8
# pairs with an instruction whose 16-bit sums saturate; 7-bit weights keep them exact, so the same export gives the same
# vectors on every machine kind. Measured on a 2-core AVX2 EPYC, the demo's model: mean cosine to float32 0.9930 (min 0.977)
# with 8-bit weights, 0.9996 (min 0.9994) with 7-bit (bench/RESULTS.md "int8 inference")
INT8_SCHEME = "w7a8"


class ExportUnusable(Exception):
    """No usable export here (none written, its checkpoint changed since, no onnxruntime): the reason, for the torch fallback's note."""


class Encoder(nn.Module):
    """:meth:`FingerprintNet.encode` as a module (what the exporter traces): log-mel [B, 1, n_mels, frames] -> vectors [B, dim]."""

    def __init__(self, model: FingerprintNet):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.model.encode(logmel)


def checkpoint_digest(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def export_onnx(model: FingerprintNet, out: str | Path, opset: int, tolerance: float, metadata: dict[str, str] | None = None) -> dict:
    """Write ``model``'s network to ``out`` atomically (torch.onnx's torch.export-based exporter, opset ``opset``, dynamic batch
    axis, ``metadata`` in the model's metadata_props), after checking that ONNX Runtime's vectors equal PyTorch's within
    ``tolerance`` on random inputs; raises ValueError (and writes nothing) when they do not. Returns
    {"path", "opset", "max_abs_diff", "check_batches", "seconds"}."""
    import onnx

    started = time.perf_counter()
    model = model.eval()
    with torch.no_grad():
        example = model.front(torch.randn(2, model.segment_samples))
    batch = torch.export.Dim("batch", min=1)
    # the exporter reports its progress on stdout (a command's stdout holds its result only), warns about torch internals and
    # logs a warning per torchvision operator it cannot register (torchvision is not a dependency)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Encoder(model).eval(), (example,), input_names=[INPUT], output_names=[OUTPUT], opset_version=opset, dynamo=True,
                                    dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {"producer": "cloudtune", **(metadata or {})})
        onnx.checker.check_model(proto)
        onnx.save_model(proto, tmp)
        diff = max_difference(model, tmp)
        if not diff <= tolerance:
            raise ValueError(f"fingerprint ONNX export: ONNX Runtime's vectors differ from PyTorch's by {diff:.3g} (> fingerprint_inference.tolerance "
                             f"{tolerance:g}); nothing written")
    return {"path": str(out), "opset": opset, "max_abs_diff": diff, "check_batches": list(CHECK_BATCHES), "seconds": time.perf_counter() - started}


@contextlib.contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def max_difference(model: FingerprintNet, onnx_path: str | Path, seed: int = 0) -> float:
    """The largest |ONNX Runtime - PyTorch| over the vectors of random waves (noise at random levels, batch sizes
    ``CHECK_BATCHES``) through the model's front end."""
    session = ort_session(onnx_path, threads=1)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in CHECK_BATCHES:
        waves = torch.randn(n, model.segment_samples, generator=g) * torch.rand(n, 1, generator=g)
        with torch.inference_mode():
            logmel = model.front(waves)
            want = model.encode(logmel).numpy()
        got = session.run([OUTPUT], {INPUT: logmel.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int, tolerance: float) -> dict:
    """:func:`export_onnx` of a fingerprint checkpoint, recording its SHA-256 (and the opset) in the export; an export of the
    same checkpoint at the same opset already at ``out`` is kept ("reused": true)."""
    digest = checkpoint_digest(checkpoint)
    if Path(out).exists():
        props = export_metadata(out)
        if props.get("checkpoint_sha256") == digest and props.get("opset") == str(opset):
            return {"path": str(out), "opset": opset, "reused": True, "checkpoint_sha256": digest}
    model, ckpt = load_fingerprint(checkpoint)
    meta = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": digest, "epochs": str(len(ckpt.get("history", []))), "opset": str(opset),
            "torch": torch.__version__}
    return {**export_onnx(model, out, opset, tolerance, meta), "reused": False, "checkpoint_sha256": digest}


def quantize_int8(src: str | Path, out: str | Path, calibration: np.ndarray, check: np.ndarray, min_cosine: float) -> dict:
    """The float32 export ``src`` quantized to int8 at ``out`` (atomically): BatchNorm folded into the convolutions first
    (ONNX Runtime's pre-processing), then static quantization in QDQ form, int8 weights per output channel in the 7-bit range
    and uint8 activations whose ranges are the extremes met over the ``calibration`` log-mels [N, 1, n_mels, frames]
    (:data:`INT8_SCHEME`). The export's metadata (the checkpoint it came from) carry over, with ``precision`` int8, the scheme
    and the check's figures. Refused (ValueError,
    nothing written) when the int8 vectors' mean cosine to float32's over the ``check`` log-mels is below ``min_cosine``.
    Returns {"path", "precision", "mean_cosine", "min_cosine", "calibration", "seconds"}."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i : i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}

    started = time.perf_counter()
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="cloudtune-int8-") as work:
        folded = Path(work) / "folded.onnx"
        with contextlib.redirect_stdout(sys.stderr), _quiet("root"):
            quant_pre_process(str(src), str(folded), skip_symbolic_shape=True)
            quantize_static(str(folded), str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, reduce_range=True)
        want = ort_session(src, threads=1).run([OUTPUT], {INPUT: check})[0]
        got = ort_session(tmp, threads=1).run([OUTPUT], {INPUT: check})[0]
        cosine = (want * got).sum(1) / np.maximum(np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        if not cosine.mean() >= min_cosine:
            raise ValueError(f"fingerprint int8 export: its vectors' mean cosine to float32's is {cosine.mean():.4f} on {len(check)} segments "
                             f"(< fingerprint_inference.int8_min_cosine {min_cosine:g}); nothing written")
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {**export_metadata(src), "precision": "int8", "scheme": INT8_SCHEME,
                                            "calibration": str(len(calibration)), "mean_cosine": f"{cosine.mean():.6f}"})
        onnx.save_model(proto, str(tmp))
    return {"path": str(out), "precision": "int8", "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "calibration": len(calibration), "seconds": time.perf_counter() - started}


def export_metadata(path: str | Path) -> dict[str, str]:
    """An export's metadata_props (the checkpoint it came from, opset, precision)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def ort_session(path: str | Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (0: its default). Its pool threads spin-wait only when
    OpenMP's may (``OMP_WAIT_POLICY``; `cloudtune serve` sets it PASSIVE: spinning threads fight the request threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3  # errors only
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxFingerprint:
    """ONNX Runtime over an export: waves [B, segment samples] -> vectors [B, dim], the log-mel made by ``front`` (the model's,
    in its NumPy form: the same numbers, faster on the CPU)."""

    def __init__(self, path: str | Path, front: LogMelFrontEnd, threads: int):
        self.session, self.front, self.path = ort_session(path, threads), front, Path(path)

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: self.front.numpy(waves.numpy())})[0])


def load_onnx(path: str | Path, checkpoint: str | Path, front: LogMelFrontEnd, threads: int, scheme: str | None = None) -> OnnxFingerprint:
    """The export at ``path`` of ``checkpoint``, ready to run; :class:`ExportUnusable` with the reason when there is none, it
    was made from another state of the checkpoint (or, with ``scheme``, by another int8 scheme), or onnxruntime is not
    installed."""
    path = Path(path)
    if not path.exists():
        raise ExportUnusable(f"no ONNX export at {path}")
    try:
        runner = OnnxFingerprint(path, front, threads)
    except ImportError:
        raise ExportUnusable("onnxruntime is not installed") from None
    except Exception as exc:  # a truncated or foreign file: onnxruntime raises its own kinds
        raise ExportUnusable(f"{path}: not loadable by ONNX Runtime ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    made_from = runner.session.get_modelmeta().custom_metadata_map.get("checkpoint_sha256")
    if made_from != checkpoint_digest(checkpoint):
        raise ExportUnusable(f"{path} was exported from another state of {checkpoint} (trained since?)")
    made_as = runner.session.get_modelmeta().custom_metadata_map.get("scheme")
    if scheme is not None and made_as != scheme:
        raise ExportUnusable(f"{path} was quantized by another int8 scheme ({made_as or '8-bit weights'}; this code makes {scheme})")
    return runner

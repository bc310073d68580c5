"""The fingerprint's ONNX export (`cloudtune export onnx`) and ONNX Runtime serving it: a tiny fingerprint model of the real
class, saved as training saves it, exported through the command and embedded through the registry as search and serve build
it (``embedder_settings``), against the traced torch model."""

import contextlib
import io
import shutil
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline import config, paths
from pipeline.cli import main
from pipeline.embed import fingerprint_onnx
from pipeline.embed.registry import get_embedder
from pipeline.models.fingerprint import FingerprintNet, save_fingerprint
from pipeline.steps.retrieval import embedder_settings

SR = 24000  # the catalog rate: the embedder resamples to the model's 8 kHz first


def tiny_model(seed: int) -> FingerprintNet:
    torch.manual_seed(seed)
    model = FingerprintNet(config.defaults(config.FingerprintSettings, channels=(8, 16, 32, 32, 64, 64), dim=32, head_hidden=8))
    model.train()(torch.randn(16, model.segment_samples))  # BatchNorm statistics that are not the identity
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Run r1 with a saved tiny fingerprint model, exported once by the command (stdout kept)."""
    home = tmp_path_factory.mktemp("onnx") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(home))
        ckpt = paths.fingerprint_checkpoint("r1")
        ckpt.parent.mkdir(parents=True)
        save_fingerprint(ckpt, tiny_model(0), epoch=0, history=[{"epoch": 0}])
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["export", "onnx", "--run-id", "r1"]) == 0
    return home, out.getvalue()


@pytest.fixture
def home(exported, tmp_path, monkeypatch):
    copy = tmp_path / "home"
    shutil.copytree(exported[0], copy)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(copy))
    return copy


def audio(seconds: float, seed: int) -> np.ndarray:
    """A chord over pink-ish noise, at the catalog rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 2000, 3))
    return (0.2 * chord + 0.05 * np.cumsum(rng.standard_normal(t.size)) / np.sqrt(t.size)).astype(np.float32)


def test_the_command_writes_a_checked_export_with_a_dynamic_batch_axis_and_keeps_it_while_the_checkpoint_stays(exported, home, capsys):
    out = exported[1]
    assert "opset 18, dynamic batch" in out and "max |diff|" in out, out
    session = ort.InferenceSession(str(paths.fingerprint_onnx("r1")), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "logmel" and isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 128, 32]  # n_mels 128, 32 frames a segment
    assert outp.shape[1:] == [32]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["checkpoint_sha256"] == fingerprint_onnx.checkpoint_digest(paths.fingerprint_checkpoint("r1")) and meta["opset"] == "18"
    assert main(["export", "onnx", "--run-id", "r1"]) == 0
    assert "already the export" in capsys.readouterr().out


def test_onnx_runtime_gives_the_torch_vectors_through_the_embedder_search_and_serve_build(home):
    settings = embedder_settings()
    assert settings["fingerprint"].backend == "onnx"  # the shipped default: the faster backend (bench/RESULTS.md)
    onnx = get_embedder("fingerprint", "r1", "cpu", **settings)
    torch_ = get_embedder("fingerprint", "r1", "cpu", **{**settings, "fingerprint": replace(settings["fingerprint"], backend="torch")})
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")
    waves = [audio(5.0, 1), audio(2.3, 2), audio(0.6, 3)]  # 5 s: 9 segments at 1 s every 0.5 s; the last one padded
    spans = [[(a, a + SR) for a in range(0, len(w) - SR + 1, SR // 2)] or [(0, len(w))] for w in waves]
    a, b = onnx.embed_spans(waves, spans), torch_.embed_spans(waves, spans)
    assert a.shape == (9 + 3 + 1, 32)
    assert np.abs(a - b).max() < 1e-4
    assert onnx.manifest() == torch_.manifest()  # indexes built with either backend serve the other


def test_a_missing_or_stale_export_falls_back_to_torch_saying_why(home, capsys, monkeypatch):
    settings = embedder_settings()
    ckpt = paths.fingerprint_checkpoint("r1")
    save_fingerprint(ckpt, tiny_model(1), epoch=1)  # trained further: the export is of another state
    emb = get_embedder("fingerprint", "r1", "cpu", **settings)
    assert emb.backend == "torch" and "exported from another state" in capsys.readouterr().err
    paths.fingerprint_onnx("r1").unlink()
    assert get_embedder("fingerprint", "r1", "cpu", **settings).backend == "torch"
    assert "no ONNX export at" in capsys.readouterr().err
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_INFERENCE__BACKEND", "torch")  # selected: no export is looked for, no note
    assert get_embedder("fingerprint", "r1", "cpu", **embedder_settings()).backend == "torch"
    assert capsys.readouterr().err == ""


def test_an_export_beyond_the_tolerance_is_refused_and_nothing_is_written(home, capsys, monkeypatch):
    save_fingerprint(paths.fingerprint_checkpoint("r1"), tiny_model(2), epoch=0)
    before = paths.fingerprint_onnx("r1").read_bytes()
    monkeypatch.setattr(fingerprint_onnx, "max_difference", lambda model, path: 0.5)
    assert main(["export", "onnx", "--run-id", "r1"]) == 2
    assert "differ from PyTorch's by 0.5 (> fingerprint_inference.tolerance 0.0001); nothing written" in capsys.readouterr().err
    assert paths.fingerprint_onnx("r1").read_bytes() == before
    assert sorted(p.name for p in paths.models_dir("r1").iterdir()) == ["fingerprint.onnx", "fingerprint.pt"]  # no temporary file left
    assert main(["export", "onnx", "--run-id", "r2"]) == 2
    assert "run r2 has no fingerprint model" in capsys.readouterr().err


def test_the_service_names_the_backend_the_fingerprint_runs_on(home):
    from types import SimpleNamespace

    from pipeline.api.search_model import served

    index = SimpleNamespace(track_ids=[1, 2], index=SimpleNamespace(ntotal=7))
    emb = get_embedder("fingerprint", "r1", "cpu", **embedder_settings())
    searcher = SimpleNamespace(run_id="r1", embedder=emb, index_kind="flat", index=index)
    assert served(searcher) == {"run_id": "r1", "embedder": "fingerprint", "backend": "onnx", "index_kind": "flat", "tracks": 2, "vectors": 7}

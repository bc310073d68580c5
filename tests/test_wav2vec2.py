"""wav2vec2 features: tiny random Wav2Vec2 models saved with save_pretrained, loaded through the real code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from pipeline import config
from pipeline.cli import main
from pipeline.config import Wav2Vec2Settings, defaults
from pipeline.embed import SegmentEmbedder
from pipeline.embed.wav2vec2 import get_wav2vec2_embedder
from pipeline.models.wav2vec2 import Wav2Vec2Features, Wav2Vec2NotConfigured
from pipeline.service import handlers
from pipeline.service.model_service import ModelService

SERVICE = config.section(config.ServiceSettings, config.load(), "service")  # the model service's shipped settings

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
            conv_kernel=(10, 4, 4), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


def save_tiny(folder: Path, layer_norm: bool) -> Path:
    """group norm + no attention mask (like wav2vec2-base) or layer norm + attention mask (like wav2vec2-large-lv60)."""
    torch.manual_seed(1 if layer_norm else 0)
    cfg = Wav2Vec2Config(**TINY, feat_extract_norm="layer" if layer_norm else "group", do_stable_layer_norm=layer_norm)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=layer_norm, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def float32(monkeypatch):
    """Parity is a float32 claim: dtype auto would pick bfloat16 on a CPU with native bfloat16 (1 - cos ~1e-5, see test_bfloat16...)."""
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__DTYPE", "float32")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v")
    return {"group": save_tiny(root / "group", False), "layer": save_tiny(root / "layer", True)}


def clip(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@torch.inference_mode()
def direct(model_dir: Path, wave16k: np.ndarray, layer: int | None = None) -> np.ndarray:
    """What the original script does: feature extractor + model, mean of last_hidden_state over time."""
    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = Wav2Vec2Model.from_pretrained(model_dir).eval()
    inputs = fe(wave16k, sampling_rate=16000, return_tensors="pt")
    out = model(**inputs, output_hidden_states=True)
    hidden = out.last_hidden_state if layer is None else out.hidden_states[layer]
    return hidden.mean(dim=1)[0].numpy()


def configured() -> dict:
    """The wav2vec2 section and the audio rate as the config (with its env overrides) has them now: what a step passes down."""
    data = config.load()
    return {"settings": config.section(Wav2Vec2Settings, data, "wav2vec2"), "sample_rate": config.section(config.AudioSettings, data, "audio").sample_rate}


def embed_cli(capsys, *args, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["embed", *args])
    out, err = capsys.readouterr()
    return code, out, err


def request(wave, sr) -> str:
    return json.dumps({"audio": {"array": np.asarray(wave, dtype=np.float64).tolist(), "sampling_rate": sr}})


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_embed_equals_the_mean_of_last_hidden_state(models, kind, tmp_path, capsys, caplog):
    wave = clip(1.0, 16000)
    (tmp_path / "in.json").write_text(request(wave, 16000))
    code, out, err = embed_cli(capsys, "--model", str(models[kind]), "--input", str(tmp_path / "in.json"), "--device", "cpu")
    assert code == 0, err
    vec = np.asarray(json.loads(out)["embedding"])
    assert vec.shape == (32,)
    np.testing.assert_allclose(vec, direct(models[kind], wave), rtol=1e-5, atol=1e-6)
    assert "input [1, 16000] -> last_hidden_state [1, 199, 32] -> pooled [1, 32]" in caplog.text
    assert "hidden 32" in caplog.text and ("attention mask yes" if kind == "layer" else "attention mask no") in caplog.text


def test_bfloat16_and_what_auto_picks(models, tmp_path, capsys, monkeypatch):
    from pipeline import devices

    wave = clip(1.0, 16000, seed=5)
    (tmp_path / "in.json").write_text(request(wave, 16000))
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--input", str(tmp_path / "in.json"), "--dtype", "bfloat16")
    assert code == 0, err
    vec, ref = np.asarray(json.loads(out)["embedding"]), direct(models["group"], wave)
    assert vec.shape == ref.shape and np.dot(vec, ref) / np.linalg.norm(vec) / np.linalg.norm(ref) > 0.999
    for native, cpu in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda native=native: native)
        assert devices.resolve_dtype("auto", "cpu") == cpu and devices.resolve_dtype("auto", "cuda:0") == torch.bfloat16
        assert devices.resolve_dtype("auto", "cpu", cpu_bfloat16=False) == torch.float32  # moss.dtype auto: bfloat16 on CUDA only
    assert devices.resolve_dtype("float32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="wav2vec2.dtype 'int8'"):
        devices.resolve_dtype("int8", "cpu", "wav2vec2.dtype")


def test_embed_resamples_with_soxr_and_picks_a_layer(models, tmp_path, capsys, monkeypatch):
    wave = clip(0.8, 44100, seed=3)
    at16k = soxr.resample(wave, 44100, 16000, quality="HQ").astype(np.float32)
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--layer", "1", stdin=request(wave, 44100), monkeypatch=monkeypatch)
    assert code == 0, err
    np.testing.assert_allclose(json.loads(out)["embedding"], direct(models["group"], at16k, layer=1), rtol=1e-5, atol=1e-6)
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--layer", "0", stdin=request(wave, 44100), monkeypatch=monkeypatch)
    np.testing.assert_allclose(json.loads(out)["embedding"], direct(models["group"], at16k, layer=0), rtol=1e-5, atol=1e-6)
    code, out, err = embed_cli(capsys, "--model", str(models["layer"]), "--layer", "-2", stdin=request(wave, 44100), monkeypatch=monkeypatch)
    assert code == 0, err
    np.testing.assert_allclose(json.loads(out)["embedding"], direct(models["layer"], at16k, layer=1), rtol=1e-5, atol=1e-6)
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--layer", "3", stdin=request(wave, 44100), monkeypatch=monkeypatch)
    assert code == 2 and out == "" and err.strip() == "cloudtune embed: error: --layer 3: the model has hidden states 0..2"


BAD_INPUTS = [
    ("", "no audio: the input is empty"),
    ("{\"audio\": ", "input: not valid JSON: Expecting value: line 1 column 11 (char 10)"),
    ("[1, 2]", "no audio: expected a JSON object"),
    ("{\"sampling_rate\": 16000}", "no audio: expected a JSON object"),
    ("{\"audio\": {\"sampling_rate\": 16000}}", "no audio: audio.array is missing"),
    ("{\"audio\": {\"array\": [], \"sampling_rate\": 16000}}", "no audio: audio.array is empty"),
    ("{\"audio\": {\"array\": [0.1, NaN], \"sampling_rate\": 16000}}", "audio.array[1]: not finite (nan)"),
    ("{\"audio\": {\"array\": [0.1, 0.2, -Infinity], \"sampling_rate\": 16000}}", "audio.array[2]: not finite (-inf)"),
    ("{\"audio\": {\"array\": [0.1, 1e999], \"sampling_rate\": 16000}}", "audio.array[1]: not finite (inf)"),
    ("{\"audio\": {\"array\": [0.1, 1e300], \"sampling_rate\": 16000}}", "audio.array[1]: 1e+300 does not fit in float32"),
    ("{\"audio\": {\"array\": [0.1, 1%s], \"sampling_rate\": 16000}}" % ("0" * 400), "audio.array[1]: 10000000000000000000... does not fit in float32"),
    ("{\"audio\": {\"array\": [0.1, \"x\"], \"sampling_rate\": 16000}}", "audio.array[1]: not a number (\"x\")"),
    ("{\"audio\": {\"array\": [null], \"sampling_rate\": 16000}}", "audio.array[0]: not a number (null)"),
    ("{\"audio\": {\"array\": [0.5, true], \"sampling_rate\": 16000}}", "audio.array[1]: not a number (true)"),
    ("{\"audio\": {\"array\": [[0.5, 0.1]], \"sampling_rate\": 16000}}", "audio.array[0]: not a number ([0.5, 0.1])"),
    ("{\"audio\": {\"array\": \"0.5\", \"sampling_rate\": 16000}}", "audio.array: expected a list of numbers, got str"),
    ("{\"audio\": {\"array\": [0.5]}}", "audio.sampling_rate: expected a positive number, got nothing"),
    ("{\"audio\": {\"array\": [0.5], \"sampling_rate\": 0}}", "audio.sampling_rate: expected a positive whole number of Hz, got 0"),
    ("{\"audio\": {\"array\": [0.5], \"sampling_rate\": -16000}}", "audio.sampling_rate: expected a positive whole number of Hz, got -16000"),
    ("{\"audio\": {\"array\": [0.5], \"sampling_rate\": 16000.5}}", "audio.sampling_rate: expected a positive whole number of Hz, got 16000.5"),
    ("{\"audio\": {\"array\": [0.5], \"sampling_rate\": \"16000\"}}", "audio.sampling_rate: expected a positive number, got \"16000\""),
]


@pytest.mark.parametrize("text,reason", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(text, reason, capsys, monkeypatch, models):
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), stdin=text, monkeypatch=monkeypatch)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("cloudtune embed: error: ") and reason in err, err


def test_model_and_device_errors(capsys, monkeypatch, tmp_path, models):
    ok = request(clip(0.2, 16000), 16000)
    code, out, err = embed_cli(capsys, stdin=ok, monkeypatch=monkeypatch)
    assert code == 2 and "no model: pass --model" in err
    code, out, err = embed_cli(capsys, "--model", str(tmp_path / "nope"), stdin=ok, monkeypatch=monkeypatch)
    assert code == 2 and "is not a local directory, and downloads are off (wav2vec2.allow_download: false)" in err
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--input", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json: cannot read: No such file or directory" in err
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__MAX_SECONDS", "0.1")
    code, out, err = embed_cli(capsys, "--model", str(models["group"]), stdin=ok, monkeypatch=monkeypatch)
    assert code == 2 and "0.2 s of audio is over the 0.1 s limit" in err
    if not torch.cuda.is_available():
        tiny = request(clip(0.05, 16000), 16000)
        code, out, err = embed_cli(capsys, "--model", str(models["group"]), "--device", "cuda", stdin=tiny, monkeypatch=monkeypatch)
        assert code == 2 and out == ""
        assert err.strip().endswith(f"--device cuda: no CUDA device is available (torch {torch.__version__}); use --device cpu or auto")


def test_cloudtune_embed_isolated_prints_only_the_json(models, tmp_path):
    """The real console script through the model service's worker process: stdout is the result JSON only."""
    wave = clip(0.5, 22050, seed=7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
           "CLOUDTUNE__WAV2VEC2__THREADS": "1"}
    p = subprocess.run([CLOUDTUNE, "embed", "--model", str(models["layer"]), "--isolated"], input=request(wave, 22050), capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)  # nothing else on stdout
    assert list(result) == ["embedding"] and p.stdout.count("\n") == 1
    assert "embedding [32]" in p.stderr and "worker pid" in p.stderr
    in_process = Wav2Vec2Features(str(models["layer"]), device="cpu", dtype="float32").embed_one(wave, 22050)
    np.testing.assert_allclose(result["embedding"], in_process, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_embedder_batches_equal_one_clip_at_a_time(models, kind):
    lengths = [1.0, 0.5, 1.0, 0.75, 1.0, 0.5, 0.3]
    waves = [clip(s, 24000, seed=i) for i, s in enumerate(lengths)]
    features = Wav2Vec2Features(str(models[kind]), device="cpu", dtype="float32", batch_size=3, max_batch_seconds=2.5)
    settings = defaults(Wav2Vec2Settings, model=str(models[kind]), dtype="float32", batch_size=3, cpu_max_batch_seconds=2.5)
    embedder = get_wav2vec2_embedder(settings, 24000, device="cpu")
    assert isinstance(embedder, SegmentEmbedder) and embedder.name == "wav2vec2" and embedder.dim == 32 and embedder.sample_rate == 24000
    vectors = embedder.embed(waves)
    assert vectors.shape == (7, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    singles = np.stack([features.embed_one(w, 24000) for w in waves])
    np.testing.assert_allclose(vectors, singles / np.linalg.norm(singles, axis=1, keepdims=True), atol=2e-5)
    samples = [round(s * 16000) for s in lengths]
    groups = features.batches(samples)
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert all(len(g) <= 3 and len(g) * max(samples[i] for i in g) <= 2.5 * 16000 for g in groups)
    if kind == "group":  # no attention mask: a batch holds one length only, so padding cannot change a vector
        assert all(len({samples[i] for i in g}) == 1 for g in groups) and [len(g) for g in groups] == [1, 2, 1, 2, 1]
    else:  # with a mask, mixed lengths share a batch
        assert len(groups) < 5
    manifest = embedder.manifest()
    assert manifest["name"] == "wav2vec2" and manifest["model"] == str(models[kind].resolve()) and manifest["layer"] is None
    assert manifest["attention_mask"] is (kind == "layer") and embedder.embed([]).shape == (0, 32)


def test_embedder_not_configured_is_one_line(monkeypatch, models):
    with pytest.raises(Wav2Vec2NotConfigured) as err:
        get_wav2vec2_embedder(**configured())
    assert "\n" not in str(err.value) and "no model configured" in str(err.value)
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__MODEL", str(models["group"]))
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__LAYER", "1")
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__THREADS", "1")
    embedder = get_wav2vec2_embedder(**configured(), device="cpu")
    assert embedder.manifest()["layer"] == 1 and embedder.dim == 32
    before = torch.get_num_threads()
    assert embedder.embed([clip(0.3, 24000)]).shape == (1, 32)
    assert torch.get_num_threads() == before  # wav2vec2.threads applies while embedding only


def test_service_analyze_in_process(models):
    wave = clip(0.5, 8000)
    init = {"settings": config.load()["wav2vec2"], "model": str(models["group"]), "device": "cpu"}
    with ModelService(handlers.WAV2VEC2, init, SERVICE, isolated=False) as service:
        assert service.capabilities()["loaded"] is False  # lazy: nothing loaded before the first request
        out = service.analyze(wave, 8000)
        assert out["duration_s"] == pytest.approx(0.5) and out["frames"] == 99 and out["layer"] == "last" and out["peak"] > 0.3
        np.testing.assert_allclose(out["embedding"], direct(models["group"], soxr.resample(wave, 8000, 16000, quality="HQ")), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(service.process(wave, 8000), out["embedding"], rtol=1e-6)
        assert service.call("capabilities")["loaded"] is True and service.capabilities()["success_rate"] == 1.0


def test_service_handler_takes_its_settings_from_the_caller(models, monkeypatch):
    """cloudtune embed --isolated passes the wav2vec2 section it read; the handler then reads no config of its own."""
    from dataclasses import asdict

    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__MAX_SECONDS", "99")
    settings = defaults(Wav2Vec2Settings, model=str(models["layer"]), device="cpu", dtype="float32", max_seconds=0.25, layer=1)
    with ModelService(handlers.WAV2VEC2, {"settings": asdict(settings)}, SERVICE, isolated=False) as service:
        caps = service.capabilities()
        assert caps["max_duration_s"] == 0.25 and caps["model"] == str(models["layer"]) and caps["loaded"] is False
        with pytest.raises(ValueError, match="over the service's 0.25 s limit"):
            service.process(clip(0.5, 16000), 16000)
        assert service.analyze(clip(0.2, 16000), 16000)["layer"] == 1
    with pytest.raises(config.ConfigError, match="config wav2vec2.bogus: unknown key"):
        ModelService(handlers.WAV2VEC2, {"settings": {"bogus": 1}}, SERVICE, isolated=False).initialize()

"""Weight-only int8 (pipeline/asr/int8.py, ``qwen3_asr.quantize: int8``): the layer's numbers, and the tiny random Qwen3-ASR
of the real classes (tests/qwen3_asr_tiny.py) loaded with int8 weights through load_qwen3_asr, from a bfloat16 checkpoint as
the release ships (transformers' in-place map, every linear weight read from the file instead)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from qwen3_asr_tiny import save_tiny_native
from torch import nn

from pipeline.asr.int8 import Int8Linear, dequantized
from pipeline.asr.qwen3 import load_qwen3_asr
from pipeline.config.asr_settings import Qwen3AsrSettings

SR = 16000
SETTINGS = Qwen3AsrSettings(model=None, device="cpu", dtype="auto", quantize="int8", tokens_per_second=8.0, min_new_tokens=32,
                            repetition_guard=0, max_new_tokens=None)
N = 12


def clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("width", [64, 7])  # 7: not a width the CPU kernel takes, so the cast-and-scale way
def test_the_layer_multiplies_by_its_dequantized_weight(width):
    torch.manual_seed(0)
    dense = nn.Linear(width, 37)
    layer = Int8Linear.from_blocks([(0, dense.weight.detach())], (37, width), dense.bias, torch.bfloat16)
    assert layer.weight.dtype == torch.int8 and layer.scales.dtype == torch.bfloat16 and layer.scales.shape == (37,)
    w = dense.weight.detach()
    assert (dequantized(layer) - w).abs().max() <= w.abs().amax() / 127  # half a step of the row's scale, and the scale's rounding
    x = torch.randn(2, 5, width).to(torch.bfloat16)
    want = x.float() @ dequantized(layer).T + layer.bias.float()
    got = layer(x)
    assert got.shape == (2, 5, 37) and got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() <= 0.02 * want.abs().max()  # bfloat16 rounding of the products and the output


def test_blocks_quantize_like_one_piece():
    torch.manual_seed(1)
    w = torch.randn(50, 16)
    w[3] = 0.0  # a row of zeros keeps a finite scale
    whole = Int8Linear.from_blocks([(0, w)], (50, 16), None, torch.bfloat16)
    pieces = Int8Linear.from_blocks([(0, w[:20]), (20, w[20:45]), (45, w[45:])], (50, 16), None, torch.bfloat16)
    assert torch.equal(whole.weight, pieces.weight) and torch.equal(whole.scales, pieces.scales)
    assert torch.isfinite(whole.scales.float()).all() and not whole.weight[3].any()


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """The tiny model saved in bfloat16, as the release ships: transformers loads it in place (memory-mapped)."""
    from transformers import Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    root = tmp_path_factory.mktemp("qwen3asr-int8")
    native = save_tiny_native(root / "native")
    Qwen3ASRForConditionalGeneration.from_pretrained(str(native), dtype=torch.bfloat16).save_pretrained(root / "bf16")
    Qwen3ASRProcessor.from_pretrained(str(native)).save_pretrained(root / "bf16")
    return root / "bf16"


@pytest.fixture(scope="module")
def asr(bf16_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # a module fixture comes before the per-test home: give it one of its own
        mp.setenv("CLOUDTUNE_HOME", str(tmp_path_factory.mktemp("home")))
        tr = load_qwen3_asr(str(bf16_dir), SETTINGS)
    tr.max_new_tokens = N
    return tr


def test_every_linear_layer_is_int8_and_read_from_the_file(asr, bf16_dir, caplog):
    from transformers import Qwen3ASRForConditionalGeneration

    assert asr.dtype == torch.bfloat16
    modules = dict(asr.model.named_modules())
    assert not [n for n, m in modules.items() if type(m) is nn.Linear]
    layers = [n for n, m in modules.items() if isinstance(m, Int8Linear)]
    assert "lm_head" in layers and len(layers) > 20
    dense = Qwen3ASRForConditionalGeneration.from_pretrained(str(bf16_dir), dtype=torch.float32)
    for name in layers:  # each the checkpoint's weight to within its row's step (the tied head: the embedding's)
        w = dense.get_submodule(name).weight.detach()
        step = w.abs().amax(dim=1, keepdim=True) / 127
        assert ((dequantized(modules[name]) - w).abs() <= step * 0.51 + 1e-3 * step).all(), name
    with caplog.at_level("INFO", logger="pipeline.asr.qwen3"):
        load_qwen3_asr(str(bf16_dir), SETTINGS)
    assert f"int8 weights in {len(layers)} linear layers ({len(layers)} quantized from the checkpoint's file, kept in" in caplog.text


def test_the_int8_weights_are_kept_and_read_back(bf16_dir, caplog):
    from pipeline import paths

    first = load_qwen3_asr(str(bf16_dir), SETTINGS).model
    cache = paths.asr_int8_cache(bf16_dir, "bfloat16")
    assert cache.is_file()
    with caplog.at_level("INFO", logger="pipeline.asr.qwen3"):
        again = load_qwen3_asr(str(bf16_dir), SETTINGS).model
    assert f"read from {cache}" in caplog.text
    a, b = first.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    for broken in (len(b"{}").to_bytes(8, "little") + b"{}", cache.read_bytes()[:1000]):  # none of the layers; cut short
        cache.write_bytes(broken)
        caplog.clear()
        with caplog.at_level("INFO", logger="pipeline.asr.qwen3"):
            remade = load_qwen3_asr(str(bf16_dir), SETTINGS).model
        assert "quantized from the checkpoint's file, kept in" in caplog.text
        assert all(torch.equal(a[k], remade.state_dict()[k]) for k in a)


def test_transcripts_equal_generate_on_the_int8_model(asr):
    waves = [clip(2.0, 1), clip(1.1, 2)]
    for wave in waves:
        inputs = asr.processor.apply_transcription_request(audio=[wave], language="English").to(asr.device)
        inputs["input_features"] = inputs["input_features"].to(torch.bfloat16)
        with torch.inference_mode():
            out = asr.model.generate(**inputs, max_new_tokens=N, do_sample=False)
        want = asr.processor.decode(out[0, inputs["input_ids"].shape[1]:], return_format="parsed")["transcription"]
        assert asr.transcribe([wave], language="English")[0].text == want
    assert "".join(asr.stream(waves[0], language="English")) == asr.transcribe([waves[0]], language="English")[0].text


def test_int8_with_float32_activations_on_the_cpu_is_refused(bf16_dir):
    with pytest.raises(ValueError, match="quantize int8 runs bfloat16 activations on the CPU") as err:
        load_qwen3_asr(str(bf16_dir), SETTINGS, dtype="float32")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="set dtype auto or bfloat16, not float16"):
        dataclasses.replace(SETTINGS, dtype="float16")


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_cloudtune_asr_infer_with_a_local_qwen3_asr_directory(bf16_dir, tmp_path, capsys, quantize):
    import json

    import soundfile as sf

    from pipeline.cli import main

    wavs = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(wavs[0], clip(1.5, 1), SR, subtype="PCM_16")
    sf.write(wavs[1], clip(0.8, 2)[::2], SR // 2, subtype="PCM_16")  # 8 kHz: resampled
    args = ["asr", "infer", *map(str, wavs), "--backend", "qwen3-asr", "--model", str(bf16_dir), "--quantize", quantize,
            "--language", "English", "--max-new-tokens", "4", "--json"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == list(map(str, wavs))
    assert all(isinstance(r["text"], str) and r["language"] == "English" and r["rtf"] > 0 for r in rows)
    assert [r["duration_s"] for r in rows] == pytest.approx([1.5, 0.8])


def test_cloudtune_asr_infer_refuses_int8_with_float32_in_one_line(bf16_dir, tmp_path, capsys):
    import soundfile as sf

    from pipeline.cli import main

    sf.write(tmp_path / "a.wav", clip(1.0, 1), SR, subtype="PCM_16")
    code = main(["asr", "infer", str(tmp_path / "a.wav"), "--backend", "qwen3-asr", "--model", str(bf16_dir), "--quantize", "int8",
                 "--dtype", "float32"])
    err = capsys.readouterr().err
    assert code == 2 and "quantize int8 runs bfloat16 activations" in err and err.count("\n") == 1, err

"""The Qwen3-ASR backend on a tiny random Qwen3-ASR of the real transformers classes (tests/qwen3_asr_tiny.py), saved with
save_pretrained and loaded through load_qwen3_asr. Random weights never stop on their own and loop readily, so most tests cap
the new tokens (max_new_tokens) and switch the repetition guard off; the guard has its own tests."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np
import pytest
import torch
from qwen3_asr_tiny import save_tiny_native, save_tiny_original

from pipeline import paths
from pipeline.asr.base import Transcriber
from pipeline.asr.qwen3 import load_qwen3_asr, loop_cut
from pipeline.asr.qwen3_convert import convert_checkpoint, is_original_layout
from pipeline.config.asr_settings import Qwen3AsrSettings

SR = 16000
SETTINGS = Qwen3AsrSettings(model=None, device="auto", dtype="auto", quantize="none",
                            tokens_per_second=8.0, min_new_tokens=32, repetition_guard=0, max_new_tokens=None)
N = 12  # new tokens per clip in the parity tests


def clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


WAVES = [clip(3.0, 1), clip(1.3, 2), clip(2.2, 3), clip(0.7, 4)]  # mixed lengths, one under a 1 s encoder chunk


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3asr")
    native = save_tiny_native(root / "native")
    return {"native": native, "original": save_tiny_original(native, root / "original"), "root": root}


@pytest.fixture(scope="module")
def asr(dirs):
    tr = load_qwen3_asr(str(dirs["native"]), SETTINGS)
    tr.max_new_tokens = N
    return tr


def reference(tr, wave: np.ndarray, language: str | None, new_tokens: int) -> dict:
    """What transformers' own recipe gives for one clip: processor.apply_transcription_request + model.generate, greedy, the
    same number of new tokens, decoded by the processor's parser."""
    inputs = tr.processor.apply_transcription_request(audio=[wave], language=language).to(tr.device)
    with torch.inference_mode():
        out = tr.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return tr.processor.decode(out[0, inputs["input_ids"].shape[1]:], return_format="parsed")


def test_loads_the_native_layout_in_float32_on_cpu(asr):
    assert isinstance(asr, Transcriber)
    assert (asr.name, asr.sample_rate, asr.max_batch) == ("qwen3-asr", 16000, 4)
    assert asr.dtype == torch.float32 and asr.device.type == "cpu"
    assert next(asr.model.parameters()).dtype == torch.float32


def test_bfloat16_when_asked(dirs):
    tr = load_qwen3_asr(str(dirs["native"]), SETTINGS, device="cpu", dtype="bfloat16")
    tr.max_new_tokens = 3
    assert tr.dtype == torch.bfloat16
    assert tr.model.model.audio_tower.conv2d1.weight.dtype == torch.float32  # convolutions in float32 on the CPU: no slow bfloat16 path
    assert isinstance(tr.transcribe([WAVES[1]], language="English")[0].text, str)


@pytest.mark.parametrize("language", [None, "English"])
def test_one_clip_equals_generate(asr, language):
    for wave in WAVES[:2]:
        got = asr.transcribe([wave], language=language)[0]
        ref = reference(asr, wave, language, N)
        assert got.text == ref["transcription"]
        assert got.language == (language or ref["language"])
        assert asr.last_new_tokens[0] <= N


def test_mixed_length_batch_equals_one_clip_each(asr):
    batch = asr.transcribe(WAVES, language="English")
    alone = [asr.transcribe([w], language="English")[0] for w in WAVES]
    assert [t.text for t in batch] == [t.text for t in alone]
    assert [t.text for t in batch] == [reference(asr, w, "English", N)["transcription"] for w in WAVES]
    assert len({t.text for t in batch}) > 1  # the clips differ, so the check means something
    assert [t.duration_s for t in batch] == pytest.approx([3.0, 1.3, 2.2, 0.7])


@pytest.mark.parametrize("guard", [0, 4])
def test_stream_joins_to_the_transcript(dirs, guard):
    tr = load_qwen3_asr(str(dirs["native"]), dataclasses.replace(SETTINGS, repetition_guard=guard))
    tr.max_new_tokens = 30
    for wave in WAVES[:3]:
        pieces = list(tr.stream(wave, language="English"))
        assert "".join(pieces) == tr.transcribe([wave], language="English")[0].text
    assert len(list(tr.stream(WAVES[0], language="English"))) > 1  # given out as decoded, not in one piece at the end


def test_token_budget_follows_the_audio_length(dirs):
    tr = load_qwen3_asr(str(dirs["native"]), dataclasses.replace(SETTINGS, tokens_per_second=4.0, min_new_tokens=2))
    assert tr.budget(2.0) == 10 and tr.budget(300.0) == 1202  # 5 min of speech: far past generate()'s 512
    tr.transcribe([clip(2.0, 5), clip(4.5, 6)], language="English")
    short, long = tr.last_new_tokens
    assert long == 20 and short <= 10  # the 4.5 s clip spends its own budget in a batch; the 2 s clip stays within its own


def test_long_audio_is_not_cut_at_30_s(asr):
    wave = clip(40.0, 7)
    inputs = asr.inputs([wave], "English")
    assert inputs["input_features"].shape[-1] == 4000 and int(inputs["input_features_mask"].sum()) == 4000
    assert int((inputs["input_ids"] == asr.model.config.audio_token_id).sum()) == 40 * 13  # 13 audio tokens per second
    assert asr.transcribe([wave], language="English")[0].duration_s == pytest.approx(40.0)


def test_the_audio_encoder_runs_one_window_at_a_time(asr):
    """load_qwen3_asr makes the audio tower run each clip one attention window at a time (its convolutions over the whole
    batch at once need about 6 MiB per second of audio in bfloat16): the output of transformers' own forward, to float
    rounding (bit for bit for clips of whole windows on an AVX-512 CPU, not on an AVX2 one, whose convolution kernels block
    the work another way), and each clip's features the same to the bit alone or in a batch."""
    enc = asr.model.model.audio_tower
    assert "forward" in vars(enc)

    def both(inputs):
        features, mask = inputs["input_features"], inputs["input_features_mask"]
        with torch.inference_mode():
            return (enc(input_features=features, input_features_mask=mask).last_hidden_state,
                    type(enc).forward(enc, input_features=features, input_features_mask=mask).last_hidden_state)

    own = asr.processor.apply_transcription_request(audio=[WAVES[0]], language="English")
    for inputs in (asr.inputs([clip(9.5, 8)]), asr.inputs([WAVES[0]]), own):  # 2 s windows in the tiny model: 5 and 2 windows
        ours, theirs = both(inputs)
        assert ours.shape == theirs.shape and torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    batch, theirs = both(asr.inputs(WAVES))
    assert batch.shape == theirs.shape and torch.allclose(batch, theirs, rtol=1e-5, atol=1e-5)
    assert torch.equal(batch, torch.cat([both(asr.inputs([w]))[0] for w in WAVES]))


def test_forced_language_is_prefilled_and_returned(asr):
    prompt = asr.processor.tokenizer.decode(asr.inputs([WAVES[0]], "English")["input_ids"][0])
    assert prompt.endswith("<|im_start|>assistant\nlanguage English<asr_text>")
    assert asr.processor.tokenizer.decode(asr.inputs([WAVES[0]], None)["input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert asr.transcribe([WAVES[0]], language="en")[0].language == "English"  # codes resolve to the prompt's names
    with pytest.raises(ValueError, match="cannot force language 'Klingon'"):
        asr.transcribe([WAVES[0]], language="Klingon")


def test_loop_cut_keeps_one_copy_of_a_loop():
    assert loop_cut([5, 6, 7] + [1, 2, 3] * 3, guard=6) == 6
    assert loop_cut([5] + [9] * 9, guard=8) == 2  # nine equal tokens: one kept
    assert loop_cut([5] + [9] * 8, guard=8) is None  # the repeats cover 7 tokens only
    assert loop_cut([1, 2, 3, 4, 1, 2, 3, 4], guard=4) is None  # a phrase said twice is speech, not a loop
    assert loop_cut([9] * 20, guard=0) is None  # 0: off


def test_repetition_guard_stops_and_trims_a_looping_clip(dirs):
    free = load_qwen3_asr(str(dirs["native"]), SETTINGS)
    guarded = load_qwen3_asr(str(dirs["native"]), dataclasses.replace(SETTINGS, repetition_guard=4))
    free.max_new_tokens = guarded.max_new_tokens = 40
    loose, kept = free.transcribe(WAVES[1:3], language="English"), guarded.transcribe(WAVES[1:3], language="English")
    assert free.last_new_tokens == [40, 40]
    assert all(n < 40 for n in guarded.last_new_tokens)  # the tiny model repeats a token 5+ times on these clips
    for a, b in zip(loose, kept, strict=True):
        assert a.text.startswith(b.text) and len(b.text) < len(a.text)


def test_missing_or_empty_directory_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match=r"model directory .* does not exist") as exc:
        load_qwen3_asr(str(tmp_path / "missing"), SETTINGS)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="has no config.json") as exc:
        load_qwen3_asr(str(tmp_path), SETTINGS)
    assert "\n" not in str(exc.value)


def test_original_layout_converts_on_load_and_matches_native(dirs, asr):
    original = dirs["original"]
    assert is_original_layout(original) and not is_original_layout(dirs["native"])
    before = sorted(p.relative_to(original) for p in original.rglob("*"))
    tr = load_qwen3_asr(str(original), SETTINGS)
    tr.max_new_tokens = N
    converted = paths.asr_model_cache(original)
    assert sorted(p.relative_to(original) for p in original.rglob("*")) == before  # the model folder is not written to
    assert "thinker_config" not in json.loads((converted / "config.json").read_text())
    assert [t.text for t in tr.transcribe(WAVES, language="English")] == [t.text for t in asr.transcribe(WAVES, language="English")]
    assert [t.text for t in tr.transcribe(WAVES[:2])] == [t.text for t in asr.transcribe(WAVES[:2])]
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    load_qwen3_asr(str(original), SETTINGS)
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # converted once, reused


def test_a_read_only_release_checkpoint_is_converted_once_into_the_home_cache(dirs, tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    ro = save_tiny_original(dirs["native"], tmp_path / "readonly" / "Qwen3-ASR-tiny")
    for folder in (ro, ro.parent):
        folder.chmod(0o555)
    try:
        cache_root = paths.asr_model_cache(ro).parent
        first = load_qwen3_asr(str(ro), SETTINGS)
        made = sorted(cache_root.iterdir())
        assert [p.name for p in made] == [paths.asr_model_cache(ro).name] and made[0].name.startswith("Qwen3-ASR-tiny-")
        stamp = (made[0] / "model.safetensors").stat().st_mtime_ns
        second = load_qwen3_asr(str(ro), SETTINGS)
        assert sorted(cache_root.iterdir()) == made  # the same copy, reused: no second conversion, no temporary folder left
        assert (made[0] / "model.safetensors").stat().st_mtime_ns == stamp
        assert sorted(os.listdir(ro)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        first.max_new_tokens = second.max_new_tokens = 4
        assert first.transcribe(WAVES[:1])[0].text == second.transcribe(WAVES[:1])[0].text
        assert not list(temp.iterdir())  # nothing in the temp folder (the old fallback converted into a new one on every load)
    finally:
        for folder in (ro.parent, ro):
            folder.chmod(0o755)


def test_the_cache_key_follows_the_checkpoint(dirs, tmp_path):
    ro = save_tiny_original(dirs["native"], tmp_path / "a" / "ckpt")
    key = paths.asr_model_cache(ro)
    assert paths.asr_model_cache(ro) == key and paths.asr_model_cache(tmp_path / "a" / ".." / "a" / "ckpt") == key
    assert paths.asr_model_cache(save_tiny_original(dirs["native"], tmp_path / "b" / "ckpt")) != key  # another folder
    config = ro / "config.json"
    config.write_text(config.read_text() + "\n")  # the checkpoint changed in place
    assert paths.asr_model_cache(ro) != key


def test_convert_checkpoint_is_atomic_and_refuses_wrong_input(dirs):
    root = dirs["root"]
    out = convert_checkpoint(dirs["original"], root / "converted")
    assert (out / "config.json").is_file() and not is_original_layout(out)
    assert not [p for p in root.iterdir() if p.name.startswith(".converted.")]  # no temporary folder left behind
    with pytest.raises(ValueError, match="exists already"):
        convert_checkpoint(dirs["original"], root / "converted")
    with pytest.raises(ValueError, match="not in the release layout"):
        convert_checkpoint(dirs["native"], root / "again")
    assert not (root / "again").exists()


def test_cloudtune_asr_convert(dirs, tmp_path, capsys):
    from pipeline.cli import main

    dst = tmp_path / "out" / "Qwen3-ASR-tiny-hf"
    assert main(["asr", "convert", str(dirs["original"]), str(dst)]) == 0
    assert capsys.readouterr().out.strip() == str(dst.resolve())
    assert not is_original_layout(dst) and not [p for p in dst.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    tr = load_qwen3_asr(str(dst), SETTINGS)
    tr.max_new_tokens = N
    native = load_qwen3_asr(str(dirs["native"]), SETTINGS)
    native.max_new_tokens = N
    assert [t.text for t in tr.transcribe(WAVES[:2], language="English")] == [t.text for t in native.transcribe(WAVES[:2], language="English")]
    for args, reason in [([str(tmp_path / "missing"), str(tmp_path / "x")], "does not exist"),
                         ([str(tmp_path), str(tmp_path / "x")], "has no config.json"),
                         ([str(dirs["native"]), str(tmp_path / "x")], "already in transformers' layout"),
                         ([str(dirs["original"]), str(dst)], "exists already")]:
        assert main(["asr", "convert", *args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and reason in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_cast_load_equals_transformers_own(dirs, dtype, monkeypatch):
    """The float32 checkpoint loaded as another dtype goes through _load_model's pread path (block-wise cast): the same
    parameters, tied head and generation config as transformers' from_pretrained, including a tensor cast in several blocks."""
    from transformers import Qwen3ASRForConditionalGeneration

    from pipeline.asr import qwen3, tensor_files

    monkeypatch.setattr(tensor_files, "CAST_CHUNK_BYTES", 1000)  # the embedding (vocab x 32) read in blocks of a few rows
    ours = qwen3._load_model(dirs["native"], dtype)
    theirs = Qwen3ASRForConditionalGeneration.from_pretrained(str(dirs["native"]), dtype=dtype)
    assert ours.dtype == dtype and ours.lm_head.weight is ours.model.language_model.embed_tokens.weight
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()
    assert ours.config.to_dict() == theirs.config.to_dict()

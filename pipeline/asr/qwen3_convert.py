"""Qwen3-ASR checkpoints in the official release's layout (``Qwen/Qwen3-ASR-0.6B``, ``-1.7B`` as published by the Qwen team)
rewritten in the layout transformers' ``Qwen3ASRForConditionalGeneration`` loads.

The two layouts hold the same tensors. The release nests the model config under ``thinker_config`` (``audio_config``,
``text_config``, ``audio_token_id``) and names the weights ``thinker.model.*`` (the Qwen3 decoder), ``thinker.lm_head.*``,
``thinker.audio_tower.*`` (the AuT encoder) with the two-layer projector inside the encoder as ``audio_tower.proj1/proj2``.
transformers keeps ``model.language_model.*``, ``lm_head.*``, ``model.audio_tower.*`` and ``model.multi_modal_projector.linear_1/2``.
The mapping follows the modeling code's parameter names (and agrees with transformers' own conversion script,
``convert_qwen3_asr_to_hf.py``, which is not shipped in the wheel). Tensors are renamed shard by shard, never cast: a
bfloat16 release stays bfloat16.

Beside the weights the conversion writes a processor: the release's tokenizer (with the audio placeholder tokens named),
``Qwen3ASRFeatureExtractor`` with the encoder's ``n_window``, and :data:`CHAT_TEMPLATE`, whose assistant turn lets the
processor prefill ``language <NAME><asr_text>`` to force a language.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# The prompt format of Qwen3-ASR: a system turn (context text, usually empty), a user turn holding one audio placeholder per
# clip, then the assistant turn. The processor's apply_transcription_request renders the assistant turn with
# continue_final_message, so a forced language ("language English<asr_text>") is prefilled and the model writes only the text.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='', audio='') -%}"
    "{%- for m in messages -%}"
    "{%- set parts = [{'type': 'text', 'text': m.content}] if m.content is string else m.content -%}"
    "{%- for c in parts -%}"
    "{%- if m.role == 'system' and c.type == 'text' -%}{%- set ns.system = ns.system + c.text -%}{%- endif -%}"
    "{%- if c.type == 'audio' or 'audio' in c or 'audio_url' in c -%}"
    "{%- set ns.audio = ns.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n<|im_start|>user\\n' + ns.audio + '<|im_end|>\\n' -}}"
    "{%- for m in messages if m.role == 'assistant' -%}"
    "{%- set parts = [{'type': 'text', 'text': m.content}] if m.content is string else m.content -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- for c in parts if c.type == 'text' -%}{{- c.text -}}{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
AUDIO_TOKENS = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}

# release prefix -> transformers prefix, the first match wins (the projector before the rest of the encoder)
RENAMES = (("thinker.audio_tower.proj1.", "model.multi_modal_projector.linear_1."),
           ("thinker.audio_tower.proj2.", "model.multi_modal_projector.linear_2."),
           ("thinker.audio_tower.", "model.audio_tower."),
           ("thinker.model.", "model.language_model."),
           ("thinker.lm_head.", "lm_head."))
MROPE_KEYS = ("mrope_section", "mrope_interleaved", "interleaved")  # audio-only positions are 1-D: M-RoPE reduces to RoPE


def is_original_layout(folder: str | os.PathLike) -> bool:
    """True when ``folder/config.json`` nests the model under ``thinker_config`` (the release layout)."""
    try:
        return "thinker_config" in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def rename_key(key: str) -> str:
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    raise ValueError(f"qwen3-asr convert: unexpected tensor {key!r} (expected names under thinker.model / thinker.lm_head / thinker.audio_tower)")


def native_config(original: dict, tokenizer):
    """The ``Qwen3ASRConfig`` of a release config.json: its thinker's audio/text configs, the token ids from the tokenizer."""
    from transformers import Qwen3ASRConfig

    thinker = original["thinker_config"]
    audio = {k: v for k, v in thinker["audio_config"].items() if k not in ("model_type", "architectures", "max_source_positions")}
    audio["model_type"] = "qwen3_asr_encoder"
    # the encoder's positions restart in every chunk of 2 * n_window mel frames: 13 after three stride-2 convolutions for 100
    frames = 2 * int(audio.get("n_window", 50))
    for _ in range(3):
        frames = (frames - 1) // 2 + 1
    audio["max_position_embeddings"] = frames
    text = {k: v for k, v in thinker["text_config"].items() if k not in ("model_type", "architectures")}
    text["model_type"] = "qwen3"
    for key in ("rope_scaling", "rope_parameters"):
        if isinstance(text.get(key), dict):
            text[key] = {k: v for k, v in text[key].items() if k not in MROPE_KEYS and k != "type"}
    ids = tokenizer.convert_tokens_to_ids
    tie = bool(original.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))
    return Qwen3ASRConfig(audio_config=audio, text_config=text, audio_token_id=int(thinker.get("audio_token_id", ids("<|audio_pad|>"))),
                          pad_token_id=ids("<|endoftext|>"), eos_token_id=[ids("<|endoftext|>"), ids("<|im_end|>")],
                          tie_word_embeddings=tie)


def _weight_files(src: Path) -> tuple[list[Path], dict | None]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [src / name for name in sorted(set(weight_map.values()))], weight_map
    if (src / "model.safetensors").is_file():
        return [src / "model.safetensors"], None
    raise ValueError(f"qwen3-asr convert: {src} has no model.safetensors (or model.safetensors.index.json)")


def _check_names(config, names: set[str]) -> None:
    """Every parameter the model declares is present (a tied lm_head may be absent), and nothing else is."""
    import torch
    from transformers import Qwen3ASRForConditionalGeneration

    with torch.device("meta"):
        expected = set(Qwen3ASRForConditionalGeneration(config).state_dict())
    missing = sorted(expected - names - ({"lm_head.weight"} if config.tie_word_embeddings else set()))
    unexpected = sorted(names - expected)
    if missing or unexpected:
        raise ValueError(f"qwen3-asr convert: the renamed weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _write_weights(files: list[Path], weight_map: dict | None, dst: Path) -> set[str]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    names: set[str] = set()
    new_map = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            tensors = {rename_key(key): f.get_tensor(key) for key in f.keys()}
        save_file(tensors, str(dst / path.name), metadata={"format": "pt"})
        names |= set(tensors)
        new_map.update(dict.fromkeys(tensors, path.name))
    if weight_map is not None:
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": dict(sorted(new_map.items()))}, indent=2))
    return names


def _write_into(src: Path, tmp: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig, Qwen3ASRFeatureExtractor, Qwen3ASRProcessor

    original = json.loads((src / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(src), **AUDIO_TOKENS)
    config = native_config(original, tokenizer)
    files, weight_map = _weight_files(src)
    _check_names(config, _write_weights(files, weight_map, tmp))
    config.save_pretrained(str(tmp))
    # greedy, no sampling; no max_new_tokens: pipeline.asr.qwen3 sizes the budget from the audio length on every call
    GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False).save_pretrained(str(tmp))
    features = Qwen3ASRFeatureExtractor(n_window=config.audio_config.n_window)
    Qwen3ASRProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(str(tmp))


def convert_checkpoint(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> Path:
    """Write the release-layout checkpoint in ``src_dir`` to ``dst_dir`` in transformers' layout (weights, config.json,
    generation_config.json, processor files) and return ``dst_dir``. Atomic: everything is written to a temporary folder beside
    ``dst_dir`` and renamed into place at the end, so ``dst_dir`` is either absent or complete. ``dst_dir`` must not exist yet.
    A ValueError (one line) names what is wrong: no config.json, not the release layout, unexpected or missing tensors."""
    src, dst = Path(src_dir).expanduser().resolve(), Path(dst_dir).expanduser().resolve()
    if not (src / "config.json").is_file():
        raise ValueError(f"qwen3-asr convert: {src} has no config.json: not a model directory")
    if not is_original_layout(src):
        raise ValueError(f"qwen3-asr convert: {src} is not in the release layout (no thinker_config in config.json); transformers loads it as it is")
    if dst.exists():
        raise ValueError(f"qwen3-asr convert: {dst} exists already; remove it or pick another destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        _write_into(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst

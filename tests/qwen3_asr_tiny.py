"""A tiny random Qwen3-ASR of the real classes (not a test file): ``save_tiny_native`` writes the transformers layout
(``Qwen3ASRForConditionalGeneration`` + ``Qwen3ASRProcessor``), ``save_tiny_original`` the same weights in the official
release's layout (config.json with a nested ``thinker_config``, weights under ``thinker.``, the projector as
``audio_tower.proj1/proj2``), for the conversion test.

The tokenizer is a byte-level BPE trained in a blink on a few sentences, carrying the special tokens the processor and its
parser use: ``<|endoftext|>`` (pad), ``<|im_start|>``/``<|im_end|>`` (eos), ``<|audio_start|>``/``<|audio_pad|>``/
``<|audio_end|>`` (special) and ``<asr_text>`` (an added token that is *not* special, as in the real tokenizer, so a decode
with ``skip_special_tokens`` keeps the ``language X<asr_text>`` marker the parser splits on).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.asr.qwen3_convert import AUDIO_TOKENS, CHAT_TEMPLATE

CORPUS = ["language English<asr_text>hello world, this is a small test of speech recognition.",
          "language Chinese<asr_text>the quick brown fox jumps over the lazy dog", "language German<asr_text>guten Tag, wie geht es?"]

# attention windows of 2 s (n_window_infer 200 mel frames) instead of the real 8 s, so a few seconds of test audio span several
AUDIO = dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16, downsample_hidden_size=8,
             n_window=50, n_window_infer=200, max_position_embeddings=13)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=10000.0)


def tiny_tokenizer():
    """A Qwen2Tokenizer (what Qwen3-ASR ships) over a 300-token byte-level BPE plus the Qwen3-ASR special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         extra_special_tokens=AUDIO_TOKENS)
    tok.add_tokens([AddedToken("<|im_start|>", special=True)])
    tok.add_tokens([AddedToken("<asr_text>", special=False)])
    return tok


def tiny_config(tok):
    from transformers import Qwen3ASRConfig

    ids = tok.convert_tokens_to_ids
    return Qwen3ASRConfig(audio_config={**AUDIO, "output_dim": TEXT["hidden_size"]}, text_config={**TEXT, "vocab_size": len(tok)},
                          audio_token_id=ids("<|audio_pad|>"), pad_token_id=ids("<|endoftext|>"),
                          eos_token_id=[ids("<|endoftext|>"), ids("<|im_end|>")], tie_word_embeddings=True)


def save_tiny_native(folder: Path, seed: int = 0) -> Path:
    """Model + processor in the transformers layout (what ``save_pretrained`` writes), float32."""
    from transformers import Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(tiny_config(tok)).eval()
    with torch.no_grad():  # the default init (std 0.02) makes every step pick one token: wider weights vary the greedy picks
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tok, chat_template=CHAT_TEMPLATE).save_pretrained(folder)
    return Path(folder)


def save_tiny_original(native: Path, folder: Path) -> Path:
    """The model in ``native`` rewritten in the official release's layout: config.json with ``thinker_config`` (audio_config
    with ``encoder_attention_heads`` and Whisper's ``max_source_positions``, text_config, audio_token_id), weights renamed
    ``model.language_model.`` -> ``thinker.model.``, ``model.multi_modal_projector.linear_1/2`` -> ``thinker.audio_tower.proj1/2``,
    ``model.audio_tower.`` -> ``thinker.audio_tower.``, ``lm_head.`` -> ``thinker.lm_head.``; tokenizer files copied, the
    processor config and chat template left out (the conversion writes its own)."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((native / "config.json").read_text())
    audio = dict(cfg["audio_config"])
    audio.pop("max_position_embeddings", None)
    audio["max_source_positions"] = 1500
    audio["encoder_attention_heads"] = audio.pop("encoder_attention_heads", audio.pop("num_attention_heads", None))
    text = dict(cfg["text_config"])
    text["rope_scaling"] = {**text.pop("rope_parameters"), "mrope_section": [2, 1, 1], "interleaved": True, "type": "default"}
    original = {"architectures": ["Qwen3ASRForConditionalGeneration"], "model_type": "qwen3_asr", "support_languages": ["English", "Chinese"],
                "thinker_config": {"audio_config": audio, "text_config": text, "audio_token_id": cfg["audio_token_id"],
                                   "initializer_range": 0.02, "model_type": "qwen3_asr_thinker"}}
    (folder / "config.json").write_text(json.dumps(original, indent=2))
    renames = [("model.language_model.", "thinker.model."), ("model.multi_modal_projector.linear_1.", "thinker.audio_tower.proj1."),
               ("model.multi_modal_projector.linear_2.", "thinker.audio_tower.proj2."), ("model.audio_tower.", "thinker.audio_tower."),
               ("lm_head.", "thinker.lm_head.")]
    state = load_file(str(native / "model.safetensors"))
    if "lm_head.weight" not in state:  # tied: the release stores it anyway
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    renamed = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value.clone().contiguous()
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "tokenizer.json").write_bytes((native / "tokenizer.json").read_bytes())
    tok_cfg = {k: v for k, v in json.loads((native / "tokenizer_config.json").read_text()).items() if k not in AUDIO_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))  # the conversion names the audio tokens itself
    return folder

"""The Qwen3-ASR backend: transformers' ``Qwen3ASRForConditionalGeneration`` (AuT audio encoder, projector, Qwen3 decoder) and
``Qwen3ASRProcessor``, greedy decoding, as a :class:`~pipeline.asr.base.Transcriber`.

Loading: a local directory in either checkpoint layout (transformers' own, or the official release's with ``thinker_config``,
converted once by :mod:`pipeline.asr.qwen3_convert` into a cache under ``$CLOUDTUNE_HOME/models/qwen3-asr/``), or a hub id
when the name is not a local path. ``device`` auto|cpu|cuda; ``dtype`` auto is float32 on the CPU (transformers 5 would load
the bfloat16 weights as they are) and bfloat16 on CUDA.

Four things the plain ``processor(...)`` + ``model.generate(...)`` recipe gets wrong, and what this module does instead:

- **Token budget.** ``generate`` stops at 512 new tokens unless told otherwise and cuts long speech silently. Each clip gets
  ``tokens_per_second x seconds + min_new_tokens`` (``qwen3_asr`` settings; ``max_new_tokens`` overrides), enforced per clip.
- **No 30 s cut.** The feature extractor pads/truncates to 30 s when called on its own defaults; here it is called with
  ``padding="longest"`` and no truncation. The encoder itself takes any length: it convolves 1 s chunks (``2 x n_window``
  mel frames) and attends within windows of ``n_window_infer`` frames (8 s), so a 5 min piece needs no splitting here.
- **Mixed-length batches.** A batched feature extractor call pads the short clip's *waveform* with zeros before the log-mel,
  so its last encoder chunk sees log-mel floor values where a one-clip call sees zero padding, and the STFT edge differs: the
  short clip's text changes with its batch mates. Here every clip's features come from its own processor call, and only the
  results are padded (mel frames with zeros and a zero mask, which the encoder drops; prompts on the left, with an attention
  mask, positions from the mask). A clip's text is then the same alone or in a batch.
- **Loops.** On noise the decoder can repeat a phrase until the budget is spent. The repetition guard (``repetition_guard``
  N > 0) stops a clip whose generated tail is one loop of p tokens repeated three times or more with the repeats covering at
  least N tokens (p = 1 needs N + 1 equal tokens; a phrase said twice never trips it), and trims the repeats, keeping one
  copy. 0 turns it off. It replaces the processor parser's own fix-up (``_detect_and_fix_repetitions``, which collapses
  20-fold repeats after the fact and would rewrite text already streamed).

The transcript is what follows ``<asr_text>`` (the model writes ``language <NAME><asr_text>text`` when it detects the language;
a forced language is prefilled so it writes the text only); the language is the one forced or the one the model named.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import paths
from pipeline.asr.base import Transcript
from pipeline.asr.qwen3_convert import convert_checkpoint, is_original_layout
from pipeline.asr.tensor_files import FLOAT_KINDS, CastSlice, tensor_places, weight_files
from pipeline.devices import resolve_device, resolve_dtype
from pipeline.errors import one_line

if TYPE_CHECKING:
    import torch

    from pipeline.config.asr_settings import Qwen3AsrSettings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_BATCH = 4
MARKER = "<asr_text>"
MAX_LOOP = 64  # longest loop (in tokens) the repetition guard looks for
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --- the repetition guard ---------------------------------------------------------------------------------------------


def repeat_runs(ids: Sequence[int], max_loop: int = MAX_LOOP) -> dict[int, int]:
    """For each loop length p: how many tokens at the end of ``ids`` equal the token p places before them."""
    runs = {}
    for p in range(1, min(max_loop, len(ids) - 1) + 1):
        run = 0
        while run < len(ids) - p and ids[-1 - run] == ids[-1 - run - p]:
            run += 1
        if run:
            runs[p] = run
    return runs


def loop_cut(ids: Sequence[int], guard: int) -> int | None:
    """Where to cut ``ids`` when its tail is a loop (p tokens, three copies or more, the repeats covering >= ``guard`` tokens):
    the length that keeps one copy. None when there is no such loop or ``guard`` is 0."""
    if guard <= 0:
        return None
    loops = [run for p, run in repeat_runs(ids).items() if run >= max(guard, 2 * p)]
    return len(ids) - max(loops) if loops else None


# --- loading ----------------------------------------------------------------------------------------------------------


def _local_dir(model: str) -> Path | None:
    """The local directory ``model`` names, None for a hub id; a ValueError when it looks like a path that is not there."""
    path = Path(model).expanduser()
    if path.exists() or not HUB_ID.match(model) or model.startswith((".", "~")):
        if not path.is_dir():
            raise ValueError(f"qwen3-asr: model directory {model!r} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"qwen3-asr: {model!r} has no config.json: not a Qwen3-ASR model directory")
        return path.resolve()
    return None


def _native_dir(folder: Path) -> Path:
    """``folder`` itself in transformers' layout, or its converted copy in the cache :func:`pipeline.paths.asr_model_cache`
    (``$CLOUDTUNE_HOME/models/qwen3-asr/<name>-<hash>``), converted on the first load and reused by every later one. The model
    folder itself is never written to, so a read-only or shared folder (a hub snapshot) works the same; the conversion is
    atomic, and a load that loses a race with another process converting the same checkpoint uses that process's copy."""
    if not is_original_layout(folder):
        return folder
    cached = paths.asr_model_cache(folder)
    if (cached / "config.json").is_file():
        return cached
    log.info("qwen3-asr: %s is in the release layout (thinker_config); converting it to %s (once)", folder, cached)
    try:
        return convert_checkpoint(folder, cached)
    except (OSError, ValueError):
        if (cached / "config.json").is_file():  # another process converted it meanwhile (its rename won, ours failed)
            return cached
        raise


def _hub_dir(model: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # offline, unknown id, gated: one line for the caller
        raise ValueError(f"qwen3-asr: {model!r} is not a local directory and cannot be fetched from the hub: {one_line(exc)[:300]}") from None


def _load_model(folder: Path, dtype: torch.dtype) -> Any:
    """``Qwen3ASRForConditionalGeneration`` of a transformers-layout ``folder`` in ``dtype``, at a peak memory of about the
    loaded weights (bench/asr_load_memory.py).

    transformers 5 builds the model on the meta device (no random initialization) and memory-maps the safetensors files. When
    the checkpoint already holds ``dtype``, its tensors are used in place (no copy; the pages load as they are used, shared
    with the page cache), and that path is kept. When they must be cast (the bfloat16 release loaded as float32 on the CPU),
    transformers copies every tensor out of the map and casts it, and the mapped pages it touched stay in the process's RSS
    until the files are closed at the end: the peak is the float32 weights plus the whole checkpoint file (0.6B: 2.9 + 1.5 GiB),
    and each large tensor also passes through a whole copy in the file's dtype. Then this function hands the same
    ``from_pretrained`` a state dict of :class:`CastSlice`, each tensor read with ``pread`` at the offset the file's header
    gives (the file's pages stay in the OS page cache, outside the process) and cast block by block into its final tensor."""
    import contextlib

    import torch
    from safetensors import safe_open
    from transformers import GenerationConfig, Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    files = weight_files(folder)
    if not files:  # not safetensors (pytorch_model.bin): transformers' own loading
        return Qwen3ASRForConditionalGeneration.from_pretrained(str(folder), dtype=dtype)
    places = {path: tensor_places(path) for path in files}
    stored = {FLOAT_KINDS.get(kind) for tensors in places.values() for kind, _, _ in tensors.values()} - {None}
    if stored <= {str(dtype).removeprefix("torch.")}:  # nothing to cast: transformers' zero-copy memory map
        return Qwen3ASRForConditionalGeneration.from_pretrained(str(folder), dtype=dtype)
    with contextlib.ExitStack() as stack:
        state: dict[str, Any] = {}
        for path, tensors in places.items():
            fd = os.open(path, os.O_RDONLY)
            stack.callback(os.close, fd)
            handle = stack.enter_context(safe_open(str(path), framework="pt", backend="pread"))  # for tensors other than floats
            for key, (kind, shape, offset) in tensors.items():
                state[key] = (CastSlice(fd, offset, shape, getattr(torch, FLOAT_KINDS[kind]), dtype) if kind in FLOAT_KINDS
                              else handle.get_slice(key))
        net = Qwen3ASRForConditionalGeneration.from_pretrained(None, config=Qwen3ASRConfig.from_pretrained(str(folder)), state_dict=state,
                                                               dtype=dtype)
    net.config.name_or_path = str(folder)  # what from_pretrained(folder) records; the rest of the loading is the same
    if (folder / "generation_config.json").is_file():
        net.generation_config = GenerationConfig.from_pretrained(str(folder))
    return net


def _float32_convolutions(net: Any, dtype: torch.dtype) -> int:
    """On the CPU with bfloat16 or float16 activations, run every convolution (the audio encoder's 2-d stack over the log-mel)
    in float32: its weights cast once (a few MiB), the input cast up and the output back to ``dtype``. Without native
    bfloat16 (AVX2) PyTorch takes its slow reference path for a bfloat16 convolution: 13.0 s against 0.39 s in float32 for one
    480-channel layer over a 10 s clip, two thirds of a transcription's time (docs/asr.md). Returns the layers changed."""
    import torch
    from torch import nn

    if dtype not in (torch.bfloat16, torch.float16):
        return 0
    convolutions = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    for conv in convolutions:
        conv.float()
        conv.register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))
        conv.register_forward_hook(lambda module, args, out: out.to(dtype))
    return len(convolutions)


def _encode_by_window(encoder: Any) -> None:
    """Make ``encoder`` (the model's AuT audio tower) run each clip's features one attention window (``n_window_infer`` mel
    frames, 8 s) at a time, and concatenate the results: the same output, since its convolutions see one 1 s chunk at a
    time, its positions restart in each chunk and its attention stays within a window. transformers runs the convolution stack
    over all the chunks of the batch at once: 480 channels x 64 x 50 per 1 s chunk, twice (the convolution and its GELU),
    about 6 MiB per second of audio in bfloat16 and 12 in float32, so a 5 min clip (``asr.window_s``) needed 1.9 GiB more
    in bfloat16 (bench/asr_memory.py) for this first layer alone; by window, 8 chunks at a time, 50 MiB. A clip's features
    are now the same alone or in a batch, to the bit; against transformers' whole-batch forward they differ by float rounding
    (up to 1e-6 in float32: a matrix product over fewer rows may sum in another order), as its own batch and one-clip
    results already did."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    chunk = 2 * encoder.n_window
    window = encoder.n_window_infer // chunk * chunk
    forward = encoder.forward
    if window <= 0 or encoder.n_window_infer % chunk:  # windows that are not whole chunks: transformers' own way
        return

    def by_window(input_features: torch.Tensor, input_features_mask: torch.Tensor, **kwargs: Any) -> Any:
        import torch

        pieces = []
        for row in range(input_features.shape[0]):  # the packed output holds each clip's tokens in turn
            valid = int(input_features_mask[row].sum())  # the mel frames of a clip come first, its padding after them
            end = min(-(-valid // chunk) * chunk, input_features.shape[2])  # up to its last chunk: the same alone or in a batch
            for start in range(0, valid, window):
                stop = min(start + window, end)
                out = forward(input_features=input_features[row:row + 1, :, start:stop].contiguous(),
                              input_features_mask=input_features_mask[row:row + 1, start:stop].contiguous(), **kwargs)
                pieces.append(out[0])
        return BaseModelOutputWithPooling(last_hidden_state=torch.cat(pieces))

    encoder.forward = by_window


def _compute_dtype(dtype: str, quantize: str, device: str) -> torch.dtype:
    """``qwen3_asr.dtype`` resolved: auto is float32 on the CPU and bfloat16 on CUDA, and bfloat16 everywhere with int8 weights,
    whose CPU kernel takes bfloat16 activations (its float32 path is 25x slower: pipeline/asr/int8.py)."""
    import torch

    if quantize == "int8":
        if dtype == "auto":
            return torch.bfloat16
        if device == "cpu" and dtype != "bfloat16":
            raise ValueError(f"qwen3_asr.quantize int8 runs bfloat16 activations on the CPU: set qwen3_asr.dtype to auto or bfloat16, not {dtype}")
    elif quantize != "none":
        raise ValueError(f"qwen3_asr.quantize {quantize!r}: expected none or int8")
    return resolve_dtype(dtype, device, "qwen3_asr.dtype", cpu_bfloat16=False)


def load_qwen3_asr(model: str, settings: Qwen3AsrSettings, device: str | None = None, dtype: str | None = None,
                   quantize: str | None = None) -> Qwen3AsrTranscriber:
    """The Qwen3-ASR transcriber of ``model`` (a local directory in either layout, or a hub id), on ``device`` in ``dtype``
    with ``quantize`` none|int8 weights (None: ``settings.device`` / ``.dtype`` / ``.quantize``). A ValueError with a one-line
    reason when it cannot be loaded."""
    from transformers import Qwen3ASRProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not model:
        raise ValueError("qwen3-asr: no model given: set qwen3_asr.model to a local directory or hub id")
    device_name = resolve_device(device or settings.device)
    quantize = quantize or settings.quantize
    torch_dtype = _compute_dtype(dtype or settings.dtype, quantize, device_name)
    local = _local_dir(model)
    folder = _native_dir(local if local is not None else _hub_dir(model))
    t0 = time.perf_counter()
    try:
        processor = Qwen3ASRProcessor.from_pretrained(str(folder))
        net = _load_model(folder, torch_dtype)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"qwen3-asr: cannot load a model from {model!r}: {one_line(exc)[:300]}") from None
    weights = ""
    if quantize == "int8":
        from pipeline.asr.int8 import quantize_linears

        weights = ", " + quantize_linears(net, folder, torch_dtype, paths.asr_int8_cache(folder, str(torch_dtype).removeprefix("torch.")))
    net.to(device_name).eval()
    if device_name == "cpu":
        _float32_convolutions(net, torch_dtype)
    _encode_by_window(net.model.audio_tower)
    log.info("qwen3-asr: %s on %s (%s%s) loaded in %.2f s", folder, device_name, str(torch_dtype).removeprefix("torch."), weights, time.perf_counter() - t0)
    return Qwen3AsrTranscriber(net, processor, model_id=model, settings=settings)


# --- transcription ----------------------------------------------------------------------------------------------------


class _PerClipStop:
    """A generate() StoppingCriteria marking each row done at its own token budget, on a loop (the repetition guard), or when
    ``cancel`` is set (a stream whose reader went away)."""

    def __init__(self, prompt_len: int, budgets: list[int], guard: int, eos: set[int], cancel: threading.Event | None = None):
        self.prompt_len, self.budgets, self.guard, self.eos, self.cancel = prompt_len, budgets, guard, eos, cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        done = []
        for row, budget in zip(input_ids[:, self.prompt_len:].tolist(), self.budgets, strict=True):
            ids = _until_eos(row, self.eos)
            done.append(len(ids) >= budget or len(ids) < len(row) or loop_cut(ids, self.guard) is not None)
        stop = torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        return stop | bool(self.cancel is not None and self.cancel.is_set())


class _TokenQueue:
    """A generate() streamer handing each new token of the one row to a queue (the prompt, sent first, is skipped)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.queue.put(int(value.reshape(-1)[0]))

    def end(self) -> None:
        self.queue.put(None)


def _until_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(ids):
        if token in eos:
            return ids[:i]
    return ids


class Qwen3AsrTranscriber:
    """:class:`~pipeline.asr.base.Transcriber` over a loaded model and processor. ``max_new_tokens`` (None: the settings'
    ``max_new_tokens``, and when that is null too, from the audio length) fixes every clip's budget (`--max-new-tokens`)."""

    name = "qwen3-asr"
    sample_rate = SAMPLE_RATE
    max_batch = MAX_BATCH

    def __init__(self, model: Any, processor: Any, model_id: str, settings: Qwen3AsrSettings, max_new_tokens: int | None = None):
        self.model, self.processor, self.model_id = model, processor, model_id
        self.tokens_per_second, self.min_new_tokens = settings.tokens_per_second, settings.min_new_tokens
        self.repetition_guard = settings.repetition_guard
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else settings.max_new_tokens
        self.last_new_tokens: list[int] = []  # tokens each clip of the last transcribe() kept (the benchmark reports them)
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {self.pad_id}

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def budget(self, seconds: float) -> int:
        """New tokens a clip of ``seconds`` may use: ``tokens_per_second x seconds + min_new_tokens`` (or ``max_new_tokens``)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return math.ceil(self.tokens_per_second * seconds) + self.min_new_tokens

    def language_name(self, language: str | None) -> str | None:
        """The name the prompt uses for a forced language (``en`` -> ``English``); a one-line ValueError for one the processor
        does not know."""
        if language is None:
            return None
        from transformers.audio_utils import prepare_language_inputs
        from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

        try:
            return prepare_language_inputs(language, 1, LANGUAGE_CODE_TO_NAME, return_code=False)[0]
        except ValueError:
            raise ValueError(f"qwen3-asr: cannot force language {language!r}: expected one of {', '.join(sorted(LANGUAGE_CODE_TO_NAME.values()))}") from None

    def inputs(self, waves: Sequence[np.ndarray], language: str | None = None) -> dict[str, torch.Tensor]:
        """The model inputs of a batch, every clip prepared alone by the processor (its prompt with the forced language, its
        log-mel features untruncated), then padded together: prompts on the left, mel frames on the right (mask 0)."""
        import torch

        prompts = self.processor.apply_transcription_request(audio=[w for w in waves], language=language, tokenize=False)
        singles = [self.processor(text=[p], audio=[np.asarray(w, np.float32)], sampling_rate=SAMPLE_RATE, truncation=False)
                   for p, w in zip(prompts, waves, strict=True)]
        width = max(s["input_ids"].shape[1] for s in singles)
        frames = max(s["input_features"].shape[2] for s in singles)
        batch = len(singles)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        feats = torch.zeros((batch, singles[0]["input_features"].shape[1], frames), dtype=torch.float32)
        feat_mask = torch.zeros((batch, frames), dtype=torch.long)
        for i, s in enumerate(singles):
            n, t = s["input_ids"].shape[1], s["input_features"].shape[2]
            ids[i, width - n:], mask[i, width - n:] = s["input_ids"][0], s["attention_mask"][0]
            feats[i, :, :t], feat_mask[i, :t] = s["input_features"][0], s["input_features_mask"][0]
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "input_features": feats.to(self.device, self.dtype), "input_features_mask": feat_mask.to(self.device)}

    def _generate(self, inputs: dict, budgets: list[int], streamer: Any = None, cancel: threading.Event | None = None) -> torch.Tensor:
        import torch
        from transformers import StoppingCriteriaList

        stop = _PerClipStop(inputs["input_ids"].shape[1], budgets, self.repetition_guard, self.eos, cancel)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max(budgets), do_sample=False, num_beams=1, pad_token_id=self.pad_id,
                                      stopping_criteria=StoppingCriteriaList([stop]), streamer=streamer)
        return out[:, inputs["input_ids"].shape[1]:]

    def tokens(self, row: list[int], budget: int) -> list[int]:
        """A clip's generated tokens: up to its end-of-text, within its budget, a loop's repeats trimmed."""
        ids = _until_eos(row, self.eos)[:budget]
        cut = loop_cut(ids, self.repetition_guard)
        return ids[:cut] if cut is not None else ids

    def parse(self, ids: list[int], language: str | None) -> tuple[str, str | None]:
        """(text, language) of generated tokens: the text after ``<asr_text>`` (all of it when there is no marker), the
        language forced or the one the model named before the marker (the processor's parser reads it)."""
        raw = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        if language is not None:
            return raw.strip(), language
        if MARKER not in raw:
            return raw.strip(), None
        named = self.processor.parse_output(raw.split(MARKER, 1)[0] + MARKER)["language"]
        return raw.split(MARKER, 1)[1].strip(), named

    def transcribe(self, waves: Sequence[np.ndarray], language: str | None = None) -> list[Transcript]:
        if not 1 <= len(waves) <= self.max_batch:
            raise ValueError(f"qwen3-asr: {len(waves)} clips in one call; expected 1 to {self.max_batch}")
        t0 = time.perf_counter()
        language = self.language_name(language)
        seconds = [len(w) / SAMPLE_RATE for w in waves]
        budgets = [self.budget(s) for s in seconds]
        out = self._generate(self.inputs(waves, language), budgets).tolist()
        elapsed = (time.perf_counter() - t0) / len(waves)  # the batch's wall time, shared evenly
        results, self.last_new_tokens = [], []
        for row, budget, secs in zip(out, budgets, seconds, strict=True):
            kept = self.tokens(row, budget)
            self.last_new_tokens.append(len(kept))
            text, lang = self.parse(kept, language)
            results.append(Transcript(text=text, language=lang, duration_s=secs, seconds=elapsed))
        return results

    def stream(self, wave: np.ndarray, language: str | None = None) -> Iterator[str]:
        """The text of one wave as generate() produces it. A piece is given out once no later step can change it: text before
        ``<asr_text>`` (the language tag) is held, so is trailing whitespace or a half UTF-8 character, and so are tokens that
        repeat the ones before them (the repetition guard may trim them). The pieces join to ``transcribe([wave])[0].text``."""
        language = self.language_name(language)
        budget = self.budget(len(wave) / SAMPLE_RATE)
        inputs = self.inputs([wave], language)
        streamer, cancel, failure = _TokenQueue(), threading.Event(), []

        def run():
            try:
                self._generate(inputs, [budget], streamer=streamer, cancel=cancel)
            except BaseException as exc:  # handed to the reader
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="qwen3-asr-stream", daemon=True)
        worker.start()
        ids: list[int] = []
        sent = ""
        try:
            while (token := streamer.queue.get()) is not None:
                ids.append(token)
                settled = _until_eos(ids, self.eos)[:budget]
                held = max(repeat_runs(settled).values(), default=0) if self.repetition_guard > 0 else 0
                piece = self._settled_text(settled[:len(settled) - held], language)
                if piece is not None and piece.startswith(sent) and len(piece) > len(sent):
                    yield piece[len(sent):]
                    sent = piece
            worker.join()
            if failure:
                raise failure[0]
            final, _ = self.parse(self.tokens(ids, budget), language)
            if not final.startswith(sent):  # cannot happen by construction; say so rather than give a wrong join
                raise RuntimeError(f"qwen3-asr: streamed text {sent!r} is not a prefix of the transcript {final!r}")
            if len(final) > len(sent):
                yield final[len(sent):]
        finally:
            cancel.set()

    def _settled_text(self, ids: list[int], language: str | None) -> str | None:
        """The text of a prefix of the tokens that later tokens cannot change, or None while the language tag is pending."""
        raw = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        if language is None:
            if MARKER not in raw:
                return None
            raw = raw.split(MARKER, 1)[1]
        return raw.lstrip().rstrip().rstrip("\ufffd").rstrip()

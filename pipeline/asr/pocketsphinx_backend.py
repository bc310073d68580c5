"""The offline baseline: CMU PocketSphinx with the US English acoustic model, dictionary and language model that ship
inside its PyPI package (or your own, from configs/asr.yaml ``pocketsphinx``). CPU only, English only, no weights to fetch.

A wave is decoded as the utterances PocketSphinx's endpointing rule (its voice activity detector over a window, see
:func:`utterances`) finds in it, each decoded whole (``full_utt``): shorter utterances decode faster and better than one
long one. :meth:`stream` yields each utterance's
words as soon as it ends, and :meth:`transcribe` is the same decode, so their texts agree word for word.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
from pocketsphinx import Config, Decoder, Vad

from pipeline.asr.base import Transcript
from pipeline.config import PocketsphinxSettings

LANGUAGE = "English"
ENGLISH_NAMES = {"english", "en", "en-us", "eng"}
# Digital silence (runs of exact zeros, as synthesized or trimmed audio has) gives log-energy frames of -inf that wreck the
# cepstral normalization: "the children are playing in the park" came out as "the c o p the bar". A fixed noise floor at
# -80 dBFS, what any recording has anyway, fixes it; its seed is fixed so a wave always decodes to the same text.
NOISE_FLOOR_RMS = 1e-4


class PocketsphinxTranscriber:
    """A :class:`~pipeline.asr.base.Transcriber` over one PocketSphinx decoder (not thread-safe; one per process)."""

    name = "pocketsphinx"
    sample_rate = 16000  # the bundled acoustic model's rate
    max_batch = 4  # no batched decode: pieces run one after another; 4 = asr.batch_size's limit, so any batch is taken

    def __init__(self, settings: PocketsphinxSettings):
        overrides = {key: value for key, value in (("hmm", settings.hmm), ("lm", settings.lm), ("dict", settings.dict)) if value}
        self.model_id = "pocketsphinx-en-us (bundled)" if not overrides else "pocketsphinx " + " ".join(f"{k}={v}" for k, v in overrides.items())
        config = Config(logfn="/dev/null", samprate=self.sample_rate, **overrides)
        self.decoder = Decoder(config)
        # Cepstral mean normalization is estimated live and carried from one utterance to the next; each wave starts from the
        # initial estimate, so a wave's text does not depend on what was decoded before it (batched == one at a time).
        self._initial_cmn = self.decoder.get_cmn()

    @staticmethod
    def check_language(language: str | None) -> None:
        """None or English; any other forced language is a ValueError (the bundled model knows US English only)."""
        if language is not None and language.strip().lower() not in ENGLISH_NAMES:
            raise ValueError(f"pocketsphinx: knows only English (its en-us model), cannot transcribe language {language!r}; use --backend qwen3-asr")

    def transcribe(self, waves: Sequence[np.ndarray], language: str | None = None) -> list[Transcript]:
        self.check_language(language)
        out = []
        for wave in waves:
            t0 = time.perf_counter()
            text = "".join(self._decode(wave))
            out.append(Transcript(text, LANGUAGE, wave.shape[0] / self.sample_rate, time.perf_counter() - t0))
        return out

    def stream(self, wave: np.ndarray, language: str | None = None) -> Iterator[str]:
        """Words as each utterance is decoded: the first word as is, every later one with one leading space, so the pieces
        joined with ``""`` are exactly ``transcribe([wave])[0].text`` (words separated by single spaces, none at the ends)."""
        self.check_language(language)
        yield from self._decode(wave)

    def _decode(self, wave: np.ndarray) -> Iterator[str]:
        wave = np.asarray(wave, dtype=np.float32) + np.random.default_rng(0).normal(0.0, NOISE_FLOOR_RMS, wave.shape[0]).astype(np.float32)
        pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
        self.decoder.set_cmn(self._initial_cmn)
        first = True
        for utterance in utterances(pcm, self.sample_rate):
            for word in self._decode_utterance(utterance.tobytes()):
                yield word if first else " " + word
                first = False

    def _decode_utterance(self, pcm: bytes) -> list[str]:
        """One utterance decoded whole: ``full_utt`` normalizes its cepstra over the utterance itself (not a running estimate)."""
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.split() if hyp is not None else []


def utterances(pcm: np.ndarray, sample_rate: int, window_s: float = 0.3, ratio: float = 0.9) -> Iterator[np.ndarray]:
    """The speech stretches of 16-bit ``pcm``, as pocketsphinx's ``Endpointer`` (window 0.3 s, ratio 0.9, a LOOSE VAD) cuts
    them, frame for frame: an utterance starts at the oldest frame of a window with more than ``ratio`` of it speech and ends
    with the frame that leaves the window without any; one still open at the end takes the queued speech frames and, if
    they all are, the tail shorter than a frame. Ours because each ``Endpointer`` object leaks about 20 KB (5000 of them:
    +101 MB; 5000 ``Vad`` objects: +0) and one reused across waves keeps queued frames and VAD state from the last wave."""
    vad = Vad(mode=Vad.LOOSE, sample_rate=sample_rate)
    n = vad.frame_bytes // 2
    window = int(window_s / vad.frame_length + 0.5)
    start_above, end_below = int(ratio * window), int((1 - ratio) * window + 0.5)
    frames = len(pcm) // n
    speech = [vad.is_speech(pcm[i * n:(i + 1) * n].tobytes()) for i in range(frames)]
    head, in_speech, start = 0, False, 0  # the window: frames head..i (head moves on once a frame leaves it or is emitted)
    for i in range(frames):
        head = max(head, i + 1 - window)
        count = sum(speech[head:i + 1])
        if in_speech and count < end_below:
            yield pcm[start * n:(head + 1) * n]
            head, in_speech = head + 1, False
            continue
        if not in_speech and count > start_above:
            in_speech, start = True, head
        if in_speech:
            head += 1
    if in_speech:
        end = head
        while end < frames and speech[end]:
            end += 1
        yield pcm[start * n:end * n if end < frames else len(pcm)]

"""Scoring transcripts against references: the text normalization, WER and CER (jiwer's edit counts), per file and per corpus.

Normalization (configs/asr.yaml ``asr_eval.normalize``, docs/asr.md "Evaluation"):

- ``basic``: Unicode NFKC; lower case; the typographic apostrophe (U+2019) written as ``'``; every punctuation character
  (Unicode category P*) replaced by a space, except an apostrophe between two letters or digits (``don't`` stays, ``'quoted'``
  becomes ``quoted``); whitespace collapsed to single spaces and stripped. Symbols (``$``, ``%``, ``+``) and digits stay.
- ``none``: the texts as written (only whitespace collapsed: it separates the words).

WER counts word edits (substitutions + deletions + insertions) over the reference's words. CER counts character edits over
the reference's characters with the spaces left out, so that a script written without spaces (Chinese, Japanese, Thai) is not
scored on where punctuation stood. The corpus figures sum the edits of every file over the sum of their reference lengths
(a long file weighs by its length), which is not the mean of the per-file rates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import jiwer

NORMALIZERS = ("basic", "none")
_APOSTROPHE = "'"
_SPACES = re.compile(r"\s+")


def normalize(text: str, mode: str = "basic") -> str:
    """``text`` as it is scored under ``mode`` (``basic`` or ``none``; see the module docstring)."""
    if mode not in NORMALIZERS:
        raise ValueError(f"normalize {mode!r}: expected one of {', '.join(NORMALIZERS)}")
    if mode == "basic":
        text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", _APOSTROPHE)
        text = "".join(_keep_or_space(text, i) for i in range(len(text)))
    return _SPACES.sub(" ", text).strip()


def _keep_or_space(text: str, i: int) -> str:
    ch = text[i]
    if not unicodedata.category(ch).startswith("P"):
        return ch
    inside_word = ch == _APOSTROPHE and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
    return ch if inside_word else " "


@dataclass(frozen=True)
class Score:
    """One file's edit counts against its reference (both normalized): ``word_edits`` over ``words`` reference words,
    ``char_edits`` over ``chars`` reference characters (spaces left out)."""

    word_edits: int
    words: int
    char_edits: int
    chars: int

    @property
    def wer(self) -> float | None:
        """Word error rate; None when the reference has no words (nothing to divide by)."""
        return self.word_edits / self.words if self.words else None

    @property
    def cer(self) -> float | None:
        return self.char_edits / self.chars if self.chars else None


def score(reference: str, hypothesis: str, mode: str = "basic") -> Score:
    """Edit counts of ``hypothesis`` against ``reference`` after normalizing both with ``mode``."""
    ref, hyp = normalize(reference, mode), normalize(hypothesis, mode)
    word_edits, words = _edits(ref, hyp, jiwer.process_words)
    char_edits, chars = _edits(ref.replace(" ", ""), hyp.replace(" ", ""), jiwer.process_characters)
    return Score(word_edits, words, char_edits, chars)


def _edits(ref: str, hyp: str, process) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) in jiwer's units (words or characters)."""
    if not ref:  # jiwer has no reference length to divide by: every hypothesis unit is an insertion
        return len(hyp.split()) if process is jiwer.process_words else len(hyp), 0
    out = process(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


@dataclass(frozen=True)
class Corpus(Score):
    """Corpus-level figures of ``files`` files: the sums of their edits over the sums of their reference lengths (not a mean
    of per-file rates)."""

    files: int = 0


def corpus(scores: Iterable[Score]) -> Corpus:
    scores = list(scores)
    return Corpus(sum(s.word_edits for s in scores), sum(s.words for s in scores), sum(s.char_edits for s in scores),
                  sum(s.chars for s in scores), files=len(scores))


def headline_metric(language: str | None, cer_languages: Iterable[str]) -> str:
    """``"cer"`` for a language of ``cer_languages`` (asr_eval.cer_languages; compared without case), else ``"wer"``."""
    return "cer" if language and language.casefold() in {x.casefold() for x in cer_languages} else "wer"

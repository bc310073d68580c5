"""ASR evaluation (`cloudtune asr eval`): normalization, WER/CER, the manifest, asr_results on SQLite and PostgreSQL, the report
SQL, the HTML report, and the whole command on espeak-ng speech through the real pocketsphinx backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.asr import scoring
from pipeline.asr.manifest import ManifestError, read_manifest

# --- normalization and scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, basic", [
    ("  Hello,   World!  ", "hello world"),
    ("Don\u2019t stop: it's 'quoted' in the dogs' house.", "don't stop it's quoted in the dogs house"),
    ("well-known \u201cquotes\u201d (and) [brackets]", "well known quotes and brackets"),
    ("\uff21\uff22\uff23 \u2460 \ufb01ne", "abc 1 fine"),  # NFKC: fullwidth letters, circled digit, the fi ligature
    ("Price: $5 + 10%", "price $5 + 10"),  # symbols stay, punctuation goes
    ("\u4f60\u597d\uff0c\u4e16\u754c\u3002", "\u4f60\u597d \u4e16\u754c"),
])
def test_basic_normalization(text, basic):
    assert scoring.normalize(text, "basic") == basic


def test_none_normalization_only_collapses_whitespace():
    assert scoring.normalize("  Hello,\t World! ", "none") == "Hello, World!"
    with pytest.raises(ValueError, match="normalize 'lower': expected one of basic, none"):
        scoring.normalize("x", "lower")


def test_wer_and_cer_on_known_strings():
    s = scoring.score("The cat sat on the mat.", "the cat sat on a mat")
    # words: one substitution (the -> a) of 6; characters without spaces: "the" -> "a" is 3 edits of 17
    assert (s.word_edits, s.words, s.char_edits, s.chars) == (1, 6, 3, 17)
    assert s.wer == pytest.approx(1 / 6) and s.cer == pytest.approx(3 / 17)
    s = scoring.score("one two three", "one three four five")  # deletion of two, insertions of four and five
    assert (s.word_edits, s.words, s.wer) == (3, 3, 1.0)
    assert scoring.score("Hello, world!", "hello world").wer == 0.0
    assert scoring.score("Hello, world!", "hello world", mode="none").wer == 1.0  # "Hello," and "world!" are other words
    assert scoring.score("hello", "").wer == 1.0


def test_cer_leaves_spaces_out():
    s = scoring.score("\u4f60\u597d\uff0c\u4e16\u754c", "\u4f60\u597d\u4e16\u754c")  # the comma became a space: no character error
    assert (s.cer, s.wer) == (0.0, 1.0)
    s = scoring.score("\u4f60\u597d\u4e16\u754c", "\u4f60\u4e16\u754c\u554a")
    assert (s.char_edits, s.chars) == (2, 4)


def test_corpus_sums_edits_and_is_not_the_mean_of_file_rates():
    short = scoring.score("yes", "no")  # 1 of 1 word wrong
    long = scoring.score("a b c d e f g h i j", "a b c d e f g h i j")  # 0 of 10
    c = scoring.corpus([short, long])
    assert (c.files, c.word_edits, c.words) == (2, 1, 11)
    assert c.wer == pytest.approx(1 / 11)
    assert c.wer != pytest.approx((short.wer + long.wer) / 2)  # 0.5
    assert scoring.corpus([]).wer is None


def test_headline_metric_by_language():
    langs = ("Chinese", "Japanese")
    assert scoring.headline_metric("chinese", langs) == "cer"
    assert scoring.headline_metric("English", langs) == "wer"
    assert scoring.headline_metric(None, langs) == "wer"


# --- manifest --------------------------------------------------------------------------------------------


def test_manifest_resolves_relative_paths_against_its_folder(tmp_path):
    (tmp_path / "set").mkdir()
    manifest = tmp_path / "set" / "eval.tsv"
    manifest.write_text("a.wav\tHello there.\n\n/abs/b.flac\t\u4f60\u597d\tChinese\n")
    entries = read_manifest(manifest)
    assert [(e.audio, e.reference, e.language, e.line) for e in entries] == [
        (tmp_path / "set" / "a.wav", "Hello there.", None, 1), (Path("/abs/b.flac"), "\u4f60\u597d", "Chinese", 3)]


@pytest.mark.parametrize("content, message", [
    ("a.wav\n", ":1: expected audio path<TAB>reference text[<TAB>language], got 1 tab-separated field(s)"),
    ("a.wav\thi\n b.wav\thi\tEnglish\textra\n", ":2: expected audio path<TAB>reference text[<TAB>language], got 4 tab-separated field(s)"),
    ("a.wav\thi\n\n\thello\n", ":3: the audio path is empty"),
    ("a.wav\t  \n", ":1: the reference text is empty"),
    ("a.wav\thi\t\n", ":1: the language field is empty"),
    ("\n\n", ": no entries"),
])
def test_malformed_manifest_is_one_line_naming_file_and_line(tmp_path, content, message):
    manifest = tmp_path / "m.tsv"
    manifest.write_text(content)
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    assert str(err.value).startswith(f"{manifest}{message}") and "\n" not in str(err.value)


def test_manifest_not_utf8_or_missing(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_bytes(b"a.wav\thi\nb.wav\t\xff\xfe\n")
    with pytest.raises(ManifestError, match=r"m\.tsv:2: not UTF-8 text"):
        read_manifest(manifest)
    with pytest.raises(ManifestError, match=r"nope\.tsv: cannot read the manifest: No such file or directory"):
        read_manifest(tmp_path / "nope.tsv")

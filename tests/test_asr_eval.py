"""ASR evaluation (`cloudtune asr eval`): normalization, WER/CER, the manifest, asr_results on SQLite and PostgreSQL, the report
SQL, the HTML report, and the whole command on espeak-ng speech through the real pocketsphinx backend."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from sqlalchemy import func, select

from pipeline import paths
from pipeline.asr import evaluation, report, scoring
from pipeline.asr.base import FileResult
from pipeline.asr.manifest import ManifestError, read_manifest
from pipeline.steps.asr import evaluate_asr
from pipeline.store import db, reports
from pipeline.store.tables import asr_results, runs

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


# --- asr_results rows, the report SQL, the HTML report --------------------------------------------------


def _entries_and_results(tmp_path):
    """Three manifest entries and what a recognizer gave for them: an exact English transcript, one with 2 of 4 words wrong, a failure."""
    manifest = tmp_path / "m.tsv"
    manifest.write_text("a.wav\tHello, world!\tEnglish\nb.wav\tThe quick brown fox.\nc.wav\tunreadable file\n")
    entries = read_manifest(manifest)
    results = [FileResult(str(entries[0].audio), "hello world", "English", 2.0, 0.5),
               FileResult(str(entries[1].audio), "the quick frown box", "English", 4.0, 2.0),
               FileResult(str(entries[2].audio), error="cannot decode: not an audio file")]
    return entries, results


def _write(url, run_id, entries, results, model="tiny-model"):
    rows = [evaluation.result_row(run_id, model, e, r, "basic", db.utcnow()) for e, r in zip(entries, results, strict=True)]
    with db.connect(url) as conn:
        db.start_run(conn, "asr_eval", {"manifest": "m.tsv"}, run_id)
        evaluation.write_results(conn, run_id, rows)
        conn.commit()
    return rows


def test_asr_results_rows_are_replaced_by_a_rerun(db_url, tmp_path):
    entries, results = _entries_and_results(tmp_path)
    _write(db_url, "asr-1", entries, results)
    _write(db_url, "asr-other", entries[:1], results[:1])
    _write(db_url, "asr-1", entries, results)  # the same run again: replaced, not duplicated
    _write(db_url, "asr-1", entries[:2], results[:2])  # and a shorter manifest leaves no stale row behind
    with db.connect(db_url) as conn:
        rows = conn.execute(select(asr_results).where(asr_results.c.run_id == "asr-1").order_by(asr_results.c.result_id)).mappings().all()
        assert conn.execute(select(func.count()).select_from(asr_results)).scalar() == 3
    assert [r["result_id"] for r in rows] == ["asr-1:1", "asr-1:2"]
    first, second = rows
    assert (first["source_uri"], first["text"], first["reference"], first["language"]) == (str(tmp_path / "a.wav"), "hello world", "Hello, world!", "English")
    assert (first["wer"], first["cer"], first["rtf"], first["error"]) == (0.0, 0.0, 0.25, None)
    assert (second["wer"], second["ref_words"], second["word_edits"], second["char_edits"], second["ref_chars"]) == (0.5, 4, 2, 2, 16)
    assert second["language"] == "English"  # not in the manifest: the recognizer's


def test_failed_file_is_a_row_with_its_error_and_no_scores(db_url, tmp_path):
    entries, results = _entries_and_results(tmp_path)
    _write(db_url, "asr-1", entries, results)
    with db.connect(db_url) as conn:
        row = conn.execute(select(asr_results).where(asr_results.c.result_id == "asr-1:3")).mappings().one()
    assert row["error"] == "cannot decode: not an audio file" and row["reference"] == "unreadable file"
    assert (row["text"], row["wer"], row["cer"], row["duration_s"], row["rtf"]) == (None, None, None, None, None)


def test_asr_summary_report_on_both_databases(db_url, tmp_path):
    entries, results = _entries_and_results(tmp_path)
    _write(db_url, "asr-1", entries, results)
    _write(db_url, "asr-2", entries[:1], [FileResult(results[0].file, "hello", "English", 2.0, 1.0)])
    df = reports.run_report("asr_summary", url=db_url)
    assert list(df.columns) == ["run_id", "model", "files", "errors", "audio_hours", "wer", "cer", "mean_rtf", "status", "started_at"]
    one = df[df.run_id == "asr-1"].iloc[0]
    # corpus WER: (0 + 2) edits over (2 + 4) words, not the mean of 0 and 0.5; CER: (0 + 2) over (10 + 16) characters
    assert (one["files"], one["errors"], one["model"]) == (3, 1, "tiny-model")
    assert float(one["wer"]) == pytest.approx(2 / 6) and float(one["cer"]) == pytest.approx(2 / 26)
    assert float(one["audio_hours"]) == pytest.approx(6 / 3600) and float(one["mean_rtf"]) == pytest.approx((0.25 + 0.5) / 2)
    assert set(df.run_id) == {"asr-1", "asr-2"}
    only = reports.run_report("asr_summary", {"run_id": "asr-2"}, url=db_url)
    assert list(only.run_id) == ["asr-2"] and float(only.iloc[0]["wer"]) == 0.5


def test_summary_and_html_report(tmp_path):
    entries, results = _entries_and_results(tmp_path)
    rows = [evaluation.result_row("asr-1", "tiny-model", e, r, "basic", db.utcnow()) for e, r in zip(entries, results, strict=True)]
    summary = evaluation.summarize(rows, ["Chinese"])
    assert {k: summary[k] for k in ("files", "errors", "wer", "metric", "ref_words")} == {"files": 3, "errors": 1, "wer": pytest.approx(2 / 6),
                                                                                          "metric": "wer", "ref_words": 6}
    assert summary["mean_rtf"] == pytest.approx(0.375) and summary["audio_hours"] == pytest.approx(6 / 3600)
    assert set(summary["by_language"]) == {"English", "unknown"} and summary["by_language"]["unknown"]["errors"] == 1
    path = report.write_asr_report(paths.asr_report("asr-1"), "asr-1", rows, summary, {"manifest": "m.tsv", "backend": "pocketsphinx",
                                                                                      "normalize": "basic"}, worst_files=1, cer_languages=["Chinese"])
    assert path == paths.home() / "runs" / "asr-1" / "reports" / "asr_eval.html"
    page = path.read_text()
    assert "<h2>Corpus: WER 0.3333</h2>" in page and 'src="data:image/png;base64,' in page
    worst = page.split("Worst 1 files")[1].split("</table>")[0]
    assert "the quick frown box" in worst and "The quick brown fox." in worst and "hello world" not in worst
    assert "cannot decode: not an audio file" in page.split("Failed files (1)")[1]


def test_headline_is_cer_when_every_file_is_in_a_cer_language(tmp_path):
    manifest = tmp_path / "zh.tsv"
    manifest.write_text("a.wav\t\u4eca\u5929\u5929\u6c14\u5f88\u597d\tChinese\n")
    entry = read_manifest(manifest)[0]
    row = evaluation.result_row("r", "m", entry, FileResult(str(entry.audio), "\u4eca\u5929\u5929\u6c14\u4e0d\u597d", "Chinese", 1.0, 0.1), "basic",
                                db.utcnow())
    summary = evaluation.summarize([row], ["Chinese"])
    assert (summary["metric"], summary["value"], summary["wer"]) == ("cer", pytest.approx(1 / 6), 1.0)


def test_bad_manifest_fails_before_a_run_is_recorded(db_url, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("a.wav\tHello.\nb.wav\t...\n")  # line 2: nothing left after basic normalization
    with pytest.raises(ManifestError, match=r"m\.tsv:2: the reference text is empty after normalization \(basic\)"):
        evaluate_asr(manifest)
    with db.connect(db_url) as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar() == 0


# --- end to end: `cloudtune asr eval` with the real pocketsphinx backend on espeak-ng speech ----------------

SENTENCES = {"call.wav": "Please call me tomorrow morning.", "weather.wav": "The weather is nice today."}


def speech_manifest(folder: Path) -> Path:
    """espeak-ng speech of SENTENCES (US English, slow) and a manifest of them plus a missing file (relative paths, no language)."""
    pytest.importorskip("pocketsphinx")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in SENTENCES.items():
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "120", "-w", str(folder / name), text], check=True, capture_output=True, timeout=60)
    manifest = folder / "eval.tsv"
    manifest.write_text("".join(f"{name}\t{text}\n" for name, text in SENTENCES.items()) + "missing.wav\tnothing here\n")
    return manifest


def test_cloudtune_asr_eval_end_to_end_with_pocketsphinx(tmp_path, capsys):
    from pipeline.cli import main

    manifest = speech_manifest(tmp_path / "speech")
    args = ["asr", "eval", "--manifest", str(manifest), "--backend", "pocketsphinx", "--run-id", "asr-e2e"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["run_id"], result["files"], result["errors"], result["metric"], result["backend"]) == ("asr-e2e", 3, 1, "wer", "pocketsphinx")
    with db.connect() as conn:
        rows = conn.execute(select(asr_results).order_by(asr_results.c.result_id)).mappings().all()
        run = conn.execute(select(runs)).mappings().one()
    assert (run["kind"], run["status"]) == ("asr_eval", "succeeded") and run["config"]["manifest"] == str(manifest)
    assert [r["source_uri"] for r in rows] == [str(manifest.parent / n) for n in (*SENTENCES, "missing.wav")]
    for row, (name, text) in zip(rows, SENTENCES.items(), strict=False):
        assert row["reference"] == text and row["text"] and row["error"] is None and row["model"] == result["model"]
        assert row["duration_s"] == pytest.approx(sf.info(str(manifest.parent / name)).duration, abs=0.05) and row["rtf"] > 0
        assert row["wer"] == scoring.score(text, row["text"]).wer  # what is stored is what the scorer gives on the stored texts
    assert rows[2]["error"] and rows[2]["text"] is None and rows[2]["wer"] is None
    assert result["wer"] == pytest.approx(sum(r["word_edits"] for r in rows[:2]) / sum(r["ref_words"] for r in rows[:2]))
    page = Path(result["report"]).read_text()
    assert Path(result["report"]) == paths.asr_report("asr-e2e") and rows[0]["text"] in page and "missing.wav" in page

    assert main(args) == 0  # the same run again: its rows replaced, the summary printed
    out = capsys.readouterr().out
    assert "asr eval: run asr-e2e (pocketsphinx" in out and "3 files, 1 failed" in out and f"report: {result['report']}" in out
    assert reports.run_report("asr_summary")[["run_id", "files", "errors"]].values.tolist() == [["asr-e2e", 3, 1]]


def test_cloudtune_asr_eval_exit_codes(tmp_path, capsys):
    from pipeline.cli import main

    speech_manifest(tmp_path / "speech")
    failing = tmp_path / "speech" / "failing.tsv"
    failing.write_text("missing.wav\thello\neval.tsv\thello\n")  # no such file; not audio
    assert main(["asr", "eval", "--manifest", str(failing), "--backend", "pocketsphinx"]) == 1  # every file failed
    with db.connect() as conn:
        assert conn.execute(select(runs.c.status)).scalar() == "failed"
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.wav\thello\nb.wav\n")
    capsys.readouterr()
    assert main(["asr", "eval", "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"cloudtune asr: error: {bad}:2: expected audio path<TAB>reference text[<TAB>language], got 1 tab-separated field(s)\n"

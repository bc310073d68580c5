import shutil

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import func, select

from pipeline import ingest as ingest_mod
from pipeline.audio import io as audio_io
from pipeline.audio.fixtures import tone, write_bad_files, write_tone
from pipeline.cli import main
from pipeline.ingest import find_audio_files
from pipeline.steps.ingest import ingest
from pipeline.store import db
from pipeline.store.tables import ingest_errors, ingest_sources, runs, tracks

GOOD = 5  # distinct contents in the `music` fixture


@pytest.fixture
def music(tmp_path):
    d = tmp_path / "music"
    write_tone(d / "a.wav", 2.0, sr=44100, freq=440)
    write_tone(d / "b.flac", 3.0, sr=48000, freq=330, channels=2)
    write_tone(d / "c.ogg", 2.0, sr=22050, freq=550)
    write_tone(d / "d.mp3", 3.0, sr=44100, freq=660, channels=2)
    write_tone(d / "sub" / "E.WAV", 1.0, sr=16000, freq=770)
    shutil.copy(d / "a.wav", d / "sub" / "a_copy.wav")  # same file elsewhere
    sf.write(d / "a_as.flac", sf.read(d / "a.wav", dtype="int16")[0], 44100)  # same PCM, other container
    (d / "notes.txt").write_text("not picked up: not an audio extension")
    (d / ".hidden.wav").write_bytes(b"")  # hidden files are skipped
    return d


@pytest.fixture
def bad(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__MAX_SECONDS", "5")
    expected = write_bad_files(tmp_path / "bad", max_seconds=5)
    return tmp_path / "bad", expected


def count(url, table, *where):
    with db.connect(url) as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def test_find_audio_files_walks_folders_and_takes_named_files(music):
    files = find_audio_files([music, music / "notes.txt"], ["wav", "flac", "ogg", "mp3"])
    names = [f.name for f in files]
    assert sorted(names) == sorted(["a.wav", "a_as.flac", "b.flac", "c.ogg", "d.mp3", "E.WAV", "a_copy.wav", "notes.txt"])
    with pytest.raises(FileNotFoundError, match="source not found: /no/such"):
        find_audio_files(["/no/such"], ["wav"])


def test_ingest_stores_canonical_audio_and_one_track_per_content(db_url, music, home):
    s = ingest([music], catalog="mine", workers=1)
    assert (s.added, s.duplicates, s.errors) == (GOOD, 2, 0)
    with db.connect(db_url) as conn:
        rows = conn.execute(select(tracks)).all()
        assert conn.execute(select(runs.c.status).where(runs.c.run_id == s.run_id)).scalar() == "succeeded"
    assert len(rows) == GOOD and {r.catalog for r in rows} == {"mine"}
    by_name = {r.source_uri.rsplit("/", 1)[1]: r for r in rows}
    assert set(by_name) == {"a.wav", "b.flac", "c.ogg", "d.mp3", "E.WAV"}  # the first path of a content wins
    assert (by_name["b.flac"].sample_rate, by_name["b.flac"].channels) == (48000, 2)
    assert by_name["c.ogg"].source_format == "OGG/VORBIS" and by_name["d.mp3"].source_format == "MP3/MPEG_LAYER_III"
    for r in rows:
        assert r.track_id == r.content_hash[:16]
        wave, sr = sf.read(home / r.audio_path, dtype="float32")
        assert sr == 24000 and wave.ndim == 1
        assert wave.size / sr == pytest.approx(r.duration_s, abs=0.06)
        assert audio_io.rms_dbfs(wave) == pytest.approx(-20.0, abs=0.3)
    assert not [p for p in (home / "audio").rglob(".*")], "temporary files left behind"


def test_canonical_audio_keeps_the_pitch(db_url, music, home):
    ingest([music / "c.ogg"], workers=1)
    with db.connect(db_url) as conn:
        path = conn.execute(select(tracks.c.audio_path)).scalar()
    wave, sr = sf.read(home / path)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * sr / wave.size - 550) < 2


def test_rerun_adds_nothing_and_changed_files_are_reingested(db_url, music):
    ingest([music], workers=1)
    again = ingest([music], workers=1)
    assert (again.added, again.duplicates, again.unchanged, again.errors) == (0, 0, GOOD + 2, 0)
    assert count(db_url, tracks) == GOOD
    write_tone(music / "c.ogg", 2.5, sr=22050, freq=600)  # new content under a known path
    third = ingest([music], workers=1)
    assert (third.added, third.unchanged) == (1, GOOD + 1)
    assert count(db_url, tracks) == GOOD + 1


def test_every_bad_file_is_one_error_row_and_the_run_goes_on(db_url, music, bad, capsys):
    bad_dir, expected = bad
    s = ingest([bad_dir, music], workers=2)
    assert (s.added, s.errors) == (GOOD, len(expected))
    with db.connect(db_url) as conn:
        got = {r.source_uri.rsplit("/", 1)[1]: r for r in conn.execute(select(ingest_errors)).all()}
    assert {name: r.error_kind for name, r in got.items()} == expected
    assert set(expected.values()) <= set(ingest_mod.ERROR_KINDS)
    assert all(r.run_id == s.run_id and r.message and "\n" not in r.message for r in got.values())
    assert "digital silence" in got["silence.wav"].message and "6.0 s is over the maximum of 5 s" in got["too_long.wav"].message
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ingest:")]
    assert len(warnings) == len(expected)
    assert any("notes.mp3: not_audio: not an audio file" in w for w in warnings)
    # a re-run neither decodes nor records the unchanged bad files again, and still knows they are bad
    again = ingest([bad_dir, music], workers=2)
    assert (again.added, again.errors, again.known_errors) == (0, 0, len(expected))
    assert count(db_url, ingest_errors) == len(expected) and count(db_url, tracks) == GOOD
    assert count(db_url, ingest_sources, ingest_sources.c.status == "error") == len(expected)


def test_parallel_and_serial_ingest_agree(tmp_path, monkeypatch, music):
    hashes = []
    for workers in (1, 2):
        monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / f"home{workers}"))
        ingest([music], workers=workers)
        with db.connect() as conn:
            hashes.append(sorted(conn.execute(select(tracks.c.content_hash, tracks.c.source_uri)).all()))
        db.dispose_engines()
    assert hashes[0] == hashes[1]


def test_same_pcm_in_wav_and_flac_hashes_alike(tmp_path):
    pcm = (tone(1.0, 24000) * 32767).astype(np.int16)  # integer samples: both containers hold exactly these
    sf.write(tmp_path / "x.wav", pcm, 24000, subtype="PCM_16")
    sf.write(tmp_path / "x.flac", pcm, 24000, subtype="PCM_16")
    s = ingest([tmp_path / "x.wav", tmp_path / "x.flac"], workers=1)
    assert (s.added, s.duplicates) == (1, 1)


def test_a_crash_mid_run_keeps_committed_rows_and_rerun_completes(db_url, music, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__COMMIT_EVERY", "1")
    real = ingest_mod._record
    calls = {"n": 0}

    def flaky(conn, result, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C
        return real(conn, result, *args)

    monkeypatch.setattr(ingest_mod, "_record", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest([music], workers=1)
    with db.connect(db_url) as conn:
        assert conn.execute(select(runs.c.status)).scalar() == "failed"
    # files 1-2 (a.wav, and a_as.flac: the same audio) were committed before the crash
    assert count(db_url, ingest_sources) == 2 and count(db_url, tracks) == 1
    monkeypatch.setattr(ingest_mod, "_record", real)
    s = ingest([music], workers=1)
    assert (s.unchanged, s.added, s.duplicates) == (2, GOOD - 1, 1) and count(db_url, tracks) == GOOD


@pytest.mark.parametrize("commit_seconds", [0, 3600])
def test_slow_files_are_committed_by_time_so_another_writer_never_waits_for_the_whole_batch(sqlite_url, music, monkeypatch, commit_seconds):
    """SQLite's write lock covers the file from a transaction's first write to its commit: a batch of slow files held it past
    other steps' busy timeout ("database is locked"). ``commit_seconds`` 0 commits after every file, whatever ``commit_every``;
    an hour (the count alone, as before) keeps the lock from the first file on."""
    import sqlite3

    monkeypatch.setenv("CLOUDTUNE_DB_URL", sqlite_url)
    monkeypatch.setenv("CLOUDTUNE__INGEST__COMMIT_EVERY", "1000")
    monkeypatch.setenv("CLOUDTUNE__INGEST__COMMIT_SECONDS", str(commit_seconds))
    real, writes = ingest_mod._record, []

    def write_beside_then_record(conn, result, *args):
        other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0.2)
        try:
            other.execute("BEGIN IMMEDIATE")  # takes the write lock, as another step's insert would
            other.rollback()
            writes.append("ok")
        except sqlite3.OperationalError as exc:
            writes.append(str(exc))
        finally:
            other.close()
        real(conn, result, *args)

    monkeypatch.setattr(ingest_mod, "_record", write_beside_then_record)
    s = ingest([music], workers=1)
    # before each file's rows: the other connection finds the lock free when the previous file's rows were committed
    assert s.added == GOOD and len(writes) == GOOD + 2  # two copies of a.wav's audio: duplicates, recorded too
    assert writes == ["ok"] * len(writes) if commit_seconds == 0 else writes == ["ok"] + ["database is locked"] * (len(writes) - 1)
    assert count(sqlite_url, tracks) == GOOD


def test_cli_exit_codes(music, bad, capsys):
    bad_dir, expected = bad
    assert main(["ingest", str(music), str(bad_dir), "--workers", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"ingest: {GOOD} tracks added, 2 skipped (2 duplicate, 0 unchanged), {len(expected)} errors")
    assert main(["ingest", str(music), str(bad_dir), "--strict"]) == 1
    assert f"--strict and {len(expected)} file(s) failed" in capsys.readouterr().err
    assert main(["ingest", str(bad_dir / "empty.wav"), str(bad_dir / "nan.wav")]) == 1
    assert "nothing could be ingested" in capsys.readouterr().err
    assert main(["ingest", "/no/such/folder"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cloudtune ingest: error: ingest: source not found: /no/such/folder"

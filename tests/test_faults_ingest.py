"""A step killed with -9 (issue 18, faults), tried as a new user would: `cloudtune ingest` with 2 decode workers, SIGKILLed mid-run.
Its workers die with it (no orphan left a few seconds later), the next ingest marks the killed run failed, "interrupted", and
finishes the catalog, with no duplicate rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline import paths
from pipeline.audio.synth import build_catalog
from pipeline.lifeline import process_alive
from pipeline.store import db
from pipeline.store.tables import ingest_errors, ingest_sources, runs, tracks

pytestmark = pytest.mark.faults

DISTINCT, COPIES = 6, 12  # 72 files of 6 contents: long enough to kill mid-run on a busy 2-core machine (about 4 s of decoding)


def _children(pid: int) -> list[int]:
    """The living child processes of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != b"Z":
                out.append(int(entry.name))
    return out


def _count(table) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with their parent through Linux's PR_SET_PDEATHSIG")
def test_an_ingest_killed_with_sigkill_leaves_no_worker_and_the_next_run_marks_it_interrupted_and_finishes(tmp_path, home):
    src = build_catalog(tmp_path / "src", tracks=DISTINCT, seconds=45, seed=2, sample_rate=44100, channels=2, shared_motif_ratio=0.0)
    for original in sorted(Path(src).glob("*.flac")):
        for i in range(1, COPIES):
            os.link(original, original.with_name(f"{original.stem}-copy{i:02d}.flac"))
    files = DISTINCT * COPIES
    env = {**os.environ, "CLOUDTUNE__INGEST__COMMIT_EVERY": "2"}  # committed progress to wait for before the kill
    cmd = [sys.executable, "-m", "pipeline", "ingest", str(src), "--catalog", "c", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _children(proc.pid) or workers
            if paths.db_file().exists() and len(workers) >= 2 and _count(ingest_sources) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "ingest finished before it could be killed: make the catalog bigger"
        done_before_kill = _count(ingest_sources)
        assert 2 <= len(workers) and done_before_kill < files, (workers, done_before_kill)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    end = time.monotonic() + 5
    while any(process_alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [w for w in workers if process_alive(w)], "decode workers outlived their killed parent"

    with db.connect() as conn:
        killed = conn.execute(select(runs).where(runs.c.kind == "ingest")).one()
    assert killed.status == "running" and killed.pid == proc.pid  # nothing could finish it: SIGKILL runs no handler

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    with db.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(select(runs).where(runs.c.kind == "ingest"))}
        contents = conn.execute(select(func.count(func.distinct(tracks.c.content_hash)))).scalar()
    assert len(rows) == 2
    assert rows[killed.run_id].status == "failed" and rows[killed.run_id].message.startswith("interrupted: ")
    (new,) = [r for r in rows.values() if r.run_id != killed.run_id]
    assert new.status == "succeeded"
    assert _count(tracks) == contents == DISTINCT and _count(ingest_sources) == files and _count(ingest_errors) == 0
    canonical = [p for p in (paths.home() / "audio").rglob("*.flac") if not p.name.startswith(".")]
    assert len(canonical) == DISTINCT

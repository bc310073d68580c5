import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli import main

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")


def run(*args, env=None):
    return subprocess.run([CLOUDTUNE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_demo_builds_ingests_tokenizes_and_prints_the_summaries(home):
    small = {"CLOUDTUNE__RVQ__CODEBOOK_SIZE": "16", "CLOUDTUNE__RVQ__LEVELS": "3"}
    p = run("demo", "--tracks", "3", "--seconds", "4", env=small)
    assert p.returncode == 0, p.stderr
    assert "ingest: 3 tracks added" in p.stdout and "tokenize: 3 tracks tokenized" in p.stdout
    summary = p.stdout.split("Catalog summary")[1].split("Tokenizer quality")[0]
    assert "demo" in summary and " 3 " in summary
    quality = p.stdout.split("Tokenizer quality")[1].splitlines()
    assert [line.split()[1] for line in quality[2:5]] == ["1", "2", "3"]  # levels 1..3 with their mel SNR
    again = run("demo", "--tracks", "3", "--seconds", "4", env=small)  # idempotent
    assert again.returncode == 0 and "0 tracks added, 3 skipped (0 duplicate, 3 unchanged)" in again.stdout
    assert "0 tracks tokenized (0 files), 3 already done" in again.stdout


def test_demo_catalog_command(tmp_path):
    p = run("demo-catalog", "--out", str(tmp_path / "c"), "--tracks", "2", "--seconds", "2", "--seed", "3", "--channels", "1")
    assert p.returncode == 0, p.stderr
    manifest = json.loads((tmp_path / "c" / "catalog.json").read_text())
    assert manifest["seed"] == 3 and len(manifest["tracks"]) == 2 and manifest["channels"] == 1


def test_report_and_db_commands(capsys):
    assert main(["db", "init"]) == 0
    assert "schema ready" in capsys.readouterr().out
    assert main(["db", "schema"]) == 0
    assert "CREATE TABLE retrieval_metrics" in capsys.readouterr().out
    assert main(["report", "--list"]) == 0
    assert "catalog_summary" in capsys.readouterr().out
    assert main(["report", "runs", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["report", "nope"]) == 2
    assert capsys.readouterr().err.startswith("cloudtune report: error: report 'nope': no such report")
    assert main(["report", "runs", "--param", "oops"]) == 2


def test_bad_config_is_one_line_and_exit_2():
    p = run("db", "init", env={"CLOUDTUNE__AUDIO__NOPE": "1"})
    assert p.returncode == 2
    assert p.stderr.strip() == "cloudtune db: error: CLOUDTUNE__AUDIO__NOPE: unknown config key 'audio.nope'"


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("cloudtune ")

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli import main

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")


def run(*args, env=None):
    return subprocess.run([CLOUDTUNE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


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

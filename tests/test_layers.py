"""The layer rule of docs/architecture.md, checked on every test run (and by `make lint`):

- imports go downward only (import-linter's contract in pyproject.toml: entry points -> steps -> domain -> foundation);
- nothing below the steps reads the global config (`config.load*`): domain functions take settings as arguments;
- only pipeline/paths.py joins artifact path pieces (`folder / "manifest.json"`, `home / "runs"`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
ENTRY_AND_STEPS = {"cli", "__main__.py", "airflow_local.py", "airflow_cluster.py", "metrics_page.py", "config", "steps"}
CONFIG_READERS = {"load", "load_pipeline", "load_train", "load_fingerprint", "load_index", "load_eval", "load_airflow", "load_asr", "load_sections",
                  "validate", "defaults"}
# the folders and files of the $CLOUDTUNE_HOME layout (pipeline/paths.py's docstring); a module that saves an object into a folder it
# is handed names that object's own files (rvq's codec.json, the catalog VAE's map), as transformers' save_pretrained does
ARTIFACT_NAMES = {"runs", "models", "embeddings", "index", "tokenizers", "tokens", "splits", "demo", "audio", "catalog_vae", "current",
                  "published.json", "params.json", "nightly.json", "train.yaml", "embedder.pt", "embedder.json", "training_curve.png",
                  "manifest.json", "vectors.npy", "segments.csv", "index.faiss", "evaluation.json", "evaluation.html", "metrics.csv",
                  "cloudtune.db", "asr_eval.html"}


def _modules(exclude: set[str]) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in exclude]


def test_imports_go_downward_only():
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_no_config_reads_below_the_steps():
    found = []
    for path in _modules(ENTRY_AND_STEPS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONFIG_READERS \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "config":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: config.{node.func.attr}()")
    assert not found, "domain and foundation modules take settings as arguments; read config in a step or the CLI:\n" + "\n".join(found)


def test_artifact_paths_are_spelled_only_in_paths_module():
    found = []
    for path in _modules({"paths.py", "config"}):  # pipeline/config joins configs/*.yaml, not artifacts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                    and isinstance(node.right.value, str):
                name = node.right.value
                if name in ARTIFACT_NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: ... / {name!r}")
    assert not found, "artifact paths come from pipeline/paths.py:\n" + "\n".join(found)

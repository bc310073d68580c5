"""pipeline.devices: the allocator cap `cloudtune serve` sets (each case in a fresh interpreter: the cap is process-wide)."""

import os
import subprocess
import sys

import pytest

from pipeline import config

PROBE = "from pipeline.devices import limit_malloc_arenas; import os; print(limit_malloc_arenas(2), os.environ.get('MALLOC_ARENA_MAX'))"


def _probe(**env) -> str:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | {"PYTHONPATH": str(config.PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=base | env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_capped_for_the_process_and_its_children():
    assert _probe() == "2 2"  # mallopt accepted it, and processes started later (uvicorn's workers) get it from the environment
    assert _probe(MALLOC_ARENA_MAX="3") == "3 3"  # a value already in the environment wins


def test_the_serve_setting_is_validated(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__SEARCH_API__MALLOC_ARENAS", "0")
    with pytest.raises(ValueError, match="malloc_arenas"):
        config.load_pipeline()

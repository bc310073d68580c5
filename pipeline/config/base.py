"""What every part of :mod:`pipeline.config` shares: where the YAML files live, and the errors."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import paths

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "CLOUDTUNE__"
OLD_ENV_PREFIXES = {"CLOUDTUNE_TRAIN__": "train", "CLOUDTUNE_INDEX__": "index", "CLOUDTUNE_EVAL__": "eval", "CLOUDTUNE_AIRFLOW__": "airflow"}
RENAMED_SECTIONS = {("eval", "run"): "evaluation"}  # (file, old section) -> section: named in the error for an old variable


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file/variable, section and key."""


class _Invalid(ValueError):
    """What is wrong with a part of a value, ``path`` naming the part (``.demo.sets.pink0db`` below a key; a check across the keys
    of a section, in its ``__post_init__``, starts it with the key: ``plan``); :func:`_build` turns it into the ConfigError that
    names the file, section and key."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def config_dir() -> Path:
    return Path(os.environ.get("CLOUDTUNE_CONFIG_DIR", PROJECT_ROOT / "configs"))


def config_file(name: str) -> Path:
    """The shipped ``configs/<name>.yaml`` (under ``CLOUDTUNE_CONFIG_DIR`` when set)."""
    return config_dir() / f"{name}.yaml"


def db_url() -> str:
    return os.environ.get("CLOUDTUNE_DB_URL") or f"sqlite:///{paths.db_file()}"


def sql_dir() -> Path:
    return PROJECT_ROOT / "sql"

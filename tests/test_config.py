import os
from dataclasses import FrozenInstanceError, fields

import pytest

from pipeline import config
from pipeline.config import AudioSettings, ConfigError, IngestSettings


def test_defaults_come_from_yaml():
    cfg = config.load()
    audio = config.section(AudioSettings, cfg, "audio")
    assert audio.sample_rate == 24000
    assert config.section(IngestSettings, cfg, "ingest").min_seconds == 0.5


def test_train_settings_defaults_are_configs_train_yaml(monkeypatch):
    """A --config file that leaves a key out gets the settings class's default: it must be the product's (configs/train.yaml)."""
    import yaml

    for key in [k for k in os.environ if k.startswith("CLOUDTUNE_TRAIN__")]:
        monkeypatch.delenv(key)
    raw = yaml.safe_load((config.config_dir() / "train.yaml").read_text())
    for name, settings in zip(("embedder", "training", "splits"), config.load_train()[:3], strict=True):
        assert set(raw[name]) == {f.name for f in fields(settings)}, name
        assert settings == type(settings)(), f"configs/train.yaml {name}: differs from {type(settings).__name__}'s defaults"


def test_env_override_parses_yaml_values(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__MAX_SECONDS", "12.5")
    monkeypatch.setenv("CLOUDTUNE__INGEST__EXTENSIONS", "[wav]")
    s = config.section(IngestSettings, config.load(), "ingest")
    assert s.max_seconds == 12.5
    assert s.extensions == ("wav",)


def test_unknown_env_key_names_the_variable(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__MAX_SECOND", "3")
    with pytest.raises(ConfigError, match="CLOUDTUNE__INGEST__MAX_SECOND: unknown config key 'ingest.max_second'"):
        config.load()


def test_ill_typed_value_names_the_key(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__AUDIO__SAMPLE_RATE", "fast")
    with pytest.raises(ConfigError, match=r"config audio.sample_rate: expected int, got 'fast'"):
        config.section(AudioSettings, config.load(), "audio")


def test_unknown_yaml_key_is_an_error():
    with pytest.raises(ConfigError, match="config audio.bogus: unknown key"):
        config.section(AudioSettings, {"audio": {"bogus": 1}}, "audio")


def test_missing_config_file_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=f"{tmp_path}/pipeline.yaml: config file not found"):
        config.load()


def test_explicit_overrides_win_and_settings_are_frozen():
    s = config.section(AudioSettings, config.load(), "audio", sample_rate=16000, target_rms_dbfs=None)
    assert s.sample_rate == 16000 and s.target_rms_dbfs == -20.0
    with pytest.raises(FrozenInstanceError):
        s.sample_rate = 1


def test_home_and_db_url_defaults(home):
    assert config.home() == home.resolve() and home.is_dir()
    assert config.db_url() == f"sqlite:///{home.resolve() / 'cloudtune.db'}"

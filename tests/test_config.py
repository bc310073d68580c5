from dataclasses import FrozenInstanceError, fields

import pytest
import yaml

from pipeline import config, paths
from pipeline.config import AudioSettings, ConfigError, IngestSettings


def test_defaults_come_from_yaml():
    cfg = config.load()
    audio = config.section(AudioSettings, cfg, "audio")
    assert audio.sample_rate == 24000
    assert config.section(IngestSettings, cfg, "ingest").min_seconds == 0.5


@pytest.mark.parametrize("name,sections", [("pipeline", config.SECTIONS), ("train", config.TRAIN_SECTIONS), ("index", config.INDEX_SECTIONS),
                                           ("eval", config.EVAL_SECTIONS), ("airflow", config.AIRFLOW_SECTIONS)])
def test_settings_defaults_are_the_config_files(name, sections):
    """A --config file (or a section) that leaves a key out gets the settings class's default: it must be the product's,
    configs/<name>.yaml's, or the two drift apart unseen (train.yaml's EMA and val probe did)."""
    raw = yaml.safe_load((config.config_dir() / f"{name}.yaml").read_text())
    for section, cls in sections.items():
        given = raw.get(section) or {}
        assert set(given) == {f.name for f in fields(cls)}, (name, section)  # every key is written out, with its comment
        for key, value in given.items():
            default = getattr(cls(), key)
            assert (list(default) if isinstance(default, tuple) else default) == value, \
                f"configs/{name}.yaml {section}.{key}: {value!r} != {cls.__name__}'s default {default!r}"


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
    assert paths.home() == home.resolve() and home.is_dir()
    assert config.db_url() == f"sqlite:///{home.resolve() / 'cloudtune.db'}"

import shutil
from dataclasses import MISSING, FrozenInstanceError, fields

import pytest
import yaml

from pipeline import config, names, paths
from pipeline.cli import main
from pipeline.config import AudioSettings, ConfigError, IngestSettings, RVQSettings, TrainSettings


def test_defaults_come_from_yaml():
    cfg = config.load()
    audio = config.section(AudioSettings, cfg, "audio")
    assert audio.sample_rate == 24000
    assert config.section(IngestSettings, cfg, "ingest").min_seconds == 0.5


@pytest.mark.parametrize("name", list(config.FILES))
def test_every_yaml_key_has_a_typed_field_and_every_field_a_yaml_key(name):
    """configs/<name>.yaml is the one home of every value: each key is written out there (with its comment) and typed by
    a field of its section's settings class; the classes hold no default of their own to drift from it."""
    raw = yaml.safe_load(config.config_file(name).read_text())
    sections = config.FILES[name]
    assert list(raw) == list(sections), name
    for section, cls in sections.items():
        assert set(raw[section]) == {f.name for f in fields(cls)}, (name, section)
        for f in fields(cls):
            assert f.default is MISSING and f.default_factory is MISSING, f"{cls.__name__}.{f.name} has a default: it belongs in configs/{name}.yaml"
            assert str(f.type).removesuffix(" | None").split("[")[0] in ("int", "float", "str", "bool", "tuple", "dict"), (cls.__name__, f.name, f.type)
            if str(f.type).startswith("dict[str, "):  # a mapping of plain values or of a nested settings class, itself default-free
                item = str(f.type).removeprefix("dict[str, ").removesuffix("]")
                assert item in ("int", "float", "str", "bool") or all(g.default is MISSING for g in fields(config.NESTED[item])), f.type


def test_section_names_are_unique_across_the_config_files():
    """One environment scheme, CLOUDTUNE__<SECTION>__<KEY>, for all seven files: a section name may live in one file only."""
    seen: dict[str, str] = {}
    for name in config.FILES:
        for section in yaml.safe_load(config.config_file(name).read_text()):
            assert section not in seen, f"section {section!r} is in both {seen[section]}.yaml and {name}.yaml"
            seen[section] = name
    assert seen == config.SECTION_FILE


def test_env_override_parses_yaml_values(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__MAX_SECONDS", "12.5")
    monkeypatch.setenv("CLOUDTUNE__INGEST__EXTENSIONS", "[wav]")
    s = config.section(IngestSettings, config.load(), "ingest")
    assert s.max_seconds == 12.5
    assert s.extensions == ("wav",)


def test_one_env_scheme_for_every_file(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__TRAINING__EPOCHS", "3")
    monkeypatch.setenv("CLOUDTUNE__HNSW__EF_SEARCH", "256")
    monkeypatch.setenv("CLOUDTUNE__EVALUATION__EMBEDDERS", "[mel-stats]")
    monkeypatch.setenv("CLOUDTUNE__RUN__DAG_ID", "nightly_reindex")
    monkeypatch.setenv("CLOUDTUNE__AUDIO__SAMPLE_RATE", "16000")
    assert config.load_train().training.epochs == 3
    assert config.load_index().hnsw.ef_search == 256
    assert config.load_eval().evaluation.embedders == ("mel-stats",)
    assert config.load_airflow().run.dag_id == "nightly_reindex"
    assert config.load_pipeline().audio.sample_rate == 16000
    assert config.load("train")["training"]["epochs"] == 3  # the raw dict a run stores carries the override too
    assert "training" not in config.load("pipeline")  # each file takes its own sections' variables only


def test_unknown_env_key_names_the_variable(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__INGEST__MAX_SECOND", "3")
    with pytest.raises(ConfigError, match="CLOUDTUNE__INGEST__MAX_SECOND: unknown config key 'ingest.max_second'"):
        config.load()
    with pytest.raises(ConfigError, match="CLOUDTUNE__INGEST__MAX_SECOND"):  # whichever file is loaded: a typo is never ignored
        config.load("train")


@pytest.mark.parametrize("var,message", [
    ("CLOUDTUNE__TRAINIG__EPOCHS", "CLOUDTUNE__TRAINIG__EPOCHS: no config section 'trainig'"),
    ("CLOUDTUNE__EPOCHS", r"CLOUDTUNE__EPOCHS: expected CLOUDTUNE__<SECTION>__<KEY>"),
    ("CLOUDTUNE__TRAINING__LR__X", r"CLOUDTUNE__TRAINING__LR__X: expected CLOUDTUNE__<SECTION>__<KEY>"),
])
def test_malformed_env_override_names_the_variable(monkeypatch, var, message):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError, match=message):
        config.load("index")


@pytest.mark.parametrize("var,new", [
    ("CLOUDTUNE_TRAIN__TRAINING__EPOCHS", "CLOUDTUNE__TRAINING__EPOCHS"),
    ("CLOUDTUNE_INDEX__HNSW__EF_SEARCH", "CLOUDTUNE__HNSW__EF_SEARCH"),
    ("CLOUDTUNE_EVAL__RUN__EMBEDDERS", "CLOUDTUNE__EVALUATION__EMBEDDERS"),  # eval.yaml's `run` is `evaluation` now
    ("CLOUDTUNE_AIRFLOW__NIGHTLY__MAX_RECALL_DROP", "CLOUDTUNE__NIGHTLY__MAX_RECALL_DROP"),
])
def test_old_env_prefix_is_an_error_naming_the_new_variable(monkeypatch, capsys, var, new):
    monkeypatch.setenv(var, "3")
    for name in config.FILES:  # loading any file fails: the old variable would otherwise change nothing, silently
        with pytest.raises(ConfigError, match=f"^{var}: the {var.split('__')[0]}__ prefix is retired; set {new} instead"):
            config.load(name)
    assert main(["db", "init"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cloudtune db: error: {var}: ") and new in err and err.count("\n") == 1


def test_variables_that_are_not_overrides_are_left_alone(monkeypatch, tmp_path):
    for var in ("CLOUDTUNE_HOME", "CLOUDTUNE_DB_URL", "CLOUDTUNE_TEST_PG_URL", "CLOUDTUNE_CATALOG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("CLOUDTUNE_CONFIG_DIR", str(config.PROJECT_ROOT / "configs"))
    config.validate()


def test_ill_typed_value_names_the_key(monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__AUDIO__SAMPLE_RATE", "fast")
    with pytest.raises(ConfigError, match=r"^CLOUDTUNE__AUDIO__SAMPLE_RATE: config audio.sample_rate: expected int, got 'fast'$"):
        config.section(AudioSettings, config.load(), "audio")


@pytest.mark.parametrize("var,value,message", [
    ("CLOUDTUNE__INGEST__EXTENSIONS", "wav", r"config ingest.extensions: expected tuple\[str, \.\.\.\], got 'wav'"),  # not ('w', 'a', 'v')
    ("CLOUDTUNE__TOKENIZE__BACKEND", "null", "config tokenize.backend: expected str, got None"),
    ("CLOUDTUNE__TRAINING__AMP", "1", "config training.amp: expected bool, got 1"),
    ("CLOUDTUNE__PUBLISH__METRIC", "ndcg", "config publish.metric: 'ndcg' is not one of recall, mrr"),
    ("CLOUDTUNE__PUBLISH__INDEX_KINDS", "[hnsw, lsh]", "config publish.index_kinds: 'lsh' is not one of flat, hnsw, ivfpq"),
    ("CLOUDTUNE__DAG__INDEX_KINDS", "[flat, lsh]", "config dag.index_kinds: 'lsh' is not one of flat, hnsw, ivfpq"),
    ("CLOUDTUNE__WAV2VEC2__DTYPE", "int8", "config wav2vec2.dtype: 'int8' is not one of auto, float32, bfloat16, float16"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [2], sets: {clean: clean, vinyl: 'vinyl:3'}}}",
     r"config queries.plans.full.sets.vinyl: degradation spec 'vinyl:3': 'vinyl:3': unknown kind 'vinyl' \(known: clean, white, "),
])
def test_values_are_checked_against_their_type_and_names(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=f"^{var}: {message}"):
        config.validate()


def test_unknown_yaml_key_is_an_error():
    with pytest.raises(ConfigError, match="configs/pipeline.yaml: config audio.bogus: unknown key"):
        config.section(AudioSettings, {"audio": {"bogus": 1}}, "audio")


def _config_copy(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    shutil.copytree(config.PROJECT_ROOT / "configs", folder)
    monkeypatch.setenv("CLOUDTUNE_CONFIG_DIR", str(folder))
    return folder


def test_missing_key_names_file_section_and_key(tmp_path, monkeypatch):
    folder = _config_copy(tmp_path, monkeypatch)
    text = (folder / "pipeline.yaml").read_text()
    (folder / "pipeline.yaml").write_text(text.replace("  sample_rate: 24000 ", "  # sample_rate: 24000 "))
    with pytest.raises(ConfigError, match=f"^{folder}/pipeline.yaml: config audio.sample_rate: missing key$"):
        config.load()
    with pytest.raises(ConfigError, match="config audio.sample_rate: missing key"):
        config.defaults(AudioSettings)
    with pytest.raises(ConfigError, match=r"pipeline.yaml: config audio.sample_rate: missing key \(also missing: target_rms_dbfs, "):
        config.section(AudioSettings, {"audio": {}}, "audio")


def test_unknown_section_names_the_file(tmp_path, monkeypatch):
    folder = _config_copy(tmp_path, monkeypatch)
    with (folder / "eval.yaml").open("a") as fh:
        fh.write("\nrun:\n  embedders: [mel-stats]\n")
    with pytest.raises(ConfigError, match=f"^{folder}/eval.yaml: unknown section 'run' .*'run' is a section of airflow.yaml"):
        config.load_eval()


def test_missing_config_file_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=f"{tmp_path}/pipeline.yaml: config file not found"):
        config.load()


def test_partial_config_file_is_merged_over_the_shipped_one(tmp_path, monkeypatch):
    mine = tmp_path / "my.yaml"
    mine.write_text("training: {epochs: 3}\nsplits:\n")
    shipped = config.load_train()
    s = config.load_train(mine)
    assert s.training == shipped.training.__class__(**{**shipped.training.__dict__, "epochs": 3})
    assert s.embedder == shipped.embedder and s.splits == shipped.splits
    assert s.raw["training"]["epochs"] == 3 and s.raw["training"]["lr"] == shipped.raw["training"]["lr"]
    monkeypatch.setenv("CLOUDTUNE__TRAINING__EPOCHS", "5")  # the environment wins over the file
    assert config.load_train(mine).training.epochs == 5


@pytest.mark.parametrize("text,message", [
    ("training: {epoch: 3}\n", r"config training.epoch: unknown key \(known: "),
    ("trainer: {epochs: 3}\n", "unknown section 'trainer'"),
    ("audio: {sample_rate: 16000}\n", "unknown section 'audio' .*'audio' is a section of pipeline.yaml"),
    ("training: {epochs: many}\n", "config training.epochs: expected int, got 'many'"),
    ("training: 3\n", "section 'training' must be a mapping of keys, got 3"),
])
def test_partial_config_errors_name_the_file(tmp_path, text, message):
    mine = tmp_path / "my.yaml"
    mine.write_text(text)
    with pytest.raises(ConfigError, match=f"^{mine}: {message}"):
        config.load_train(mine)


def test_train_command_takes_a_partial_config_and_names_it_when_wrong(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {epoch: 3}\n")
    assert main(["train", "embedder", "--config", str(bad), "--tokens-root", str(tmp_path)]) == 2
    assert f"cloudtune train: error: {bad}: config training.epoch: unknown key" in capsys.readouterr().err


def test_loaders_read_by_key_and_by_attribute():
    s = config.load_index()
    assert s.segments is s["segments"] and s.publish.index_kinds == s["publish"].index_kinds
    t = config.load_train()
    assert set(t) == {"embedder", "training", "splits"} and isinstance(t.training, TrainSettings)
    assert yaml.safe_load(yaml.safe_dump(t.raw)) == t.raw  # plain YAML types: a run stores it as its resolved config
    assert config.load_airflow().run.dag_id == "audio_retrieval" and config.load_eval().evaluation.catalog_vae is True
    with pytest.raises(AttributeError, match="config has no section 'bogus'"):
        _ = s.bogus


def test_defaults_are_the_configured_values_with_overrides(monkeypatch):
    assert config.defaults(TrainSettings) == config.load_train().training
    small = config.defaults(RVQSettings, levels=4, codebook_size=None)  # None keeps the configured value
    assert small.levels == 4 and small.codebook_size == config.load_pipeline().rvq.codebook_size
    monkeypatch.setenv("CLOUDTUNE__RVQ__KMEANS_ITERS", "3")
    assert config.defaults(RVQSettings).kmeans_iters == 3
    with pytest.raises(ConfigError, match="^argument: config rvq.levels: expected int, got 'many'$"):
        config.defaults(RVQSettings, levels="many")
    with pytest.raises(ConfigError, match="config rvq.level: unknown key"):
        config.defaults(RVQSettings, level=4)
    with pytest.raises(TypeError, match="dict: not a settings class"):
        config.defaults(dict)


def test_every_settings_class_has_one_home():
    assert len(config.HOMES) == len(config.SECTION_FILE)
    for cls, (file, section) in config.HOMES.items():
        assert config.FILES[file][section] is cls
        assert config.defaults(cls) == config.section(cls, config.load(file), section)


def test_names_are_the_lists_the_code_accepts():
    import torch

    from pipeline.audio.degrade import STEPS
    from pipeline.cli import build_parser
    from pipeline.devices import resolve_dtype

    assert all(isinstance(resolve_dtype(name, "cpu"), torch.dtype) for name in names.DTYPES)
    assert tuple(names.DEGRADATION_KINDS) == tuple(STEPS)  # every kind the grammar takes is one degrade applies
    with pytest.raises(ValueError, match="wav2vec2.dtype 'int8': expected one of auto, float32, bfloat16, float16"):
        resolve_dtype("int8", "cpu", "wav2vec2.dtype")
    embed = build_parser()._subparsers._group_actions[0].choices["embed"]
    choices = {a.dest: a.choices for a in embed._actions if a.choices}
    assert tuple(choices["device"]) == names.DEVICES and tuple(choices["dtype"]) == names.DTYPES


def test_explicit_overrides_win_and_settings_are_frozen():
    s = config.section(AudioSettings, config.load(), "audio", sample_rate=16000, target_rms_dbfs=None)
    assert s.sample_rate == 16000 and s.target_rms_dbfs == -20.0
    with pytest.raises(FrozenInstanceError):
        s.sample_rate = 1


def test_home_and_db_url_defaults(home):
    assert paths.home() == home.resolve() and home.is_dir()
    assert config.db_url() == f"sqlite:///{home.resolve() / 'cloudtune.db'}"


def test_the_canonical_sample_rate_is_read_from_the_config(monkeypatch):
    """No module restates audio.sample_rate: the steps and the CLI read the canonical rate of ingested audio from the config
    and hand it to the embedders (the mel-stats baseline assumed 24000 whatever the config said)."""
    from pipeline.embed.registry import get_embedder
    from pipeline.steps.retrieval import embedder_settings

    assert get_embedder("mel-stats", **embedder_settings()).sample_rate == 24000
    monkeypatch.setenv("CLOUDTUNE__AUDIO__SAMPLE_RATE", "16000")
    mel = get_embedder("mel-stats", **embedder_settings())
    assert mel.sample_rate == 16000 and mel.manifest()["sample_rate"] == 16000
    with pytest.raises(ValueError, match="no sample_rate given: pass the catalog's audio.sample_rate"):
        get_embedder("mel-stats")


def test_shipped_query_plans_cover_the_issue_and_parse():
    from pipeline.audio.degrade import parse

    q = config.load_eval().queries
    assert q.plan == "full" and q.query_plan is q.plans["full"] and q.background_dir == "var/background/eval"
    full, demo = q.plans["full"], q.plans["demo"]
    assert full.lengths_s == (1.0, 2.0, 3.0, 5.0, 10.0) and 2 <= len(demo.lengths_s) <= 3 and len(demo.sets) <= 8
    steps = {name: parse(spec).steps for plan in (full, demo) for name, spec in plan.sets.items()}  # every spec parses
    single = {(s[0].kind, s[0].value) for name, s in steps.items() if name in full.sets and len(s) == 1}
    for color in ("white", "pink", "brown"):
        assert {(color, float(db)) for db in (-5, 0, 5, 10)} <= single
    assert {("background", 0.0), ("background", 5.0), ("telephone", None), ("lowpass", 3000.0), ("gain", -12.0)} <= single
    assert {("speed", f) for f in (0.95, 0.98, 1.02, 1.05)} <= single
    assert len({v for k, v in single if k == "reverb"}) >= 2 and {k for k, _ in single} & {"mp3", "ogg"}
    chains = [[step.kind for step in full_steps] for name, full_steps in steps.items() if name in full.sets and len(full_steps) > 1]
    assert len(chains) >= 2 and all("reverb" in chain for chain in chains)


@pytest.mark.parametrize("var,value,message", [
    ("CLOUDTUNE__QUERIES__PLAN", "nope", "config queries.plan: 'nope' is not one of the plans full, demo"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [2], sets: {a/b: clean}}}",
     r"config queries.plans.full.sets.a/b: a set name is one word without '/' \(query sets are named <length>s/<name>\)"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [2]}}", "config queries.plans.full.sets: missing key"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [2], sets: {a: clean}, extra: 1}}", "config queries.plans.full.extra: unknown key"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [0], sets: {a: clean}}}",
     r"config queries.plans.full.lengths_s: expected one or more lengths in seconds above 0, got \[0.0\]"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [x], sets: {a: clean}}}",
     r"config queries.plans.full.lengths_s: expected tuple\[float, ...\], got \['x'\]"),
    ("CLOUDTUNE__QUERIES__PLANS", "[full]", r"config queries.plans: expected dict\[str, QueryPlan\], got \['full'\]"),
    ("CLOUDTUNE__QUERIES__PLANS", "{full: {lengths_s: [2], sets: {p: 'pink:loud'}}}",
     "config queries.plans.full.sets.p: degradation spec 'pink:loud': 'pink:loud': SNR 'loud' is not a number from -30 to 60 dB$"),
])
def test_query_plans_are_checked_with_one_line_errors(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=f"^{var}: {message}"):
        config.load_eval()


def test_a_query_plan_can_be_chosen_per_call_and_overridden_whole(monkeypatch):
    data = config.load("eval")
    assert config.section(config.QuerySettings, data, "queries", plan="demo").query_plan.lengths_s == (2.0, 5.0)
    with pytest.raises(ConfigError, match="^argument: config queries.plan: 'tiny' is not one of the plans full, demo$"):
        config.section(config.QuerySettings, data, "queries", plan="tiny")
    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLANS", "{tiny: {lengths_s: [2], sets: {clean: clean}}}")
    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLAN", "tiny")
    assert config.load_eval().queries.query_plan == config.QueryPlan((2.0,), {"clean": "clean"})


def test_the_run_forms_training_defaults_are_the_librarys_and_follow_its_overrides(monkeypatch):
    dag = config.load_airflow().dag
    assert dag.epochs == config.load_train().training.epochs and dag.embedding_dim == config.load_train().embedder.embedding_dim
    assert dag.fingerprint_epochs == config.load_fingerprint().fingerprint_training.epochs
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_TRAINING__EPOCHS", "7")
    assert config.load_airflow().dag.fingerprint_epochs == 7
    monkeypatch.setenv("CLOUDTUNE__DAG__FINGERPRINT_EPOCHS", "5")  # the form's own value wins
    assert config.load_airflow().dag.fingerprint_epochs == 5
    assert dag.train_catalogs == () and config.load_fingerprint().fingerprint_training.train_catalogs == ()
    monkeypatch.setenv("CLOUDTUNE__FINGERPRINT_TRAINING__TRAIN_CATALOGS", "[music]")
    assert config.load_airflow().dag.train_catalogs == ("music",)

"""Composition and validation of the study config: the schema, params.yaml, sweeps planned up front.

The table of bad inputs (each refused with one line, nothing touched) is tests/test_preflight.py's CASES,
run through the real entry point.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, python_module, run
from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.sweep.jobs import plan

pytestmark = pytest.mark.usefixtures("at_repo")


def test_bad_value_in_one_job_of_a_sweep_fails_the_whole_sweep_up_front():
    with pytest.raises(ConfigError, match="bogus"):
        plan(["init=zeros,bogus", "seed=0,1"], multirun=True, verify_data=False)


def test_sweep_override_without_multirun_is_refused():
    with pytest.raises(ConfigError, match="--multirun"):
        plan(["init=zeros,he_uniform"], multirun=False, verify_data=False)


@pytest.mark.slow
def test_default_sweep_is_defined_once_in_params_yaml():
    jobs = plan([], multirun=True, verify_data=False)
    assert [(j.init, j.seed) for j in jobs] == [
        (init, seed)
        for init in ("zeros", "random_normal", "glorot_uniform", "he_uniform")
        for seed in range(5)
    ]
    assert {j.run_dir.as_posix() for j in jobs} == {f"runs/{j.init}/seed_{j.seed}" for j in jobs}


def test_command_line_overrides_replace_the_default_sweep():
    jobs = plan(
        ["init=zeros,he_uniform", "seed=0,1", "trainer.max_epochs=1"], multirun=True, verify_data=False
    )
    assert [(j.init, j.seed) for j in jobs] == [
        ("zeros", 0),
        ("zeros", 1),
        ("he_uniform", 0),
        ("he_uniform", 1),
    ]


@pytest.mark.parametrize("experiment", [None, "depth", "glorot2010", "he2015", "schoenholz2017", "saxe2014"])
def test_every_job_is_named_train_so_its_log_is_the_run_folders_train_log(experiment):
    """Hydra names a job after the task function's file unless the config names it; that file is
    initstudy/train/app.py, and an ``app.log`` would be a file the run-folder contract does not own, hashed
    into dvc.lock with its timestamps."""
    overrides = [f"experiment={experiment}"] if experiment else []
    hydra = compose_config(overrides, return_hydra_config=True).hydra
    assert hydra.job.name == "train"
    assert str(hydra.job_logging.handlers.file.filename).endswith("/train.log")


def test_default_config_is_valid_and_matches_the_seed_notebook():
    cfg = compose_config([])
    validate(cfg)
    assert list(cfg.model.hidden_sizes) == [256, 128] and cfg.model.activation == "relu"
    assert (
        cfg.optimizer.lr == 0.001
        and cfg.optimizer.eps == 1e-7
        and cfg.optimizer._target_ == "torch.optim.Adam"
    )
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 10 and cfg.data.train_size is None


@pytest.mark.parametrize("option", ["adam", "adam_keras", "sgd"])
def test_every_optimizer_option_composes_and_validates(option):
    validate(compose_config([f"optimizer={option}"]))


@pytest.mark.slow
def test_cli_refuses_bad_input_before_any_file_or_run(tmp_path):
    """Through the real entry point: exit 2, one stderr line, no run folder, no MLflow store."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "conf", repo / "conf")
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")
    for overrides in (["trainer.max_epochs=0"], ["--multirun", "init=zeros,nope"]):
        result = run(python_module("initstudy.train", *overrides), repo, check=False)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert not (repo / "runs").exists() and not (repo / "mlflow.db").exists()


def test_malformed_params_yaml_is_one_line(tmp_path, monkeypatch):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "params.yaml").write_text("defaults:\n  - init: zeros\n seed: [0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        compose_config([])
    assert "params.yaml is not valid YAML at line" in str(caught.value) and "\n" not in str(caught.value)
    Path("params.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        compose_config([])


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["seed={a:1}"], "invalid seed={'a': 1}: must be an integer in [0, 4294967295] (Lightning's seed range)"),
        (["model.hidden_sizes=abc"], "invalid model.hidden_sizes='abc': must be a non-empty list of positive integers, e.g. [256,128]"),
        (["model.hidden_sizes=[256,abc]"], "invalid model.hidden_sizes='abc': must be a non-empty list of positive integers, e.g. [256,128]"),
        (["trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch'; allowed in trainer: _target_, accelerator, fast_dev_run, gradient_clip_algorithm, gradient_clip_val, limit_test_batches, limit_train_batches, log_every_n_steps, max_epochs, precision"),
        (["sed=1"], "unknown config key 'sed' (prefix with + only to add a new key on purpose)"),
        (["init=foo"], "unknown init 'foo'; allowed: gaussian, glorot_normal, glorot_uniform, he_normal, he_uniform, lecun_normal, lecun_uniform, lsuv, orthogonal, orthogonal_critical, random_normal, standard, torch_default, truncated_normal, zeros"),
    ],
)  # fmt: skip
def test_an_override_the_schema_refuses_is_named_with_its_value(overrides, line):
    """Key and value come from the OmegaConf error's attributes: a value its message cannot show as YAML (a
    mapping) or does not show at all (a string given for a list) is still named. The trainer node takes
    Lightning's optional keys (schema.OPTIONAL_TRAINER_KEYS), so an unknown one is refused by the validation."""
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(overrides))
    assert str(caught.value) == line


def test_a_reworded_omegaconf_message_gives_the_same_line():
    """The one line is built from the error's attributes (full_key, value), not from OmegaConf's wording."""
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ValidationError

    from initstudy.config.compose import one_line

    refused = ValidationError("a reworded message with no key and no value in it")
    refused.full_key, refused.value = "trainer.max_epochs", "ten"
    error = ConfigCompositionException("Error merging override trainer.max_epochs=ten")
    error.__cause__ = refused
    assert one_line(error) == "invalid trainer.max_epochs='ten': must be a positive integer"
    unknown = ConfigAttributeError("reworded too")
    unknown.full_key = "trainer.max_epoch"
    error = ConfigCompositionException("the override failed")
    error.__cause__ = unknown
    assert one_line(error) == (
        "unknown config key 'trainer.max_epoch' (prefix with + only to add a new key on purpose)"
    )


def test_a_resolvers_own_error_is_its_first_line():
    """init=orthogonal_critical's gain comes from a resolver; what it raised is shown, not OmegaConf's wrapping."""
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(["init=orthogonal_critical", "model.activation=gelu"]))
    assert str(caught.value) == (
        "invalid init for 'orthogonal_critical': model.activation=gelu has no critical gain: "
        "init=orthogonal_critical allows model.activation=relu,leaky_relu,tanh,softsign,linear"
    )


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("\nseed: 0", "\nseed: abc", ["invalid seed='abc' (in params.yaml)", "integer"]),
        ("\nseed: 0", "\nseed: 0\nsed: 1", ["unknown config key 'sed'", "allowed top-level keys", "seed"]),
    ],
)  # fmt: skip
def test_a_bad_value_or_key_in_params_yaml_names_params_yaml(tmp_path, monkeypatch, old, new, words):
    """params.yaml lies at the root, not in conf/; an unknown top-level key lists the top-level keys."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    text = (REPO / "params.yaml").read_text()
    assert old in text
    (tmp_path / "params.yaml").write_text(text.replace(old, new, 1))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        validate(compose_config([]))
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


# ---- the schema (initstudy.config.schema): types from Hydra structured configs, values from the YAML ------------


def test_schema_holds_types_and_checks_and_no_values():
    """A value lives in one place (the YAML); the schema only says what it must be."""
    from dataclasses import MISSING as NO_DEFAULT
    from dataclasses import fields

    from omegaconf import MISSING

    from initstudy.config import schema

    for section in (schema.StudyConfig, *schema.SECTION_SCHEMAS.values()):
        for field in fields(section):
            assert field.default in (MISSING, NO_DEFAULT), (section.__name__, field.name, field.default)


def test_schema_and_yaml_name_the_same_keys():
    from initstudy.config import schema

    cfg = compose_config([])
    assert set(schema.top_level_keys()) == set(cfg)
    for section in schema.SECTION_SCHEMAS:
        assert set(schema.section_keys(section)) == set(cfg[section]), section


@pytest.mark.parametrize(
    ("group_file", "old", "new", "words"),
    [
        ("trainer/default.yaml", "log_every_n_steps: 50", "log_every_n_steps: fifty", ["trainer.log_every_n_steps='fifty'", "positive integer"]),
        ("trainer/default.yaml", "log_every_n_steps: 50", "log_every_n_step: 50", ["log_every_n_step"]),
        ("data/mnist.yaml", "eval_batch_size: 10000", "eval_batch_size: [1]", ["data.eval_batch_size"]),
        ("data/mnist.yaml", "eval_batch_size: 10000", "eval_batch_size: {a: 1}", ["data.eval_batch_size={'a': 1}", "(in conf/data/mnist.yaml)"]),
        ("module/default.yaml", "stop_on_divergence: true", "stop_on_divergence: perhaps", ["module.stop_on_divergence='perhaps'", "true or false"]),
        ("module/default.yaml", "val_steps: [1, 2, 5, 10, 20, 50]", "val_steps: [5, 2]", ["module.val_steps", "ascending"]),
        ("module/default.yaml", "val_steps: [1, 2, 5, 10, 20, 50]", "val_steps: [0, 2]", ["module.val_steps", "positive"]),
    ],
)  # fmt: skip
def test_a_group_option_with_a_bad_value_or_key_fails_composition(
    tmp_path, monkeypatch, group_file, old, new, words
):
    """The YAML files are validated against the schema too, not only overrides: a typo in a group option is
    refused when the config is composed, with one line."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    path = tmp_path / "conf" / group_file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        validate(compose_config([]))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)

"""The seed notebook's protocol (conf/experiment/notebook.yaml) and its report (initstudy.report.papers.notebook):
the preset composes to the notebook's settings and passes the pre-flight, a tiny sweep of it trains without a
validation split and reports end to end, and each verdict follows from its rule in
conf/experiment/claims/notebook.yaml (numbers fabricated here, so that every verdict is exercised)."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import yaml

from conftest import REPO, edit_params, python_module, run
from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.report.papers import notebook
from initstudy.report.papers.claims import AGREES, COLUMNS, NOT_TESTABLE, PARTS, UNTESTED, VERDICTS
from initstudy.report.papers.rules import ClaimsFileError
from initstudy.report.stats import SEED_NOTEBOOK

# A tiny sweep of the preset: its four initializers and five seeds, at toy sizes (600 synthetic images).
TINY = ["trainer.max_epochs=1", "data.train_size=256", "model.hidden_sizes=[16,8]"]


def test_the_preset_is_the_notebooks_protocol():
    cfg = compose_config(["experiment=notebook"], return_hydra_config=True)
    assert cfg.optimizer._target_ == "initstudy.nn.keras_adam.KerasAdam"
    assert (cfg.optimizer.lr, cfg.optimizer.eps) == (0.001, 1e-7)
    assert (cfg.data.batch_size, cfg.data.train_size, cfg.data.val_size) == (64, None, 0)
    assert list(cfg.model.hidden_sizes) == [256, 128] and cfg.model.activation == "relu"
    assert cfg.trainer.max_epochs == 10
    assert cfg.hydra.sweep.dir == "runs_notebook"
    params = cfg.hydra.sweeper.params
    assert params.init.split(",") == list(notebook.INITS)
    assert len(params.seed.split(",")) >= 5


def test_the_preset_reads_nothing_the_default_study_may_change(study_root):
    """Every setting the notebook fixes comes from the preset: a new default in params.yaml (learning rate,
    optimizer, batch, epochs, network, validation split) must not move the notebook's runs."""
    base = compose_config(["experiment=notebook"])
    edit_params(study_root, optimizer__lr=0.01, data__batch_size=128, data__val_size=5000,
                trainer__max_epochs=3, model__hidden_sizes=[64])  # fmt: skip
    params = study_root / "params.yaml"
    params.write_text(params.read_text().replace("optimizer: adam", "optimizer: sgd"))
    assert compose_config([]).optimizer._target_ == "torch.optim.SGD"  # the edit took
    moved = compose_config(["experiment=notebook"])
    for key in ("optimizer", "data", "trainer", "model", "module"):
        assert moved[key] == base[key], key


@pytest.mark.parametrize("init", notebook.INITS)
def test_every_job_of_the_sweep_passes_the_preflight(init):
    for seed in compose_config(
        ["experiment=notebook"], return_hydra_config=True
    ).hydra.sweeper.params.seed.split(","):
        validate(compose_config(["experiment=notebook", f"init={init}", f"seed={seed}"]))


def test_the_claims_hold_the_notebooks_printed_numbers():
    rules = notebook.notebook_rules(REPO)
    assert list(rules) == list(notebook.INITS)
    for init, rule in rules.items():
        assert notebook.counted(rule.value) == SEED_NOTEBOOK[init]
        assert repr(rule.value) in rule.paper  # the number as the notebook printed it


def _runs(accuracies: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"init": init, "seed": seed, "status": "complete", "test/acc": acc}
                         for init, values in accuracies.items() for seed, acc in enumerate(values)])  # fmt: skip


def test_each_verdict_follows_the_prediction_interval_and_the_seeds():
    rules = notebook.notebook_rules(REPO)
    runs = _runs({
        "zeros": [0.1135] * 5,  # every seed the majority class: a point interval, the notebook's count on it
        "random_normal": [0.9790, 0.9800, 0.9795, 0.9805, 0.9785],  # around the notebook's 0.9795
        "glorot_uniform": [0.9770, 0.9775, 0.9780, 0.9772, 0.9778],  # far below the notebook's 0.9836
        "he_uniform": [0.9785, 0.9790, 0.9780],  # three seeds: fewer than the rule needs
    })  # fmt: skip
    table = notebook.intervals(runs, rules).set_index("init")
    assert table.loc["zeros", "inside"] and table.loc["zeros", "verdict"] == AGREES
    assert table.loc["random_normal", "verdict"] == AGREES
    assert table.loc["random_normal", "reading"] == notebook.CONSISTENT
    assert not table.loc["glorot_uniform", "inside"] and table.loc["glorot_uniform", "verdict"] == PARTS
    assert table.loc["glorot_uniform", "reading"] == notebook.INCONSISTENT
    assert table.loc["he_uniform", "inside"] and table.loc["he_uniform", "verdict"] == NOT_TESTABLE
    claims = notebook.claims_of(table.reset_index(), rules)
    assert [c.verdict for c in claims] == [AGREES, AGREES, PARTS, NOT_TESTABLE]
    assert "3 seed(s) where the rule needs 5" in claims[3].why and "'agrees'" in claims[3].why


def test_the_interval_is_widened_by_half_a_test_image_only():
    """A point interval (every seed the same count) holds the notebook's number only at the same count."""
    rules = notebook.notebook_rules(REPO)
    one_more = _runs({"zeros": [0.1136] * 5})
    assert notebook.intervals(one_more, {"zeros": rules["zeros"]}).verdict.tolist() == [PARTS]


def test_an_initializer_without_runs_is_not_tested():
    rules = notebook.notebook_rules(REPO)
    table = notebook.intervals(_runs({"zeros": [0.1135] * 5}), rules)
    assert table.set_index("init").loc["he_uniform", "verdict"] == UNTESTED
    assert math.isnan(table.set_index("init").loc["he_uniform", "pi95_low"])


@pytest.fixture
def claims_root(tmp_path):
    """A root holding a copy of the claims folder, for editing."""
    shutil.copytree(REPO / "conf/experiment/claims", tmp_path / "conf/experiment/claims")
    return tmp_path


def _edit_claim(root, claim_id: str, **fields) -> None:
    path = root / "conf/experiment/claims/notebook.yaml"
    content = yaml.safe_load(path.read_text())
    for claim in content["claims"]:
        if claim["id"] == claim_id:
            claim.update(fields)
    path.write_text(yaml.safe_dump(content, sort_keys=False))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"value": 98.36}, ["notebook_glorot_uniform", "value 98.36", "(0, 1]"]),
        ({"value": "0.9836"}, ["notebook_glorot_uniform", "value '0.9836'", "(0, 1]"]),
        ({"value": None}, ["notebook_glorot_uniform", "value None"]),
        ({"rule": "consistent if inside the 90 % prediction interval"}, ["95 %", "0.00005"]),
        ({"id": "glorot"}, ["no claim 'notebook_glorot_uniform'"]),
    ],
)
def test_a_bad_claim_is_refused_in_one_line(claims_root, fields, words):
    _edit_claim(claims_root, "notebook_glorot_uniform", **fields)
    with pytest.raises(ClaimsFileError) as refused:
        notebook.notebook_rules(claims_root)
    message = str(refused.value)
    assert "\n" not in message and str(claims_root / "conf/experiment/claims/notebook.yaml") in message
    for word in words:
        assert word in message, (word, message)


def test_the_report_refuses_a_bad_claim_before_reading_a_run(claims_root, tmp_path):
    _edit_claim(claims_root, "notebook_zeros", value=1135)
    out = tmp_path / "out"
    result = run(python_module("initstudy.report", "--paper", "notebook", "--runs", str(tmp_path / "no-runs"),
                               "--out", str(out)), claims_root, check=False,
                 env={"INITSTUDY_ROOT": str(claims_root)})  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "notebook_zeros" in lines[0] and "value 1135" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_a_tiny_sweep_trains_without_validation_and_reports(synthetic_data_repo):
    repo = synthetic_data_repo
    run(python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", "experiment=notebook", *TINY),
        repo, timeout=900)  # fmt: skip
    runs = sorted((repo / "runs_notebook").glob("*/seed_*/metrics.json"))
    assert len(runs) == 4 * 5
    for path in runs:
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        assert config["data"]["val_size"] == 0 and config["optimizer"]["_target_"].endswith("KerasAdam")
        history = pd.read_csv(path.parent / "history.csv")
        assert not history.metric.str.startswith("val/").any()  # no validation split: nothing measured on one
        # The reported accuracy is the final weights' on the test set, as the notebook's model.evaluate: the
        # curve's last test pass (after the last epoch) says the same.
        last_pass = history[history.metric == "test/acc"].sort_values("step").value.iloc[-1]
        assert json.loads(path.read_text())["test/acc"] == pytest.approx(last_pass, abs=1e-12)
    out = repo / "reports" / "notebook"
    result = run(python_module("initstudy.report", "--paper", "notebook", "--runs", "runs_notebook",
                               "--out", str(out)), repo)  # fmt: skip
    table = pd.read_csv(out / "paper_vs_ours.csv")
    assert list(table.columns) == list(COLUMNS) and len(table) == 4
    assert set(table.verdict) <= set(VERDICTS) and table.rule.notna().all()
    intervals = pd.read_csv(out / "tables" / "prediction_intervals.csv")
    assert (out / "tables" / "runs.csv").is_file()
    assert list(intervals.columns) == list(notebook.COLUMNS)
    assert intervals.init.tolist() == list(notebook.INITS) and (intervals.n_seeds == 5).all()
    assert intervals.verdict.isin([AGREES, PARTS]).all() and intervals.pi95_low.notna().all()
    report = (out / "report.md").read_text()
    assert "## Paper and ours, side by side" in report and "## Per initializer" in report
    assert (out / "figures" / "notebook_vs_intervals.png").is_file()
    for row in table.itertuples():
        assert f"{row.verdict:>10}: {row.claim}" in result.stdout

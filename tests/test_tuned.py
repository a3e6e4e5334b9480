"""The tuned comparison (conf/experiment/lr_grid.yaml, tuned.yaml; initstudy.report.choose_lr and
initstudy.report.papers.tuned): the presets' grid and seeds, each rate chosen on validation only (a tie to the
smaller rate), the arms the tuned preset composes (conf/tuned_arm/<init>_{chosen,fixed}.yaml, the chosen ones
written by choose_lr), one-line refusals of a bad file, an unknown arm or a run of another arm, the claims'
verdicts on fabricated tables, and the tiny chain end to end through DVC."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, dvc, run
from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.core.errors import ConfigError
from initstudy.report.choose_lr import (
    ChosenFileError,
    choose,
    chosen_path,
    chosen_rates,
    grid_table,
    rate_text,
    read_chosen,
    write_chosen,
)
from initstudy.report.papers import tuned
from initstudy.report.papers.claims import AGREES, NOT_TESTABLE, PARTS, VERDICTS
from initstudy.report.papers.rules import ClaimsFileError
from initstudy.runs.results import RunFileError

TRAINED = ["random_normal", "glorot_uniform", "he_uniform"]
ARM_OPTIONS = [f"{init}_{arm}" for init in TRAINED for arm in (tuned.TUNED, tuned.FIXED)]


def _sweep(preset: str) -> dict[str, list[str]]:
    params = compose_config([f"experiment={preset}"], return_hydra_config=True).hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items()}


def test_the_grid_spans_five_log_spaced_rates_around_1e_3_for_the_trained_initializers():
    sweep = _sweep("lr_grid")
    rates = sorted(float(v) for v in sweep["optimizer.lr"])
    assert len(rates) >= 5 and 0.001 in rates
    steps = np.diff(np.log10(rates))
    assert np.allclose(steps, 0.5, atol=0.03), rates  # log-spaced: 1, 3, 10, ... (about half a decade each)
    assert sweep["init"] == TRAINED and "zeros" not in sweep["init"]
    assert sweep["seed"] == ["0", "1", "2"]


def test_the_tuned_sweep_uses_20_fresh_seeds_in_both_arms_on_the_grids_cell():
    sweep, grid = _sweep("tuned"), _sweep("lr_grid")
    assert (
        sweep["tuned_arm"] == ARM_OPTIONS
    )  # each arm names its initializer: the DVC stage drops params' init
    assert len(sweep["seed"]) >= 20 and not set(sweep["seed"]) & set(grid["seed"])
    cell = ("model", "data", "trainer", "module")
    a = compose_config(["experiment=tuned", "tuned_arm=he_uniform_fixed"])
    b = compose_config(["experiment=lr_grid", "optimizer.lr=0.001"])
    assert all(a[key] == b[key] for key in cell) and a.optimizer == b.optimizer
    default = compose_config([])
    assert a.model == default.model and a.data.batch_size == default.data.batch_size
    assert a.optimizer._target_ == default.optimizer._target_


def _grid(values: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    rows = [{"init": init, "lr": lr, "seed": seed, "val_acc": acc, "test_acc": 0.5}
            for (init, lr), accs in values.items() for seed, acc in enumerate(accs)]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_rate_with_the_best_mean_validation_accuracy_is_chosen_never_the_test_set():
    table = _grid({("a", 0.001): [0.90, 0.91, 0.92], ("a", 0.003): [0.95, 0.80, 0.99],
                   ("b", 0.001): [0.97, 0.97, 0.97], ("b", 0.01): [0.96, 0.96, 0.96]})  # fmt: skip
    table.loc[(table.init == "b") & (table.lr == 0.01), "test_acc"] = 0.99  # the test set must not matter
    choice = choose(table)
    assert chosen_rates(choice) == {"a": 0.003, "b": 0.001}
    row = choice[(choice.init == "a") & (choice.lr == 0.003)].iloc[0]
    assert (row.val_acc_min, row.val_acc_max, row.n_seeds) == (0.80, 0.99, 3)
    assert math.isclose(row.val_acc_mean, (0.95 + 0.80 + 0.99) / 3)


def test_a_tie_goes_to_the_smaller_rate():
    # equal sums in another order: the same mean up to rounding, a tie
    table = _grid(
        {("a", 0.01): [0.93, 0.95, 0.94], ("a", 0.001): [0.95, 0.94, 0.93], ("a", 0.0003): [0.1, 0.1, 0.1]}
    )
    assert chosen_rates(choose(table)) == {"a": 0.001}


def test_rates_with_different_seeds_or_incomplete_runs_are_refused_in_one_line():
    table = _grid({("a", 0.001): [0.9, 0.9, 0.9], ("a", 0.003): [0.9, 0.9]})
    with pytest.raises(RunFileError, match="different seeds") as caught:
        choose(table)
    assert "\n" not in str(caught.value)
    runs = pd.DataFrame({"init": ["a"], "seed": [0], "status": ["missing"], "run_dir": ["runs_lr_grid/x"]})
    with pytest.raises(RunFileError, match="not complete"):
        grid_table(runs)


def test_the_chosen_files_round_trip_byte_for_byte_and_every_rate_reads_back_as_the_same_float(tmp_path):
    rates = {"random_normal": 0.0003, "glorot_uniform": 0.001, "he_uniform": 1e-05}
    paths = write_chosen(tmp_path, rates, "runs_lr_grid/")
    assert paths == [chosen_path(tmp_path, init) for init in rates]
    first = {p.name: p.read_bytes() for p in paths}
    write_chosen(tmp_path, rates, "runs_lr_grid/")
    assert {p.name: p.read_bytes() for p in paths} == first  # byte-deterministic
    text = (tmp_path / "he_uniform_chosen.yaml").read_text()
    assert text.startswith("# @package _global_\n# Generated by the DVC stage choose_lr")
    assert "  - override /init: he_uniform\n" in text and text.endswith("  lr: 0.00001\n")
    assert {init: read_chosen(chosen_path(tmp_path, init), init) for init in rates} == rates
    for lr in (3e-4, 1e-05, 0.1 + 0.2, 1 / 3, 2.5e-3, 0.03):  # repr-exact: YAML reads back the same float
        assert yaml.safe_load(f"lr: {rate_text(lr)}")["lr"] == lr
    assert rate_text(3e-4) == "0.0003" and rate_text(1e-05) == "0.00001"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("defaults:\n  - override /init: he_uniform\n", "is not a positive learning rate"),
        (
            "defaults:\n  - override /init: he_uniform\noptimizer:\n  lr: 0\n",
            "is not a positive learning rate",
        ),
        (
            "defaults:\n  - override /init: he_uniform\noptimizer:\n  lr: '3e-4'\n",
            "not a positive learning rate",
        ),
        (
            "defaults:\n  - override /init: zeros\noptimizer:\n  lr: 0.001\n",
            "must be [override /init: he_uniform]",
        ),
        ("- 0.001\n", "must hold defaults"),
        ("optimizer: [0.001\n", "unreadable"),
    ],
)
def test_a_bad_chosen_file_is_refused_in_one_line(tmp_path, text, words):
    path = tmp_path / "he_uniform_chosen.yaml"
    path.write_text(text)
    with pytest.raises(ChosenFileError) as caught:
        read_chosen(path, "he_uniform")
    assert words in str(caught.value) and "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_the_committed_arms_select_their_initializer_and_the_fixed_ones_train_at_1e_3():
    folder = REPO / "conf/tuned_arm"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(ARM_OPTIONS)
    for init in TRAINED:
        assert read_chosen(folder / f"{init}_fixed.yaml", init) == 0.001
        read_chosen(chosen_path(folder, init), init)
        assert "Generated by the DVC stage choose_lr" in chosen_path(folder, init).read_text()


def test_the_tuned_preset_composes_each_initializers_chosen_rate(study_root):
    rates = {"random_normal": 0.003, "glorot_uniform": 0.001, "he_uniform": 0.01}
    write_chosen(study_root / "conf/tuned_arm", rates, "runs_lr_grid/")
    for init, lr in rates.items():
        cfg = compose_config(["experiment=tuned", f"tuned_arm={init}_chosen"])
        validate(cfg)
        assert cfg.init.name == init and cfg.optimizer.lr == lr
        fixed = compose_config(["experiment=tuned", f"tuned_arm={init}_fixed"])
        validate(fixed)
        assert fixed.init.name == init and fixed.optimizer.lr == 0.001
        assert {k: v for k, v in cfg.items() if k != "optimizer"} == {
            k: v for k, v in fixed.items() if k != "optimizer"
        }


def test_an_unknown_arm_is_refused_in_one_line_before_training(tmp_path):
    with pytest.raises(ConfigError, match="unknown tuned_arm 'foo_chosen'") as caught:
        compose_config(["experiment=tuned", "tuned_arm=foo_chosen"])
    assert "\n" not in str(caught.value)
    result = run([sys.executable, "-m", "initstudy.train", "--multirun", "experiment=tuned",
                  "~hydra.sweeper.params.init", "tuned_arm=foo_chosen", "seed=1",
                  f"hydra.sweep.dir={tmp_path / 'runs'}"], REPO, check=False, timeout=120)  # fmt: skip
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "'foo_chosen'" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_run_whose_arm_names_another_initializer_is_refused_in_one_line():
    runs = pd.DataFrame({"status": ["complete"], "group": ["tuned_arm=he_uniform_chosen"], "init": ["zeros"],
                         "run_dir": ["runs_tuned/x"], "seed": [100], "test/acc": [0.9]})  # fmt: skip
    with pytest.raises(
        RunFileError, match="'he_uniform_chosen' is not zeros_chosen or zeros_fixed"
    ) as caught:
        tuned.arm_runs(runs)
    assert "\n" not in str(caught.value)


# ---- the claims on fabricated tables --------------------------------------------------------------------


def test_the_claims_file_states_each_rules_value():
    found = tuned.rules()
    assert found[tuned.SURVIVE].value == 0.002 and found[tuned.SURVIVE].min_seeds == 20
    assert found[tuned.RATES_DIFFER].value == 0.001


def test_a_claims_file_without_a_rule_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "conf/experiment/claims"
    folder.mkdir(parents=True)
    content = yaml.safe_load((REPO / "conf/experiment/claims/tuned.yaml").read_text())
    content["claims"] = [c for c in content["claims"] if c["id"] != tuned.RATES_DIFFER]
    (folder / "tuned.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(ClaimsFileError, match="no claim 'chosen_rates_differ'") as caught:
        tuned.rules(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.001, 0.004, tuned.UP), (-0.004, -0.001, tuned.DOWN), (-0.001, 0.002, tuned.NO_ORDER)],
)
def test_a_direction_needs_the_95_interval_to_exclude_zero(low, high, expected):
    assert tuned.direction(low, high) == expected


def _pairs(tuned_verdicts: list[tuple[str, str]], seeds: int = 20) -> pd.DataFrame:
    """Both arms' pairs: at the fixed rate every pair 'not shown equivalent' with no order; tuned as given."""
    names = [
        ("random_normal", "glorot_uniform"),
        ("random_normal", "he_uniform"),
        ("glorot_uniform", "he_uniform"),
    ]
    rows = []
    for (a, b), (verdict, order) in zip(names, tuned_verdicts, strict=True):
        rows.append({"arm": tuned.FIXED, "init_a": a, "init_b": b, "n_seeds": seeds, "verdict": "not shown equivalent",
                     "direction": tuned.NO_ORDER})  # fmt: skip
        rows.append({"arm": tuned.TUNED, "init_a": a, "init_b": b, "n_seeds": seeds, "verdict": verdict,
                     "direction": order})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_conclusions_survive_when_every_pair_keeps_its_verdict_and_direction():
    rule = tuned.rules()[tuned.SURVIVE]
    same = [("not shown equivalent", tuned.NO_ORDER)] * 3
    kept = tuned.survival(_pairs(same))
    assert kept.same.all() and tuned.survive_claim(kept, rule).verdict == AGREES
    assert "survive tuning" in tuned.conclusion(kept, AGREES)


@pytest.mark.parametrize("change", [("equivalent", tuned.NO_ORDER), ("not shown equivalent", tuned.UP)])
def test_one_pair_that_changes_verdict_or_direction_parts(change):
    rule = tuned.rules()[tuned.SURVIVE]
    kept = tuned.survival(
        _pairs([("not shown equivalent", tuned.NO_ORDER), change, ("not shown equivalent", tuned.NO_ORDER)])
    )
    claim = tuned.survive_claim(kept, rule)
    assert claim.verdict == PARTS and "random_normal - he_uniform" in claim.ours
    assert "random_normal - he_uniform" in tuned.conclusion(kept, PARTS)


def test_fewer_seeds_than_the_rule_needs_is_not_testable():
    rule = tuned.rules()[tuned.SURVIVE]
    kept = tuned.survival(_pairs([("not shown equivalent", tuned.NO_ORDER)] * 3, seeds=5))
    assert tuned.survive_claim(kept, rule).verdict == NOT_TESTABLE


def test_chosen_rates_differ_agrees_only_when_one_rate_is_not_1e_3():
    rule = tuned.rules()[tuned.RATES_DIFFER]
    assert tuned.rates_claim({"a": 0.001, "b": 0.003}, 3, rule).verdict == AGREES
    assert tuned.rates_claim({"a": 0.001, "b": 0.001}, 3, rule).verdict == PARTS
    assert tuned.rates_claim({"a": 0.003}, 2, rule).verdict == NOT_TESTABLE


def test_the_docs_state_the_two_rules_with_the_claims_files_values():
    """docs/papers.md restates the rules; its numbers are those of conf/experiment/claims/tuned.yaml."""
    found = tuned.rules()
    survive, differ = found[tuned.SURVIVE], found[tuned.RATES_DIFFER]
    assert (tuned.short_rate(0.001), tuned.short_rate(0.0003)) == ("1e-3", "3e-4")
    text = " ".join((REPO / "docs/papers.md").read_text().split())
    fixed = tuned.short_rate(float(differ.value))
    assert (
        f"same equivalence verdict at ±{100 * float(survive.value):g} pp and the same direction tuned as at {fixed}"
        in text
    )
    assert f"It needs {survive.min_seeds} seeds per initializer and arm" in text
    assert f"a rate other than {fixed} for at least one initializer" in text
    assert f"It needs the grid's {differ.min_seeds} seeds per rate" in text


def test_a_tuned_run_at_another_rate_than_the_grids_choice_is_refused():
    table = pd.DataFrame({"arm": [tuned.TUNED, tuned.FIXED], "init": ["a", "a"], "lr": [0.003, 0.001],
                          "run_dir": ["runs_tuned/x", "runs_tuned/y"]})  # fmt: skip
    tuned.check_rates(table, {"a": 0.003}, 0.001)
    with pytest.raises(RunFileError, match=r"trained at lr 0\.003 but its arm.s rate is 0\.01") as caught:
        tuned.check_rates(table, {"a": 0.01}, 0.001)
    assert "\n" not in str(caught.value)
    with pytest.raises(RunFileError, match=r"y trained at lr 0\.001 but its arm.s rate is 0\.002"):
        tuned.check_rates(table, {"a": 0.003}, 0.002)  # the fixed arm against the claims file's rate


# ---- the tiny chain, end to end through DVC ---------------------------------------------------------------


def _shrink(path: Path, sweep: dict[str, str]) -> None:
    preset = yaml.safe_load(path.read_text())
    preset["data"] = {**preset["data"], "train_size": 256, "val_size": 100}
    preset["trainer"] = {**preset["trainer"], "max_epochs": 1}
    preset["model"] = {**preset["model"], "hidden_sizes": [16]}
    preset["hydra"]["sweeper"]["params"].update(sweep)
    path.write_text("# @package _global_\n" + yaml.safe_dump(preset, sort_keys=False))


@pytest.mark.slow
def test_the_tiny_chain_chooses_trains_and_reports(study_repo):
    """A grid of 2 rates x 2 initializers x 2 seeds, the choice written by its stage, 2 seeds per arm, the report
    (the download stage fetches the synthetic data first)."""
    repo = study_repo
    presets = repo / "conf/experiment"
    _shrink(
        presets / "lr_grid.yaml",
        {"optimizer.lr": "0.001,0.01", "init": "random_normal,he_uniform", "seed": "0,1"},
    )
    _shrink(
        presets / "tuned.yaml",
        {"tuned_arm": "random_normal_chosen,random_normal_fixed,he_uniform_chosen,he_uniform_fixed",
         "seed": "100,101"},
    )  # fmt: skip
    run(dvc("repro", "report_paper@tuned"), repo, timeout=1200)
    rates = {init: read_chosen(chosen_path(repo / "conf/tuned_arm", init), init)
             for init in ("random_normal", "he_uniform")}  # fmt: skip
    grid = pd.read_csv(repo / "reports/tuned/tables/lr_grid.csv")
    assert chosen_rates(grid) == rates and set(grid.lr) == {0.001, 0.01}
    runs = pd.read_csv(repo / "reports/tuned/tables/runs.csv")
    assert len(runs) == 8 and set(runs.seed) == {100, 101}
    for row in runs.itertuples():
        assert row.lr == (rates[row.init] if row.arm == tuned.TUNED else 0.001)
    gain = pd.read_csv(repo / "reports/tuned/tables/tuning_gain.csv")
    assert list(gain.init) == ["random_normal", "he_uniform"] and gain.n_seeds.eq(2).all()
    table = pd.read_csv(repo / "reports/tuned/paper_vs_ours.csv")
    assert (
        set(table.verdict) <= set(VERDICTS) and table.verdict.iloc[0] == NOT_TESTABLE
    )  # 2 seeds, rule needs 20
    text = (repo / "reports/tuned/report.md").read_text()
    assert "## The pairs at the fixed rate 1e-3" in text and "val_acc_by_lr.png" in text
    assert (repo / "reports/tuned/figures/val_acc_by_lr.png").stat().st_size > 0
    before = {p.name: p.read_bytes() for p in (repo / "reports/tuned").rglob("*") if p.is_file()}
    run(dvc("repro", "-f", "-s", "report_paper@tuned"), repo, timeout=600)
    after = {p.name: p.read_bytes() for p in (repo / "reports/tuned").rglob("*") if p.is_file()}
    assert before == after  # byte-deterministic (the bootstrap's generator is seeded)

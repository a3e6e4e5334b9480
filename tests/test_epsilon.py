"""The eps and width experiments (conf/experiment/epsilon.yaml, width.yaml) and their reports
(initstudy.report.papers.epsilon, width, arms): the presets compose to the depth sweep's boundary cells under
their optimizer arms, the cells are the depth report's boundary cells, each statistic is what its rule says
(paired by seed, SGD's rate chosen on validation only, the eps term's likelihood-ratio test), and a tiny sweep
trains and reports end to end. Numbers here are fabricated so that every verdict is exercised."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, python_module, run
from initstudy.config.compose import compose_config
from initstudy.config.validate import validate
from initstudy.report.papers import arms, epsilon, width
from initstudy.report.papers.claims import AGREES, COLUMNS, INCONCLUSIVE, PARTS, VERDICTS, Claim
from initstudy.report.papers.rules import ClaimsFileError, load


def _sweep(preset: str) -> dict[str, list[str]]:
    params = compose_config([f"experiment={preset}"], return_hydra_config=True).hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items()}


def test_the_cells_are_the_depth_reports_boundary_cells():
    """Every cell of the committed depth sweep where some seeds fail and some do not, and no other: a new depth
    result that moves the boundary shows here."""
    summary = pd.read_csv(REPO / "reports/depth/summary.csv")
    boundary = summary[(summary.n_failed_to_train > 0) & (summary.n_failed_to_train < summary.n_runs)]
    expected = {f"{r.activation}_{r.depth}_{r.init}" for r in boundary.itertuples()}
    assert set(_sweep("epsilon")["depth_cell"]) == expected
    assert {p.stem for p in (REPO / "conf/depth_cell").glob("*.yaml")} == expected


@pytest.mark.parametrize("cell", sorted(p.stem for p in (REPO / "conf/depth_cell").glob("*.yaml")))
def test_a_cell_sets_its_activation_depth_and_initializer(cell):
    activation, depth, init = cell.split("_", 2)
    cfg = compose_config(["experiment=epsilon", f"depth_cell={cell}"])
    assert (cfg.model.activation, cfg.model.depth, cfg.init.name) == (activation, int(depth), init)
    assert cfg.model.width == 128 and cfg.data.train_size == 10000 and cfg.trainer.max_epochs == 1


@pytest.mark.parametrize(
    ("arm", "target", "values"),
    [
        ("adam_keras_eps1e-7", "initstudy.nn.keras_adam.KerasAdam", {"eps": 1e-7, "lr": 0.001}),
        ("adam_eps1e-7", "torch.optim.Adam", {"eps": 1e-7, "lr": 0.001}),
        ("adam_eps1e-8", "torch.optim.Adam", {"eps": 1e-8, "lr": 0.001}),
        ("adam_eps1e-12", "torch.optim.Adam", {"eps": 1e-12, "lr": 0.001}),
        ("sgd_lr0.03", "torch.optim.SGD", {"lr": 0.03, "momentum": 0.9}),
    ],
)
def test_an_arm_changes_only_the_optimizer(arm, target, values):
    base = compose_config(["experiment=epsilon", "depth_cell=relu_10_standard"])
    cfg = compose_config(["experiment=epsilon", "depth_cell=relu_10_standard", f"optimizer_arm={arm}"])
    assert cfg.optimizer._target_ == target
    assert {key: cfg.optimizer[key] for key in values} == values
    for key in ("model", "init", "data", "trainer", "module"):
        assert cfg[key] == base[key], key
    validate(cfg)


@pytest.mark.parametrize("preset", ["epsilon", "width"])
def test_the_sweep_has_ten_seeds_and_leaves_the_initializer_to_the_cell(preset):
    sweep = _sweep(preset)
    assert sweep["seed"] == [str(s) for s in range(10)]
    # params.yaml sweeps four initializers; the DVC stage takes that axis out (its cells name one each)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][f"train_{preset}"]
    assert "'~hydra.sweeper.params.init'" in stage["cmd"]


def test_the_width_preset_crosses_two_depths_three_widths_and_two_eps():
    sweep = _sweep("width")
    assert sweep["model.width"] == ["128", "256", "1000"]
    assert sweep["optimizer_arm"] == [width.LARGE_EPS, width.SMALL_EPS]
    depths = {
        compose_config(["experiment=width", f"depth_cell={c}"]).model.depth for c in sweep["depth_cell"]
    }
    assert len(depths) == 2


def test_an_arms_eps_in_torchs_terms():
    assert arms.arm_eps("adam_eps1e-12") == 1e-12
    assert arms.arm_eps("adam_keras_eps1e-7") == pytest.approx(1e-7 / math.sqrt(1 - 0.999))
    assert math.isnan(arms.arm_eps("sgd_lr0.1")) and arms.sgd_lr("sgd_lr0.1") == 0.1
    assert math.isnan(arms.sgd_lr("adam_eps1e-8"))


def test_step0_gradients_are_the_runs_own_probe(tmp_path):
    rows = []
    for step, scale in ((0, 1.0), (50, 100.0)):
        for layer, (weight, pre) in enumerate([(1e-6, 1e-4), (3e-6, 1e-2), (2e-6, 1.0)], start=1):
            rows += [
                (step, layer, "weight_grad_std", weight * scale),
                (step, layer, "grad_pre_std", pre * scale),
            ]
    pd.DataFrame(rows, columns=["step", "layer", "statistic", "value"]).to_csv(
        tmp_path / "layer_stats.csv", index=False
    )
    measures = arms.step0_gradients(tmp_path)
    assert measures["weight_grad"] == pytest.approx(2e-6)  # the median layer, step 0 only
    assert measures["grad_ratio"] == pytest.approx(1e-4)  # first hidden layer over the last


def test_a_run_without_probes_is_refused_in_one_line(tmp_path):
    with pytest.raises(Exception) as refused:
        arms.step0_gradients(tmp_path)
    assert "layer_stats.csv" in str(refused.value) and "\n" not in str(refused.value)


def _table(failures: dict[tuple[str, str], list[bool]], **extra) -> pd.DataFrame:
    rows = []
    for (cell, arm), failed in failures.items():
        for seed, fail in enumerate(failed):
            rows.append({"cell": cell, "arm": arm, "width": 128, "seed": seed, "failed": fail, "depth": 10,
                         "grad_ratio": 1e-3, "eps": arms.arm_eps(arm), "lr": arms.sgd_lr(arm), "acc": 0.1 if fail else 0.9,
                         "val_acc": 0.1 if fail else 0.9, "weight_grad": 1e-7, **extra})  # fmt: skip
    return pd.DataFrame(rows)


def test_pairs_are_matched_by_cell_and_seed():
    table = _table({("a", "adam_eps1e-7"): [True, True, False, True], ("a", "adam_eps1e-12"): [False, True, True, False],
                    ("b", "adam_eps1e-7"): [True], ("b", "adam_eps1e-12"): [False]})  # fmt: skip
    only_reference, only_arm, pairs = arms.paired(table, "adam_eps1e-12", "adam_eps1e-7", ["cell"])
    assert (only_reference, only_arm, pairs) == (3, 1, 5)
    assert arms.discordant_p(0, 0) == 1.0  # nothing discordant: nothing points the predicted way
    diff, low, high = arms.paired_difference(3, 1, 5)
    assert diff == pytest.approx(0.4) and low < diff < high


def test_sgds_rate_is_chosen_on_validation_never_on_test():
    table = _table({("a", "sgd_lr0.01"): [False] * 3, ("a", "sgd_lr0.1"): [False] * 3})
    table.loc[table.arm == "sgd_lr0.01", ["val_acc", "acc"]] = [0.95, 0.80]
    table.loc[table.arm == "sgd_lr0.1", ["val_acc", "acc"]] = [0.90, 0.99]  # better on test: must not count
    choice = arms.chosen_sgd(table, ["cell"])
    assert choice[choice.chosen].lr.tolist() == [0.01]
    picked = arms.with_sgd_arm(table, choice, ["cell"])
    assert set(picked.arm) == {"sgd_chosen"} and (picked.lr == 0.01).all()
    tied = _table({("a", "sgd_lr0.03"): [False] * 2, ("a", "sgd_lr0.1"): [False] * 2})
    assert arms.chosen_sgd(tied, ["cell"]).query("chosen").lr.tolist() == [0.03]  # a tie: the smaller rate


def _logistic_table(eps_matters: bool, seed: int = 0) -> pd.DataFrame:
    """Runs of the three torch Adam arms over depths and gradient ratios; failures drawn from a logistic model
    with (or without) an eps term."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm in epsilon.TORCH_ADAM:
        for depth in (5, 10, 20):
            for run_seed in range(40):
                log_ratio = rng.uniform(-6, -2)
                z = (
                    -1.0
                    + 0.05 * depth
                    - 0.8 * (log_ratio + 4)
                    + (1.5 * (math.log10(arms.arm_eps(arm)) + 9.0) if eps_matters else 0.0)
                )
                rows.append({"cell": f"c{depth}", "arm": arm, "width": 128, "seed": run_seed, "depth": depth,
                             "grad_ratio": 10**log_ratio, "eps": arms.arm_eps(arm),
                             "failed": bool(rng.random() < 1 / (1 + math.exp(-z)))})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_eps_term_is_found_where_failures_depend_on_eps():
    rule = load("epsilon")[epsilon.LOGISTIC]
    fit = epsilon.logistic(_logistic_table(eps_matters=True))
    assert fit is not None and fit.lr_p < 0.001 and fit.eps_low > 0
    assert epsilon.logistic_claim(fit, rule, seeds=10).verdict == AGREES


def test_p_fail_against_depth_draws_each_arms_rates_and_both_fits(tmp_path, monkeypatch):
    """The observed points are each arm's failure rate per depth; the dashed curve is the fit without eps and one
    solid curve per arm the fit with it, both at the runs' median log10 gradient ratio; no fit, no curves."""
    drawn = {}
    monkeypatch.setattr(epsilon, "save", lambda fig, path: drawn.update({path.name: fig}))
    table = _logistic_table(eps_matters=True)
    fit = epsilon.logistic(table)
    epsilon.depth_figure(table, fit, tmp_path / "fit.png")
    epsilon.depth_figure(table, None, tmp_path / "no_fit.png")
    ax = drawn["fit.png"].axes[0]
    rates = table.groupby(["arm", "depth"]).failed.mean()
    observed = {bars.get_label().removesuffix(" (observed)"): bars.lines[0] for bars in ax.containers}
    assert sorted(observed) == sorted(epsilon.TORCH_ADAM)
    for arm, line in observed.items():
        assert np.asarray(line.get_ydata(), dtype=float) == pytest.approx(rates[arm].to_numpy())
    ratio = float(np.median(np.log10(table.grad_ratio)))
    (dashed,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed.get_ydata() == pytest.approx(
        epsilon.predicted(fit.params_without, dashed.get_xdata(), ratio)
    )
    solid = [
        line for line in ax.get_lines() if line.get_linestyle() == "-" and line.get_marker() in ("None", "")
    ]
    eps = [arms.arm_eps(arm) for arm in epsilon.TORCH_ADAM]
    assert [line.get_ydata() for line in solid] == [
        pytest.approx(epsilon.predicted(fit.params_with, line.get_xdata(), ratio, e))
        for line, e in zip(solid, eps, strict=True)
    ]
    assert not [
        line for line in drawn["no_fit.png"].axes[0].get_lines() if line.get_linestyle() in ("-", "--")
    ]


def test_the_eps_term_is_not_found_where_failures_ignore_eps():
    rule = load("epsilon")[epsilon.LOGISTIC]
    fit = epsilon.logistic(_logistic_table(eps_matters=False, seed=1))
    assert fit is not None and fit.eps_low < 0 < fit.eps_high
    assert epsilon.logistic_claim(fit, rule, seeds=10).verdict == PARTS
    assert (
        epsilon.logistic(_table({("a", "adam_eps1e-7"): [True] * 4})) is None
    )  # one outcome: nothing to fit


def test_each_paired_verdict_follows_its_mcnemar_test():
    found = epsilon.rules()
    failures = {("a", "adam_eps1e-7"): [True] * 10, ("a", "adam_eps1e-12"): [False] * 10,
                ("a", "adam_eps1e-8"): [True] * 9 + [False], ("a", "adam_keras_eps1e-7"): [True] * 10,
                ("a", "sgd_chosen"): [True] * 10}  # fmt: skip
    claims, rows = epsilon.paired_claims(_table(failures), found, seeds=10)
    verdicts = {row["claim"]: claim.verdict for row, claim in zip(rows, claims, strict=True)}
    # 10 pairs all one way: p = 2^-10; 1 of 1: p = 0.5; none discordant: p = 1
    assert verdicts == {"eps_1e-12_fails_less": AGREES, "eps_1e-8_fails_less": PARTS,
                        "keras_eps_fails_more": PARTS, "sgd_fails_more": AGREES}  # fmt: skip
    assert rows[0]["p_one_sided"] == pytest.approx(2**-10)
    few, _ = epsilon.paired_claims(_table({k: v[:5] for k, v in failures.items()}), found, seeds=5)
    assert {c.verdict for c in few} == {"not testable at this budget"}


@pytest.mark.parametrize(
    ("lowered", "term", "sgd", "words"),
    [(AGREES, AGREES, PARTS, ["support eps as a cause", "does not fail significantly more"]),
     (PARTS, PARTS, AGREES, ["do not support eps as the cause", "SGD with momentum fails more"]),
     (AGREES, PARTS, AGREES, ["only in part", "1e-12: agrees; the logistic eps term: parts"]),
     (INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE, ["cannot decide on eps", "The SGD comparison is inconclusive"])],
)  # fmt: skip
def test_the_conclusion_is_read_from_the_verdicts(lowered, term, sgd, words):
    found = epsilon.rules()
    verdicts = {"eps_1e-12_fails_less": lowered, epsilon.LOGISTIC: term, "sgd_fails_more": sgd}
    claims = [
        Claim(claim=found[rule_id].claim, paper="", ours="", verdict=v) for rule_id, v in verdicts.items()
    ]
    text = "\n".join(epsilon.conclusion(claims, found))
    assert text.startswith("## What this says about the depth report's explanation")
    assert all(w in text for w in words), text


def test_width_verdicts_per_width_and_per_cell():
    found = width.rules()
    rows = []
    for w, large_fails in ((128, 2), (1000, 9)):
        for arm, fails in ((width.LARGE_EPS, large_fails), (width.SMALL_EPS, 0)):
            rows += [{"cell": "c", "arm": arm, "width": w, "seed": s, "failed": s < fails} for s in range(10)]
    table = pd.DataFrame(rows)
    eps_claims, eps_rows = width.eps_by_width(table, found[width.EPS_MATTERS])
    assert [c.verdict for c in eps_claims] == [PARTS, AGREES]  # 2 of 2 (p = 0.25); 9 of 9 (p = 0.002)
    assert [r["width"] for r in eps_rows] == [128, 1000]
    width_claims, width_rows = width.width_by_cell(table, found[width.WIDTH_MOVES])
    assert width_claims[0].verdict == AGREES and width_rows[0]["narrow_failed"] == 2  # 2/10 against 9/10
    text = "\n".join(width.conclusion(eps_claims, width_claims))
    assert "Width changes the eps verdict (width 128: parts; width 1000: agrees)" in text
    assert "At eps 1e-7 width moves the failures in c." in text
    same = "\n".join(width.conclusion(eps_claims[:1], []))
    assert "does not change the eps verdict (width 128: parts)" in same and "in no cell" in same


@pytest.fixture
def claims_root(tmp_path):
    shutil.copytree(REPO / "conf/experiment/claims", tmp_path / "conf/experiment/claims")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "claim_id"), [("epsilon", "eps_1e-12_fails_less"), ("width", "width_moves_failures")]
)
@pytest.mark.parametrize(
    ("fields", "words"),
    [({"value": 0.5, "rule": "agrees if p <= 0.05"}, ["its rule does not state its value 0.5"]),
     ({"value": 5}, ["value 5", "(0, 1)"]),
     ({"id": "renamed"}, ["no claim"])],
)  # fmt: skip
def test_a_bad_claim_is_refused_in_one_line(claims_root, name, claim_id, fields, words):
    path = claims_root / f"conf/experiment/claims/{name}.yaml"
    content = yaml.safe_load(path.read_text())
    for claim in content["claims"]:
        if claim["id"] == claim_id:
            claim.update(fields)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    module = {"epsilon": epsilon, "width": width}[name]
    with pytest.raises(ClaimsFileError) as refused:
        module.rules(claims_root)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.slow
def test_a_tiny_sweep_of_each_preset_trains_and_reports(synthetic_data_repo):
    """Two cells, every arm, three seeds at toy sizes (the width preset: widths 8 and 16); then each report."""
    repo = synthetic_data_repo
    # Hydra's own quoting (no shell here): a swept list in quotes; the init axis taken out as the DVC stage does
    tiny = ["data.train_size=256", "data.val_size=64", "module.val_every_n_steps=2", "module.layer_stats_every_n_steps=2",
            "hydra.sweeper.params.seed='0,1,2'", "~hydra.sweeper.params.init"]  # fmt: skip
    cells = "hydra.sweeper.params.depth_cell='linear_5_random_normal,relu_10_standard'"
    # the width preset at toy widths: its own copy with 8 and 16 (a dotted sweep key cannot be set from the CLI)
    presets = repo / "conf/experiment"
    (presets / "width_tiny.yaml").write_text(
        (presets / "width.yaml").read_text().replace("model.width: 128,256,1000", "model.width: 8,16")
    )  # fmt: skip
    for preset, extra in (
        ("epsilon", [cells, "model.width=8"]),
        ("width_tiny", ["hydra.sweep.dir=runs_width"]),
    ):
        run(python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", f"experiment={preset}", *tiny,
                          *extra), repo, timeout=900)  # fmt: skip
        name = preset.removesuffix("_tiny")
        out = repo / "reports" / name
        result = run(python_module("initstudy.report", "--paper", name, "--runs", f"runs_{name}", "--out", str(out)),
                     repo)  # fmt: skip
        table = pd.read_csv(out / "paper_vs_ours.csv")
        assert list(table.columns) == list(COLUMNS) and set(table.verdict) <= set(VERDICTS)
        for row in table.itertuples():
            assert f"{row.verdict:>10}: {row.claim}" in result.stdout
        per_run = pd.read_csv(out / "tables" / "runs.csv")
        assert per_run.weight_grad.gt(0).all() and per_run.seed.nunique() == 3
        assert (out / "report.md").read_text().count("![") >= 1
    runs = pd.read_csv(repo / "reports/epsilon/tables/runs.csv")
    assert set(runs.arm) == {*epsilon.TORCH_ADAM, "adam_keras_eps1e-7", "sgd_chosen"}
    assert set(pd.read_csv(repo / "reports/width/tables/runs.csv").width) == {8, 16}


def test_the_fitted_curve_is_the_logistic_of_the_models_linear_predictor():
    params = {"const": -1.0, "depth": 0.05, "log10_ratio": -0.5, "log10_eps": 0.2}
    z = -1.0 + 0.05 * 20 - 0.5 * -3.0
    assert epsilon.predicted(params, 20, -3.0) == pytest.approx(1 / (1 + math.exp(-z)))
    with_eps = epsilon.predicted(params, 20, -3.0, 1e-8)
    assert with_eps == pytest.approx(1 / (1 + math.exp(-(z + 0.2 * -8))))
    assert epsilon.predicted({"const": 0.0, "log10_ratio": 1.0}, np.array([10, 20]), 0.0).tolist() == [
        0.5,
        0.5,
    ]

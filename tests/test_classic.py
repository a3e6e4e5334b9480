"""The classic papers reproduced side by side (conf/experiment/{glorot2010,he2015,schoenholz2017,saxe2014}.yaml,
initstudy.report.<paper>): each preset's sweep trains, diagnoses and reports end to end on tiny data, and each
report's verdicts follow from the numbers (fabricated here, so that both verdicts are exercised)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import python_module, run
from initstudy.config.compose import compose_config
from initstudy.diagnose.measure import init_label
from initstudy.report.papers import glorot2010, he2015, saxe2014, schoenholz2017
from initstudy.report.papers.claims import (
    AGREES,
    COLUMNS,
    NOT_COUNTED,
    NOT_TESTABLE,
    PARTS,
    UNTESTED,
    VERDICTS,
    plain,
)

TINY = ["model.width=16", "data.train_size=256", "data.val_size=100", "trainer.max_epochs=1", "seed=0"]
# Each preset's sweep cut to two cells per axis it varies (the synthetic data has 600 training images).
SWEEPS = {
    "glorot2010": ["model.activation=tanh,sigmoid", "module.layer_stats_every_n_steps=4"],
    "he2015": [],  # the paper's depths 22 and 30, at width 16
    "schoenholz2017": ["model.depth=2,6", "init.scale=1.0,4.0"],
    "saxe2014": ["model.depth=2,6", "optimizer.lr=0.01,0.03"],
}
CLAIMS = {  # the first words of every claim the report must make
    "glorot2010": ["Table 1: tanh standard", "Table 1: sigmoid standard", "Figure 2", "Figure 6", "Figure 7"],
    "he2015": ["Figure 2: 22 ReLU layers", "Figure 3: 30 ReLU layers"],
    "schoenholz2017": [
        "Order/chaos boundary",
        "Trainable iff",
        "The maximum trainable depth",
        "The deepest trainable",
        "Correlation map",
    ],
    "saxe2014": ["Orthogonal init", "Scaled Gaussian init", "Input-output Jacobian"],
}


@pytest.mark.parametrize("paper", list(SWEEPS))
def test_each_preset_composes_to_the_papers_setup(paper):
    cfg = compose_config([f"experiment={paper}"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir == f"runs_{paper}"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.model.hidden_sizes is None
    if paper == "glorot2010":
        assert (cfg.model.depth, cfg.optimizer.momentum) == (5, 0.0)
        assert set(cfg.hydra.sweeper.params.init.split(",")) == {"standard", "glorot_uniform"}
        assert cfg.module.layer_stats_every_n_steps > 0
    if paper == "he2015":
        assert cfg.init.distribution == "untruncated_normal" and cfg.optimizer.momentum == 0.9
        assert set(cfg.hydra.sweeper.params["model.depth"].split(",")) == {"22", "30"}
    if paper == "schoenholz2017":
        assert cfg.init.bias_std**2 == pytest.approx(0.05) and cfg.model.activation == "tanh"
    if paper == "saxe2014":
        assert cfg.model.activation == "linear"
        assert max(int(d) for d in cfg.hydra.sweeper.params["model.depth"].split(",")) == 100


@pytest.mark.slow
@pytest.mark.parametrize("paper", list(SWEEPS))
def test_each_preset_trains_diagnoses_and_reports_side_by_side(synthetic_data_repo, paper):
    repo = synthetic_data_repo
    sweep = [f"experiment={paper}", *TINY, *SWEEPS[paper]]
    run(python_module("initstudy.train", "--multirun", "hydra/launcher=stacked", *sweep), repo, timeout=900)
    out = repo / "reports" / paper
    run(python_module("initstudy.diagnose", "--out", str(out / "diagnostics"), *sweep), repo)
    result = run(python_module("initstudy.report", "--paper", paper, "--runs", f"runs_{paper}", "--out",
                               str(out), "--diagnostics", str(out / "diagnostics")), repo)  # fmt: skip
    table = pd.read_csv(out / "paper_vs_ours.csv")
    assert list(table.columns) == list(COLUMNS)
    assert set(table.verdict) <= set(VERDICTS)
    assert table.rule.notna().all() and table.seeds.notna().all() and table.baseline.notna().all()
    for claim in CLAIMS[paper]:
        assert table.claim.str.startswith(claim).any(), (claim, table.claim.tolist())
    report = (out / "report.md").read_text()
    assert "## Paper and ours, side by side" in report and "## Signal propagation at initialization" in report
    for link in [line for line in report.splitlines() if line.startswith("![")]:
        assert (out / link.split("](")[1].rstrip(")")).is_file(), link
    json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in metrics"))
    for row in table.itertuples():  # the command line prints every verdict, as the table holds it
        assert f"{row.verdict:>10}: {row.claim}" in result.stdout


@pytest.mark.slow
def test_an_unknown_paper_is_refused_in_one_line_before_reading_anything(tmp_path):
    result = run(python_module("initstudy.report", "--paper", "lecun1998", "--runs", str(tmp_path / "none"),
                               "--out", str(tmp_path / "out")), tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2
    assert (
        "invalid --paper='lecun1998': must be one of glorot2010, he2015, schoenholz2017, saxe2014, notebook, epsilon, width, tuned"
        in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_every_paper_the_command_line_accepts_has_a_report():
    from initstudy.report.papers.claims import PAPERS
    from initstudy.report.papers.registry import writers

    # The notebook's: tests/test_notebook.py; the eps and width experiments': tests/test_epsilon.py; the tuned
    # comparison's: tests/test_tuned.py.
    assert tuple(writers()) == PAPERS == (*SWEEPS, "notebook", "epsilon", "width", "tuned")


def test_diagnostics_name_an_initializers_swept_parameter():
    assert init_label(("init=gaussian", "init.scale=2.0", "seed=0"), "gaussian") == "gaussian (scale=2.0)"
    assert init_label(("init=he_uniform", "seed=1"), "he_uniform") == "he_uniform"


def test_metrics_hold_no_infinities_or_numpy_scalars():
    import numpy as np

    assert plain({"a": np.float64(1.5), "b": math.inf, 3: [np.int64(2), math.nan]}) == {
        "a": 1.5, "b": None, "3": [2, None]}  # fmt: skip


# ---- each report's verdicts, from fabricated numbers ------------------------------------------------------


def test_schoenholz_boundary_from_our_mean_field_matches_the_papers():
    assert schoenholz2017.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.02)
    # Without bias variance, tanh's boundary is sigma_w^2 = 1 exactly (tanh'(0) = 1)
    assert schoenholz2017.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-4)


def _schoenholz_cells(accuracies: dict[tuple[float, int], float], seeds: int = 3) -> pd.DataFrame:
    """Cells of ``seeds`` runs each, every run of a cell at the cell's accuracy."""
    runs = pd.DataFrame([{"init.scale": s, "depth": d, "seed": seed, "test/acc": a, "status": "complete"}
                         for (s, d), a in accuracies.items() for seed in range(seeds)])  # fmt: skip
    return schoenholz2017.cells(runs, "tanh", 0.05)


# xi_c(1.0) ~ 3.6, so 6 xi_c ~ 22: at sigma_w^2 = 1 depth 10 is inside the bound and 30-70 outside; near the
# boundary every depth is inside.
_DEPTHS = (10, 30, 40, 50, 60, 70)


def test_schoenholz_bound_agrees_only_when_it_beats_every_cell_trains():
    as_predicted = _schoenholz_cells({**{(1.0, d): (0.9 if d == 10 else 0.1) for d in _DEPTHS},
                                      **{(1.75, d): 0.9 for d in _DEPTHS}})  # fmt: skip
    claims = {c.claim: c for c in schoenholz2017.claims_of(as_predicted, 1.76)}
    bound = claims["Trainable iff depth <= 6 xi_c"]
    assert bound.verdict == AGREES and "12/12 cells" in bound.ours  # 5 cells only the bound gets right
    assert "every cell trains: 7/12 cells" in bound.baseline and "p = 0.0312" in bound.baseline
    # sigma_w^2 = 1.75 (nearest chi_1 = 1) trains to the deepest depth, 1.0 only to 10; chi_1 = 1 is arithmetic.
    assert claims["The deepest trainable network sits at the boundary"].verdict == AGREES
    assert claims["Order/chaos boundary chi_1 = 1, tanh, sigma_b^2 = 0.05"].verdict == NOT_COUNTED
    # One seed per cell: the same cells are no longer enough for the rule (3 seeds per cell).
    one_seed = {
        c.claim: c for c in schoenholz2017.claims_of(_schoenholz_cells({(1.0, 10): 0.9}, seeds=1), 1.76)
    }
    assert one_seed["Trainable iff depth <= 6 xi_c"].verdict == NOT_TESTABLE
    # Right in every cell, but only 1 cell that the trivial rule gets wrong: not better than it.
    few = _schoenholz_cells({(1.0, 10): 0.9, (1.0, 60): 0.1, (1.75, 10): 0.9, (1.75, 60): 0.8})
    claim = next(c for c in schoenholz2017.claims_of(few, 1.76) if c.claim.startswith("Trainable"))
    assert claim.verdict == PARTS and "4/4 cells" in claim.ours and claim.why
    against = _schoenholz_cells({(1.0, 10): 0.1, (1.0, 60): 0.9, (1.75, 10): 0.1, (1.75, 60): 0.1})
    claim = next(c for c in schoenholz2017.claims_of(against, 1.76) if c.claim.startswith("Trainable"))
    assert claim.verdict == PARTS and "0/4 cells" in claim.ours and claim.why


def _loss_history(curves: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"run_dir": run_dir, "metric": "train/loss_step", "step": s, "value": v}
                         for run_dir, points in curves.items() for s, v in points])  # fmt: skip


def test_saxe_learning_time_is_the_first_step_below_the_target_at_the_best_rate():
    runs = pd.DataFrame([
        {"run_dir": "o2a", "init": "orthogonal", "depth": 2, "lr": 0.01, "status": "complete"},
        {"run_dir": "o2b", "init": "orthogonal", "depth": 2, "lr": 0.03, "status": "complete"},
        {"run_dir": "o9", "init": "orthogonal", "depth": 9, "lr": 0.01, "status": "complete"},
        {"run_dir": "g2", "init": "gaussian", "depth": 2, "lr": 0.01, "status": "complete"},
        {"run_dir": "g9", "init": "gaussian", "depth": 9, "lr": 0.01, "status": "complete", "diverged": False},
    ])  # fmt: skip
    history = _loss_history({
        "o2a": [(10, 1.0), (20, 0.6), (30, 0.45)], "o2b": [(10, 0.7), (20, 0.4), (30, 0.3)],
        "o9": [(10, 0.9), (20, 0.45), (30, 0.4)], "g2": [(10, 0.9), (20, 0.45), (30, 0.4)],
        "g9": [(10, 2.0), (20, 1.5), (30, 1.0)],
    })  # fmt: skip
    sweep = type("Sweep", (), {"history": history})()
    best = saxe2014.best_per_depth(saxe2014.steps_to_target(sweep, runs))
    row = best.set_index(["init", "depth"])
    assert row.loc[("orthogonal", 2), "best_steps"] == 20 and row.loc[("orthogonal", 2), "best_lr"] == 0.03
    assert math.isinf(row.loc[("gaussian", 9), "best_steps"])  # not within the budget: censored
    claims = {c.claim.split(":")[0]: c for c in saxe2014.learning_time_claims(best)}
    # One seed: each rate is chosen on the time it reports; the rules need a second seed to read it apart.
    assert claims["Orthogonal init"].verdict == NOT_TESTABLE  # 20 and 20 steps: flat, but 1 seed
    assert "the rule alone would say 'inconclusive'" in claims["Orthogonal init"].why  # 0.03: the grid's edge
    assert "> 30" in claims["Scaled Gaussian init"].ours
    # Two seeds, rates inside the grid: seed 0 chooses, seed 1 is read.
    grid = pd.DataFrame([{"init": i, "depth": d, "lr": lr, "seed": seed, "budget": 30.0,
                          "steps": steps if lr == 0.01 else math.inf}
                         for i, times in {"orthogonal": {2: 20.0, 9: 20.0}, "gaussian": {2: 10.0, 9: math.inf}}.items()
                         for d, steps in times.items() for lr in (0.003, 0.01, 0.03) for seed in (0, 1)])  # fmt: skip
    claims = {c.claim.split(":")[0]: c for c in saxe2014.learning_time_claims(saxe2014.best_per_depth(grid))}
    assert claims["Orthogonal init"].verdict == AGREES and claims["Orthogonal init"].seeds.startswith("2 ")
    assert claims["Scaled Gaussian init"].verdict == AGREES  # 10 steps, then not within 30: grows


def _he_seeds(n: int, xavier_22: float = 400.0, xavier_30: float = math.inf) -> pd.DataFrame:
    rows = []
    for seed in range(n):
        for depth, scale, steps, error in ((22, 1.0, xavier_22, 37.0 + seed), (22, 2.0, 100.0, 6.0 + seed / 2),
                                           (30, 1.0, xavier_30, 88.65), (30, 2.0, 150.0, 20.0)):  # fmt: skip
            rows.append({"depth": depth, "scale": scale, "seed": seed, "steps_to_loss_2": steps,
                         "final_train_loss": 2.3 if math.isinf(steps) else 1.0, "test_error_pct": error})  # fmt: skip
    return pd.DataFrame(rows)


def test_he_verdicts_follow_which_init_leaves_chance_given_enough_seeds():
    two = he2015.claims_of(_he_seeds(2))
    assert [c.claim.split(",")[0] for c in two] == ["Figure 2: 22 ReLU layers"] * 2 + [
        "Figure 3: 30 ReLU layers"
    ]
    assert [c.verdict for c in two] == [NOT_TESTABLE] * 3  # 2 seeds: the rules need 5
    assert all("the rule needs 5" in c.why and c.rule and c.seeds.startswith("2 ") for c in two)
    five = he2015.claims_of(_he_seeds(5))
    assert [c.verdict for c in five] == [AGREES, PARTS, AGREES]
    end = five[1]  # the paper's two 22-layer inits end about equal; these end 39.0 % and 7.0 %
    assert "Xavier ends at 39.0 % test error, He's at 7.0 %" in end.ours and "ours do not" in end.why
    assert "every run trains: 5/10 runs right, the paper's prediction 10/10" in five[2].baseline
    xavier_trains = he2015.claims_of(_he_seeds(5, xavier_22=50.0, xavier_30=100.0))
    assert [xavier_trains[0].verdict, xavier_trains[2].verdict] == [PARTS, PARTS]


def test_glorot_table_1_and_figure_7_verdicts():
    runs = pd.DataFrame([{"activation": a, "init": i, "seed": s, "status": "complete", "test/acc": acc, "run_dir": f"{a}/{i}/{s}"}
                         for (a, i), acc in {("tanh", "standard"): 0.982, ("tanh", "glorot_uniform"): 0.9836,
                                             ("softsign", "standard"): 0.95, ("softsign", "glorot_uniform"): 0.983,
                                             ("sigmoid", "standard"): 0.11, ("sigmoid", "glorot_uniform"): 0.11}.items()
                         for s in (0, 1)])  # fmt: skip
    claims, metrics = glorot2010.table_1(runs)
    verdict = {c.claim: c.verdict for c in claims}
    assert verdict["Table 1: tanh standard, test error %"] == NOT_TESTABLE  # 1.80 vs 1.76, but 2 seeds
    assert verdict["Table 1: sigmoid normalized (N), test error %"] == UNTESTED  # not in the paper
    five = pd.concat([runs.assign(seed=runs.seed + 2 * k) for k in range(3)])
    five = five[five.seed < 5]
    verdict = {c.claim: c.verdict for c in glorot2010.table_1(five)[0]}
    assert verdict["Table 1: tanh standard, test error %"] == AGREES  # 1.80 vs 1.76 in every one of 5 seeds
    assert verdict["Table 1: softsign standard, test error %"] == PARTS  # 5.00 vs 1.64
    assert "plateau" in next(c.why for c in claims if c.claim.startswith("Table 1: sigmoid standard"))
    assert metrics["tanh.standard"]["paper_error_pct"] == 1.76
    stats = pd.DataFrame([{"activation": "tanh", "init": i, "step": 0, "layer": layer, "statistic": "grad_pre_std",
                           "value": value} for i, values in {"standard": [0.01, 0.03, 0.09],
                                                            "glorot_uniform": [0.05, 0.05, 0.06]}.items()
                          for layer, value in enumerate(values, start=1)])  # fmt: skip
    claims, _ = glorot2010.figure_6_7_claims(stats)
    figure_7 = next(c for c in claims if c.claim.startswith("Figure 7"))
    assert figure_7.verdict == NOT_TESTABLE and "standard 9.000; normalized 1.200" in figure_7.ours
    assert "holds for 1 of the 2 inits" in figure_7.baseline  # the trivial rule: every ratio about 1
    assert "the rule alone would say 'agrees'" in figure_7.why

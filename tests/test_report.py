"""The report's aggregation on hand-made run folders whose right answers are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from initstudy.report.__main__ import write_report
from initstudy.report.load import RunFileError, load_sweep
from initstudy.report.stats import compare, summarize
from initstudy.rundir import write_marker
from initstudy.sweep import MANIFEST_NAME

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5%, 2 degrees of freedom
STEPS_PER_EPOCH = 100
CONFIG = {
    "model": {"input_size": 784, "hidden_sizes": [8], "num_classes": 10, "activation": "relu"},
    "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001},
    "data": {"batch_size": 64, "val_fraction": 0.0},
    "trainer": {"max_epochs": 3},
}


def make_run(
    sweep: Path, init: str, seed: int, accs: list[float], complete: bool = True, diverged: bool = False
) -> dict:
    """A run folder whose per-epoch test accuracies are ``accs`` (epochs 1..n) and train loss 1/epoch."""
    run_dir = sweep / init / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    rows = [{"epoch": 0, "step": 0, "metric": "test/acc", "value": 0.1}]
    for epoch, acc in enumerate(accs, start=1):
        step = epoch * STEPS_PER_EPOCH
        rows += [
            {"epoch": epoch, "step": step, "metric": "train/loss", "value": 1.0 / epoch},
            {"epoch": epoch, "step": step, "metric": "test/acc", "value": acc},
            {"epoch": epoch, "step": step, "metric": "test/loss", "value": 1 - acc},
        ]
    pd.DataFrame(rows).to_csv(run_dir / "history.csv", index=False)
    first = {t: next((e for e, a in enumerate(accs, 1) if a >= t / 100), None) for t in (95, 97, 98)}
    metrics = {
        "init": init,
        "seed": seed,
        "test/acc": accs[-1],
        "test/loss": 1 - accs[-1],
        "train/loss": 1 / len(accs),
        "diverged": diverged,
        "diverged_at_step": 150 if diverged else None,
    }
    for t, epoch in first.items():
        metrics[f"epochs_to_{t}"] = epoch
        metrics[f"steps_to_{t}"] = None if epoch is None else epoch * STEPS_PER_EPOCH
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    if complete:
        write_marker(run_dir, f"id-{init}-{seed}")
    return {
        "init": init,
        "seed": seed,
        "run_dir": f"{init}/seed_{seed}",
        "config_hash": f"h-{init}-{seed}",
        "identity": f"id-{init}-{seed}",
        "overrides": f"init={init} seed={seed}",
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "runs"
    entries = [
        make_run(sweep, "alpha", 0, [0.90, 0.96, 0.90]),
        make_run(sweep, "alpha", 1, [0.92, 0.97, 0.92]),
        make_run(sweep, "alpha", 2, [0.94, 0.98, 0.94]),
        make_run(sweep, "beta", 0, [0.96, 0.97, 0.98]),
        make_run(sweep, "beta", 1, [0.97, 0.98, 0.99]),
        make_run(sweep, "beta", 2, [0.95, 0.97, 0.97]),
    ]
    make_run(sweep, "beta", 9, [0.1, 0.1, 0.1])  # a stale folder of an older sweep: not in the manifest
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    return sweep


def test_means_stds_and_t_intervals_are_exact(sweep):
    data = load_sweep(sweep)
    summary = summarize(data.runs, data.history).set_index("init")
    assert list(summary.index) == ["alpha", "beta"]
    alpha = summary.loc["alpha"]
    assert alpha.n_runs == 3 and alpha.n_complete == 3 and alpha.n_failed == 0
    assert alpha.acc_mean == pytest.approx(0.92, abs=1e-12)
    assert alpha.acc_std == pytest.approx(0.02, abs=1e-12)
    half_width = T_975_DF2 * 0.02 / math.sqrt(3)
    assert alpha.acc_ci95_low == pytest.approx(0.92 - half_width, abs=1e-9)
    assert alpha.acc_ci95_high == pytest.approx(0.92 + half_width, abs=1e-9)
    assert (alpha.acc_min, alpha.acc_max) == pytest.approx((0.90, 0.94))
    assert summary.loc["beta"].acc_mean == pytest.approx((0.98 + 0.99 + 0.97) / 3)
    assert alpha.train_loss_auc_mean == pytest.approx((1 + 0.5) / 2 + (0.5 + 1 / 3) / 2)


def test_thresholds_median_and_how_many_got_there(sweep):
    data = load_sweep(sweep)
    summary = summarize(data.runs, data.history).set_index("init")
    # alpha reaches 97% at epoch 2 in seeds 1 and 2 only (0.96 in seed 0); 98% only in seed 2.
    assert summary.loc["alpha"].reached_97 == 2 and summary.loc["alpha"].epochs_to_97_median == 2
    assert summary.loc["alpha"].steps_to_97_median == 2 * STEPS_PER_EPOCH
    assert summary.loc["alpha"].reached_98 == 1
    assert summary.loc["beta"].reached_95 == 3 and summary.loc["beta"].epochs_to_95_median == 1
    assert summary.loc["beta"].epochs_to_98_median == 2.5  # epochs 3 and 2; seed 2 never gets there
    assert summary.loc["beta"].reached_98 == 2


def test_welch_test_and_correction_decide_as_computed_by_hand(sweep):
    data = load_sweep(sweep)
    comparisons = compare(data.runs)
    row = comparisons.iloc[0]
    alpha, beta = [0.90, 0.92, 0.94], [0.98, 0.99, 0.97]
    variance = 0.02**2 / 3 + 0.01**2 / 3
    t = (sum(alpha) / 3 - sum(beta) / 3) / math.sqrt(variance)
    df = variance**2 / ((0.02**2 / 3) ** 2 / 2 + (0.01**2 / 3) ** 2 / 2)
    assert row.t == pytest.approx(t) and row.df == pytest.approx(df)
    assert row.diff_mean == pytest.approx(-0.06)
    assert row.p_adjusted == pytest.approx(row.p_value)  # a single pair: nothing to correct
    assert bool(row.significant) is True and row.p_value < 0.05


def test_benjamini_hochberg_adjusts_several_pairs(tmp_path):
    sweep = tmp_path / "runs"
    entries = [
        make_run(sweep, name, s, [v + 0.001 * s])
        for name, v in (("a", 0.9), ("b", 0.9), ("c", 0.95))
        for s in range(3)
    ]
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    comparisons = compare(load_sweep(sweep).runs).set_index(["init_a", "init_b"])
    assert len(comparisons) == 3
    p = comparisons.p_value.sort_values()
    ranks = {pair: rank for rank, pair in enumerate(p.index, start=1)}
    for pair, value in p.items():  # BH: p * m / rank, then monotone from the top
        assert comparisons.loc[pair].p_adjusted >= value
        assert comparisons.loc[pair].p_adjusted <= min(1.0, value * 3 / ranks[pair]) + 1e-12
    assert not comparisons.loc[("a", "b")].significant and comparisons.loc[("a", "c")].significant


def test_incomplete_and_diverged_runs_are_shown_not_dropped(tmp_path):
    sweep = tmp_path / "runs"
    entries = [
        make_run(sweep, "gamma", 0, [0.5, 0.6]),
        make_run(sweep, "gamma", 1, [0.5, 0.1], diverged=True),
        make_run(sweep, "gamma", 2, [0.5, 0.6], complete=False),
    ]
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    out = tmp_path / "reports"
    write_report(sweep, out)
    summary = pd.read_csv(out / "summary.csv").set_index("init")
    assert summary.loc["gamma"].n_runs == 3 and summary.loc["gamma"].n_failed == 1
    assert summary.loc["gamma"].n_diverged == 1
    report = (out / "report.md").read_text()
    assert "Runs that did not complete" in report and "incomplete" in report
    assert "1 run(s) diverged" in report
    assert json.loads((out / "metrics.json").read_text())["gamma"]["n_failed"] == 1


def test_stale_folders_outside_the_manifest_are_ignored(sweep):
    data = load_sweep(sweep)
    assert sorted(data.runs.seed[data.runs.init == "beta"]) == [0, 1, 2]
    assert 9 not in set(data.history.seed)


def test_every_output_is_written_and_parses(sweep, tmp_path):
    out = tmp_path / "reports"
    write_report(sweep, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["alpha"]["test_acc_mean"] == pytest.approx(0.92) and metrics["alpha"]["n_runs"] == 3
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["initializer", "seed", "epoch", "metric", "value"]
    assert len(curves) == 6 * (1 + 3 * 3)
    assert len(pd.read_csv(out / "comparisons.csv")) == 1
    for figure in ("learning_curves", "final_accuracy", "steps_to_97", "train_loss_steps"):
        assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "784-8-10 MLP" in report and "Adam" in report  # setup derived from the resolved config
    assert "![Final test error per initializer](figures/final_accuracy.png)" in report


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "metrics.json").unlink(), "metrics.json is missing"),
        (lambda d: (d / "metrics.json").write_text("{not json"), "metrics.json is not valid JSON"),
        (lambda d: (d / "history.csv").write_text("a,b\n1,2\n"), "history.csv lacks column"),
        (lambda d: (d / "history.csv").unlink(), "history.csv is missing"),
    ],
)
def test_missing_or_corrupt_run_file_names_the_file(sweep, damage, message):
    damage(sweep / "beta" / "seed_1")
    with pytest.raises(RunFileError) as caught:
        load_sweep(sweep)
    assert message in str(caught.value) and "beta/seed_1" in str(caught.value)


def test_missing_manifest_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        load_sweep(tmp_path)

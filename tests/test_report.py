"""The report's aggregation on hand-made run folders whose right answers are known."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from initstudy.report.__main__ import write_report
from initstudy.report.depth import is_depth_sweep
from initstudy.report.endpoints import endpoints, run_endpoints
from initstudy.report.load import load_sweep, parse_group, split_groups
from initstudy.report.markdown import km_cell
from initstudy.report.stats import adjust, compare_endpoints, summarize
from initstudy.runs.results import RunFileError
from initstudy.runs.rundir import PREDICTIONS, WEIGHT_FILES, write_marker
from initstudy.sweep.jobs import MANIFEST_NAME
from initstudy.train.convergence import THRESHOLDS, first_crossing, threshold_key

# The module's tests share the trained sweep, a module-scoped fixture: on one pytest-xdist worker it is built once
# (`make test`: --dist loadgroup), not once per worker.
pytestmark = pytest.mark.xdist_group("report")

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5%, 2 degrees of freedom
STEPS_PER_EPOCH = 100
ACCURACY = "test accuracy (once, after training)"
FIGURE_NAMES = ("final_accuracy", "forest_plot", "loss_by_step", "val_error_by_step", "time_to_97")
CONFIG = {
    "model": {"input_size": 784, "hidden_sizes": [8], "num_classes": 10, "activation": "relu"},
    "module": {"val_every_n_steps": STEPS_PER_EPOCH},
    "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001},
    "data": {"batch_size": 64, "val_size": 10000},
    "trainer": {"max_epochs": 3},
}


TEST_IMAGES = 10_000


def write_predictions(run_dir: Path, acc: float) -> None:
    """test_predictions.npy with accuracy ``acc`` (to 1/10,000): the first images right (class 0), the rest
    predicted as class 1."""
    truth = np.zeros(TEST_IMAGES, dtype=np.uint8)
    predicted = (np.arange(TEST_IMAGES) >= round(acc * TEST_IMAGES)).astype(np.uint8)
    np.save(run_dir / PREDICTIONS, np.stack([truth, predicted]), allow_pickle=False)


def make_run(
    sweep: Path,
    init: str,
    seed: int,
    accs: list[float],
    complete: bool = True,
    diverged: bool = False,
    group: str = "",
) -> dict:
    """A run folder whose validation accuracies are ``accs`` at the end of epochs 1..n (0.1 at step 0; one pass
    per epoch, as with val_every_n_steps = steps per epoch), train loss 1/epoch, validation loss 1 - accuracy,
    and final test accuracy ``accs[-1]``; a ``group`` (swept keys besides init and seed) adds its level above
    ``<init>/seed_<n>``, as training does."""
    relative = Path(group, init, f"seed_{seed}")
    run_dir = sweep / relative
    run_dir.mkdir(parents=True)
    rows = [
        {"epoch": 0, "step": 0, "metric": "val/acc", "value": 0.1},
        {"epoch": 0, "step": 0, "metric": "val/acc_step", "value": 0.1},
        {"epoch": 0, "step": 0, "metric": "val/loss_step", "value": 0.9},
    ]
    for epoch, acc in enumerate(accs, start=1):
        step = epoch * STEPS_PER_EPOCH
        rows += [
            {"epoch": epoch, "step": step, "metric": "train/loss_step", "value": 1.0 / epoch},
            {"epoch": epoch, "step": step, "metric": "train/loss", "value": 1.0 / epoch},
            {"epoch": epoch, "step": step, "metric": "val/acc", "value": acc},
            {"epoch": epoch, "step": step, "metric": "val/loss", "value": 1 - acc},
            {"epoch": epoch, "step": step, "metric": "val/acc_step", "value": acc},
            {"epoch": epoch, "step": step, "metric": "val/loss_step", "value": 1 - acc},
        ]
    pd.DataFrame(rows).to_csv(run_dir / "history.csv", index=False)
    steps = [0, *(e * STEPS_PER_EPOCH for e in range(1, len(accs) + 1))]
    best = min(range(len(accs)), key=lambda i: 1 - accs[i])
    metrics = {
        "init": init,
        "seed": seed,
        "test/acc": accs[-1],
        "test/loss": 1 - accs[-1],
        "train/loss": 1 / len(accs),
        "val/acc": accs[-1],
        "val/loss": 1 - accs[-1],
        "steps_completed": len(accs) * STEPS_PER_EPOCH,
        "train/loss_auc": sum(1 / e for e in range(1, len(accs) + 1)) / len(accs),
        **{f"steps_to_{threshold_key(t)}": first_crossing(steps, [0.1, *accs], t) for t in THRESHOLDS},
        "val/loss_min": 1 - accs[best],
        "val/loss_min_step": (best + 1) * STEPS_PER_EPOCH,
        "diverged": diverged,
        "diverged_at_step": 150 if diverged else None,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    for name in WEIGHT_FILES:
        (run_dir / name).write_bytes(b"weights")
    write_predictions(run_dir, accs[-1])
    identity = f"id-{relative.as_posix()}"
    if complete:
        write_marker(run_dir, identity)
    return {
        "init": init,
        "seed": seed,
        "run_dir": relative.as_posix(),
        "config_hash": f"h-{relative.as_posix()}",
        "identity": identity,
        "overrides": f"init={init} seed={seed}",
        **({"group": group} if group else {}),
    }


def compare(sweep_dir: Path) -> pd.DataFrame:
    """The report's comparisons of a sweep (adjusted per endpoint)."""
    data = load_sweep(sweep_dir)
    per_run = run_endpoints(data.runs, data.history, "val", STEPS_PER_EPOCH)
    return adjust(
        compare_endpoints(per_run, endpoints("val", STEPS_PER_EPOCH), margin=0.005, alpha=0.05), alpha=0.05
    )


def summary_of(sweep_dir: Path) -> pd.DataFrame:
    data = load_sweep(sweep_dir)
    return summarize(data.runs, run_endpoints(data.runs, data.history, "val", STEPS_PER_EPOCH)).set_index(
        "init"
    )


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
    summary = summary_of(sweep)
    assert list(summary.index) == ["alpha", "beta"]
    alpha = summary.loc["alpha"]
    assert alpha.n_runs == 3 and alpha.n_complete == 3 and alpha.n_failed == 0
    assert alpha.acc_mean == pytest.approx(0.92, abs=1e-12)
    assert alpha.acc_std == pytest.approx(0.02, abs=1e-12)
    half_width = T_975_DF2 * 0.02 / math.sqrt(3)
    assert alpha.acc_ci95_low == pytest.approx(0.92 - half_width, abs=1e-9)
    assert alpha.acc_ci95_high == pytest.approx(0.92 + half_width, abs=1e-9)
    # one new run: mean ± t * s * sqrt(1 + 1/n)
    assert alpha.acc_pi95_high - 0.92 == pytest.approx(T_975_DF2 * 0.02 * math.sqrt(1 + 1 / 3), abs=1e-9)
    assert (alpha.acc_min, alpha.acc_max) == pytest.approx((0.90, 0.94))
    assert summary.loc["beta"].acc_mean == pytest.approx((0.98 + 0.99 + 0.97) / 3)
    assert alpha.train_loss_auc_mean == pytest.approx((1 + 0.5 + 1 / 3) / 3)


def test_time_to_threshold_is_interpolated_censored_and_counted(sweep):
    alpha = summary_of(sweep).loc["alpha"]
    # 97%: seed 0 never (0.96 at most: censored at step 300), seed 1 at 200 (0.92 -> 0.97 over steps 100-200),
    # seed 2 at 175 (0.94 -> 0.98): KM S = 2/3 after 175, 1/3 after 200 -> median 200.
    assert (alpha.reached_97, alpha.total_97) == (2, 3)
    assert alpha.steps_to_97_km_median == pytest.approx(200)
    # restricted mean to the 300-step horizon = area under S: 175 * 1 + 25 * 2/3 + 100 * 1/3
    assert alpha.steps_to_97_rmst == pytest.approx(175 + 25 * 2 / 3 + 100 / 3)
    # 98%: only seed 2 (at 200): S never falls to 1/2 -> no median
    assert alpha.reached_98 == 1 and math.isnan(alpha.steps_to_98_km_median)


def test_paired_test_and_correction_decide_as_computed_by_hand(sweep):
    comparisons = compare(sweep)
    row = comparisons[comparisons.endpoint == ACCURACY].iloc[0]
    alpha, beta = [0.90, 0.92, 0.94], [0.98, 0.99, 0.97]
    reference = stats.ttest_rel(alpha, beta)
    assert row.design == "paired" and row.n_pairs == 3
    assert row.t == pytest.approx(reference.statistic) and row.p_value == pytest.approx(reference.pvalue)
    assert row.diff_mean == pytest.approx(-0.06)
    assert row.p_adjusted == pytest.approx(row.p_value)  # a single pair: nothing to correct
    assert row.family_size == 1


def test_benjamini_hochberg_adjusts_several_pairs_per_endpoint(tmp_path):
    sweep = tmp_path / "runs"
    values = {"a": [0.900, 0.901, 0.902], "b": [0.900, 0.9014, 0.9036], "c": [0.950, 0.953, 0.955]}
    entries = [make_run(sweep, name, s, [v]) for name, vs in values.items() for s, v in enumerate(vs)]
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    every = compare(sweep)
    comparisons = every[every.endpoint == ACCURACY].set_index(["init_a", "init_b"])
    assert len(comparisons) == 3
    assert list(comparisons.p_adjusted) == pytest.approx(_bh(list(comparisons.p_value)))
    assert not comparisons.loc[("a", "b")].significant and comparisons.loc[("a", "c")].significant


def test_a_constant_against_a_sample_is_reported_apart_from_the_family(tmp_path):
    sweep = tmp_path / "runs"
    entries = [make_run(sweep, "flat", s, [0.1135]) for s in range(3)]
    entries += [make_run(sweep, name, s, [v + 0.002 * s * (1 + (name == "b"))])
                for name, v in (("a", 0.97), ("b", 0.975)) for s in range(3)]  # fmt: skip
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    every = compare(sweep)
    accuracy = every[every.endpoint == ACCURACY].set_index(["init_a", "init_b"])
    assert accuracy.loc[("flat", "a")].degenerate == "constant vs sample"
    assert math.isnan(accuracy.loc[("flat", "a")].p_adjusted)
    assert accuracy.loc[("a", "b")].family_size == 1  # the one pair of trained initializers
    out = tmp_path / "reports"
    write_report(sweep, out)
    report = (out / "report.md").read_text()
    assert "Pairs reported apart" in report and "constant vs sample" in report


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
    assert metrics["alpha"]["reached_97"] == 2
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["initializer", "seed", "epoch", "metric", "value"]
    assert len(curves) == 6 * (
        1 + 3 * 3
    )  # epoch-level: val/acc at epoch 0, then train/loss, val/acc, val/loss
    assert set(pd.read_csv(out / "comparisons.csv").endpoint) == {e.label for e in endpoints("val", 100)}
    assert len(pd.read_csv(out / "endpoints.csv")) == 6
    for figure in FIGURE_NAMES:
        assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "784-8-10 MLP" in report and "Adam" in report  # setup derived from the resolved config
    assert "![Final test error per initializer (evaluated once)](figures/final_accuracy.png)" in report
    assert "prediction interval" in report and "Kaplan-Meier" in report


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


# ---- sweeps that vary keys besides init and seed: one report section per group ------------------------------
OUTPUTS = ("metrics.json", "summary.csv", "comparisons.csv", "endpoints.csv", "curves.csv", "report.md")
# 2 keys x 2 values = 4 groups, 2 initializers x 3 seeds in each. Only in one group does beta beat alpha by far;
# elsewhere the two overlap.
GROUPS = [
    "model.activation=relu,optimizer.lr=0.001",
    "model.activation=relu,optimizer.lr=0.003",
    "model.activation=tanh,optimizer.lr=0.001",
    "model.activation=tanh,optimizer.lr=0.003",
]
DIFFERENT = GROUPS[3]
FINAL = {  # group -> init -> final test accuracy per seed
    group: {"alpha": [0.90, 0.91, 0.92], "beta": [0.97, 0.985, 0.99]}
    if group == DIFFERENT
    else {"alpha": [0.95, 0.96, 0.97], "beta": [0.96, 0.95, 0.97]}
    for group in GROUPS
}


def grouped_sweep(root: Path, order: list[str]) -> Path:
    """The runs of every group, the manifest listing the groups in ``order`` (training may list them in any)."""
    sweep = root / "runs"
    entries = []
    for group in order:
        for init, finals in FINAL[group].items():
            for seed, final in enumerate(finals):
                entry = make_run(sweep, init, seed, [0.9, final], group=group)
                # The architecture columns of every manifest: the activation varies, but within groups.
                entries.append({**entry, "activation": parse_group(group)["model.activation"], "depth": 1})
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    return sweep


@pytest.fixture(scope="module")
def grouped_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grouped")
    out = root / "reports"
    write_report(grouped_sweep(root, GROUPS[::-1]), out)  # listed in reverse: the outputs sort them
    return out


def test_group_text_parses_into_keys():
    assert parse_group("") == {}
    assert parse_group("model.activation=tanh,optimizer.lr=0.003") == {
        "model.activation": "tanh",
        "optimizer.lr": "0.003",
    }
    # A comma inside a value does not start a new key.
    assert parse_group("model.hidden_sizes=[256,128],optimizer.lr=0.01") == {
        "model.hidden_sizes": "[256,128]",
        "optimizer.lr": "0.01",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_group("tanh")


def test_groups_are_split_in_sorted_order(tmp_path):
    sweep = load_sweep(grouped_sweep(tmp_path, [GROUPS[2], GROUPS[0], GROUPS[3], GROUPS[1]]))
    parts = split_groups(sweep)
    assert [name for name, _ in parts] == GROUPS
    for name, part in parts:
        assert len(part.runs) == 6 and set(part.runs.group) == {name}
        assert set(part.history.run_dir) == set(part.runs.run_dir)
    assert not is_depth_sweep(sweep.runs)  # the activation varies between groups: the main report's job


def test_each_groups_median_runs_are_named_for_the_registry_without_one(grouped_report):
    """registered_models.csv: per group and initializer the median run; these runs are in no MLflow store, so
    no version is named and the file says why (the report is written all the same)."""
    registered = pd.read_csv(grouped_report / "registered_models.csv")
    assert list(registered.columns[:3]) == ["model.activation", "optimizer.lr", "init"]
    medians = [
        sorted(range(3), key=FINAL[group][init].__getitem__)[1]
        for group in GROUPS
        for init in ("alpha", "beta")
    ]
    assert registered.seed.tolist() == medians  # the middle of 3 seeds, by test accuracy
    different = registered[(registered["model.activation"] == "tanh") & (registered["optimizer.lr"] == 0.003)]
    assert different.test_acc.tolist() == [0.91, 0.985]
    assert different.model_name.tolist() == [f"initstudy-{init}-{DIFFERENT}" for init in ("alpha", "beta")]
    assert registered.model_version.isna().all() and registered.registry.str.startswith("none: ").all()


def test_summary_has_the_group_keys_and_per_group_numbers(grouped_report):
    summary = pd.read_csv(grouped_report / "summary.csv")
    assert list(summary.columns[:3]) == ["model.activation", "optimizer.lr", "init"]
    keys = list(zip(summary["model.activation"], summary["optimizer.lr"], summary.init, strict=True))
    assert keys == [(a, lr, i) for a in ("relu", "tanh") for lr in (0.001, 0.003) for i in ("alpha", "beta")]
    for row in summary.itertuples(index=False):
        group = f"model.activation={row[0]},optimizer.lr={row[1]}"
        assert row.n_runs == 3
        assert row.acc_mean == pytest.approx(sum(FINAL[group][row.init]) / 3)


def _bh(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg by hand: p * m / rank, then the running minimum from the largest p down."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 1.0
    for rank in range(m, 0, -1):
        index = order[rank - 1]
        running = min(running, p_values[index] * m / rank)
        adjusted[index] = running
    return adjusted


def test_initializers_are_tested_within_groups_and_corrected_over_all_tests(grouped_report):
    every = pd.read_csv(grouped_report / "comparisons.csv")
    comparisons = every[every.endpoint == ACCURACY]
    assert len(comparisons) == len(GROUPS)  # one pair (alpha, beta) per group, never across groups
    groups = [f"model.activation={a},optimizer.lr={lr}" for a, lr in
              zip(comparisons["model.activation"], comparisons["optimizer.lr"], strict=True)]  # fmt: skip
    assert groups == GROUPS
    raw = [float(stats.ttest_rel(FINAL[g]["alpha"], FINAL[g]["beta"]).pvalue) for g in GROUPS]
    assert list(comparisons.p_value) == pytest.approx(raw)
    assert list(comparisons.p_adjusted) == pytest.approx(_bh(raw))
    significant = dict(zip(groups, comparisons.significant, strict=True))
    assert significant == {group: group == DIFFERENT for group in GROUPS}


def test_metrics_are_keyed_by_group(grouped_report):
    metrics = json.loads((grouped_report / "metrics.json").read_text())
    assert list(metrics) == GROUPS
    assert metrics[DIFFERENT]["beta"]["test_acc_mean"] == pytest.approx((0.97 + 0.985 + 0.99) / 3)
    assert metrics[GROUPS[0]]["alpha"] == {**metrics[GROUPS[0]]["alpha"], "n_runs": 3, "n_failed": 0}


def test_figures_per_group_and_report_sections(grouped_report):
    figures = sorted(p.relative_to(grouped_report).as_posix() for p in grouped_report.rglob("*.png"))
    assert figures == [f"figures/{group}/{name}.png" for group in GROUPS for name in sorted(FIGURE_NAMES)]
    report = (grouped_report / "report.md").read_text()
    assert "varied `model.activation` (relu, tanh), `optimizer.lr` (0.001, 0.003): 4 groups" in report
    assert "for final test accuracy: over all 4 tests of the sweep" in report
    headings = re.findall(r"^## Group (.*)$", report, flags=re.MULTILINE)
    assert headings == [", ".join(f"`{pair}`" for pair in group.split(",")) for group in GROUPS]
    for figure in figures:  # every figure linked from the report
        assert f"]({figure})" in report
    different = report.split("## Group ")[4]
    assert "Final test accuracy: 1 of 1 pairs of trained initializers differ significantly" in different
    assert "Final test accuracy: 0 of 1 pairs" in report.split("## Group ")[1]


def test_curves_carry_the_group_keys(grouped_report):
    curves = pd.read_csv(grouped_report / "curves.csv")
    assert list(curves.columns) == ["model.activation", "optimizer.lr", "initializer", "seed", "epoch", "metric",
                                    "value"]  # fmt: skip
    assert len(curves) == len(GROUPS) * 6 * (1 + 3 * 2)


@pytest.mark.slow
def test_outputs_do_not_depend_on_the_manifest_order_of_groups(grouped_report, tmp_path):
    out = tmp_path / "reports"
    write_report(grouped_sweep(tmp_path, [GROUPS[1], GROUPS[3], GROUPS[0], GROUPS[2]]), out)
    for name in OUTPUTS:
        expected = (grouped_report / name).read_text()
        assert (out / name).read_text() == expected.replace(str(grouped_report.parent), str(tmp_path)), name


def _ungrouped(root: Path, group_column: bool) -> Path:
    sweep = root / "runs"
    entries = [
        make_run(
            sweep, init, seed, [0.9, 0.95 + 0.01 * seed + (0.02 if init == "beta" else 0)], complete=seed < 3
        )
        for init in ("alpha", "beta")
        for seed in range(4)
    ]
    frame = pd.DataFrame(entries)
    if group_column:
        frame["group"] = ""  # an empty cell: read back as NaN
    frame.to_csv(sweep / MANIFEST_NAME, index=False)
    return sweep


@pytest.mark.slow
def test_an_empty_group_column_reports_as_a_manifest_without_one(tmp_path):
    without, with_empty = tmp_path / "without", tmp_path / "with"
    write_report(_ungrouped(without, group_column=False), without / "reports")
    write_report(_ungrouped(with_empty, group_column=True), with_empty / "reports")
    files = sorted(
        p.relative_to(without / "reports") for p in (without / "reports").rglob("*") if p.is_file()
    )
    assert {f.as_posix() for f in files} >= {*OUTPUTS, "figures/forest_plot.png"}
    for name in files:
        left, right = (without / "reports" / name).read_bytes(), (with_empty / "reports" / name).read_bytes()
        assert left.replace(b"/without/", b"/with/") == right, name
    one_group = tmp_path / "one"  # a group level, but the same for every run: nothing varies between groups
    sweep = _ungrouped(one_group, group_column=True)
    manifest = pd.read_csv(sweep / MANIFEST_NAME).assign(group="optimizer.lr=0.01")
    manifest.to_csv(sweep / MANIFEST_NAME, index=False)
    write_report(sweep, one_group / "reports")
    for name in OUTPUTS:
        expected = (without / "reports" / name).read_text().replace("/without/", "/one/")
        assert (one_group / "reports" / name).read_text() == expected, name
    metrics = json.loads((without / "reports" / "metrics.json").read_text())
    assert list(metrics) == ["alpha", "beta"]  # not keyed by group
    assert "## Groups" not in (without / "reports" / "report.md").read_text()


def test_a_depth_sweep_with_other_swept_keys_gets_the_depth_report_per_group(tmp_path):
    sweep = tmp_path / "runs_depth"
    entries = []
    for lr in ("0.001", "0.01"):
        for depth in (2, 5):
            group = f"model.activation=relu,model.depth={depth},optimizer.lr={lr}"
            for seed in range(2):
                entry = make_run(sweep, "alpha", seed, [0.5, 0.9 if lr == "0.001" else 0.2], group=group)
                entries.append(
                    {**entry, "activation": "relu", "depth": depth, "hidden_sizes": "8-" * (depth - 1) + "8"}
                )
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    assert is_depth_sweep(load_sweep(sweep).runs)
    out = tmp_path / "reports"
    write_report(sweep, out)
    summary = pd.read_csv(out / "summary.csv")  # activation and depth stay the report's axes, lr groups
    assert list(summary.columns[:4]) == ["optimizer.lr", "activation", "depth", "init"]
    assert list(zip(summary["optimizer.lr"], summary.depth, strict=True)) == [
        (0.001, 2),
        (0.001, 5),
        (0.01, 2),
        (0.01, 5),
    ]
    assert list(summary.acc_mean) == pytest.approx([0.9, 0.9, 0.2, 0.2])
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    assert metrics["optimizer.lr=0.01"]["relu.depth_5.alpha"]["failed_to_train"] == 2
    report = (out / "report.md").read_text()
    assert "depths [2, 5]" in report and "seeds [0, 1]" in report  # plain numbers, not np.int64(2)
    assert re.findall(r"^## Group (.*)$", report, flags=re.MULTILINE) == [
        "`optimizer.lr=0.001`",
        "`optimizer.lr=0.01`",
    ]
    for group in metrics:
        assert f"](figures/{group}/accuracy_vs_depth.png)" in report
        assert (out / "figures" / group / "steps_to_90_heatmap.png").is_file()


def test_a_depth_sweep_without_groups_keeps_its_layout(tmp_path):
    sweep = tmp_path / "runs_depth"
    entries = [
        {**make_run(sweep / activation, "alpha", 0, [0.5, 0.9]), "activation": activation, "depth": 2}
        for activation in ("relu", "tanh")
    ]
    for entry, activation in zip(entries, ("relu", "tanh"), strict=True):
        entry["run_dir"] = f"{activation}/{entry['run_dir']}"
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    assert is_depth_sweep(load_sweep(sweep).runs)  # activation varies outside any group: as before groups
    out = tmp_path / "reports"
    write_report(sweep, out)
    assert list(json.loads((out / "metrics.json").read_text())) == [
        "relu.depth_2.alpha",
        "tanh.depth_2.alpha",
    ]
    assert (out / "figures" / "accuracy_vs_depth.png").is_file()


@pytest.mark.slow
def test_figures_of_groups_no_longer_swept_are_removed_and_nothing_else(tmp_path):
    """The report deletes the figures its previous run recorded and did not draw again; a file it never
    wrote (a user's own figure, even one named like ours) stays."""
    out = tmp_path / "reports"
    (out / "figures" / "mine").mkdir(parents=True)
    (out / "figures" / "mine" / "final_accuracy.png").write_bytes(b"a user's figure")
    (out / "figures" / "sketch.png").write_bytes(b"a user's figure")
    write_report(grouped_sweep(tmp_path / "grouped", GROUPS), out)
    write_report(_ungrouped(tmp_path / "plain", group_column=False), out)
    figures = sorted(p.relative_to(out / "figures").as_posix() for p in (out / "figures").rglob("*"))
    assert figures == [
        ".initstudy-figures.json",
        "final_accuracy.png",
        "forest_plot.png",
        "loss_by_step.png",
        "mine",
        "mine/final_accuracy.png",
        "sketch.png",
        "time_to_97.png",
        "val_error_by_step.png",
    ]
    assert (out / "figures" / "sketch.png").read_bytes() == b"a user's figure"


def test_pairs_with_an_initializer_that_did_not_train_are_set_apart_on_every_endpoint(tmp_path):
    """zeros' losses vary a little with the seed, so they are no constant; its pairs still leave the families."""
    sweep = tmp_path / "runs"
    entries = [make_run(sweep, "flat", s, [0.1135 + 0.0001 * s]) for s in range(3)]
    entries += [make_run(sweep, name, s, [v + 0.002 * s * (1 + (name == "b"))])
                for name, v in (("a", 0.97), ("b", 0.975)) for s in range(3)]  # fmt: skip
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    data = load_sweep(sweep)
    per_run = run_endpoints(data.runs, data.history, "val", STEPS_PER_EPOCH)
    compared = endpoints("val", STEPS_PER_EPOCH)
    kept = adjust(compare_endpoints(per_run, compared, margin=0.005, alpha=0.05), alpha=0.05)
    apart = adjust(
        compare_endpoints(per_run, compared, margin=0.005, alpha=0.05, set_apart={"flat"}), alpha=0.05
    )
    flat_pairs = apart.init_a.eq("flat") | apart.init_b.eq("flat")
    assert (apart[flat_pairs].degenerate != "").all()
    flat_accuracy = apart[flat_pairs & (apart.endpoint == ACCURACY)]
    assert (flat_accuracy.degenerate == "did not train vs trained").all() and len(flat_accuracy) == 2
    assert apart[flat_pairs].p_adjusted.isna().all() and not apart[flat_pairs].significant.any()
    accuracy = apart[apart.endpoint == ACCURACY]
    assert accuracy.set_index(["init_a", "init_b"]).loc[("a", "b")].family_size == 1
    assert kept[kept.endpoint == ACCURACY].family_size.max() == 3  # without it: 3 tests


def test_the_depth_report_sets_step_0_weight_gradients_against_adams_eps():
    """Under Adam a cell's step-0 weight gradients (median over hidden layers) are compared with eps: the share
    of a full step Adam's first update takes, g / (g + eps), and how many cells below and above eps fail."""
    from initstudy.report.depth import adam_eps, adam_statement, diagnostics_beside

    assert adam_eps({"optimizer": {"_target_": "torch.optim.Adam", "eps": 1e-7}}) == 1e-7
    assert adam_eps({"optimizer": {"_target_": "torch.optim.SGD"}}) is None
    summary = pd.DataFrame([{"init": "tiny", "activation": "relu", "depth": 2, "n_failed_to_train": 3},
                            {"init": "fine", "activation": "relu", "depth": 2, "n_failed_to_train": 0}])  # fmt: skip
    diagnostics = pd.DataFrame([
        {"init": init, "activation": "relu", "depth": 2, "layer": layer, "statistic": "weight_grad_std", "mean": g}
        for init, grads in {"tiny": [1e-12, 3e-12], "fine": [1e-3, 2e-3]}.items()
        for layer, g in enumerate(grads, start=1)
    ])  # fmt: skip
    beside = diagnostics_beside(summary, diagnostics, eps=1e-7).set_index("init")
    assert beside.loc["tiny", "weight_grad_std_median"] == pytest.approx(2e-12)
    assert beside.loc["tiny", "adam_step_share"] == pytest.approx(2e-12 / (2e-12 + 1e-7))
    assert beside.loc["fine", "adam_step_share"] == pytest.approx(1.5e-3 / (1.5e-3 + 1e-7))
    said = " ".join(adam_statement(beside.reset_index(), 1e-7))
    assert "1 cells sit below eps" in said and "1 of them fail" in said and "0 of them fail" in said
    assert adam_statement(beside.reset_index(), None) == []


def test_the_depth_report_gives_each_cell_its_intervals_and_the_linear_baseline():
    """Five seeds: a t-interval of the mean accuracy and the exact (Clopper-Pearson) interval of the failure
    probability, which stays wide at 0/5; beside every activation, its gain over the deep linear network."""
    from initstudy.report.depth import baseline_statement, failure_interval

    low, high = failure_interval(0, 5)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 5))  # ~0.52: "0 of 5" is not "never"
    assert failure_interval(5, 5) == (pytest.approx(0.025 ** (1 / 5)), 1.0)
    summary = pd.DataFrame([
        {"activation": activation, "depth": depth, "init": init, "acc_mean": acc}
        for activation, depth, init, acc in [
            ("relu", 2, "a", 0.95), ("relu", 2, "b", 0.96), ("relu", 10, "a", 0.90), ("relu", 10, "b", 0.11),
            ("linear", 2, "a", 0.91), ("linear", 2, "b", 0.92), ("linear", 10, "a", 0.92), ("linear", 10, "b", 0.11),
        ]
    ])  # fmt: skip
    said = " ".join(baseline_statement(summary))
    assert "per depth is 2: 0.920, 10: 0.920" in said  # the best initializer of the linear networks
    assert "relu (best initializer, per depth) 2: +0.040, 10: -0.020" in said
    assert baseline_statement(summary[summary.activation == "relu"]) == []


def test_the_setup_of_a_depth_by_width_model_names_its_layers():
    """A sweep of one depth (the main report's layout) of a preset's model.depth x model.width network."""
    from initstudy.report.markdown import setup_section

    runs = pd.DataFrame({"init": ["a"], "seed": [0]})
    text = setup_section({"model": {"hidden_sizes": None, "depth": 3, "width": 8}}, runs)
    assert "784-8-8-8-10" in text


def test_the_adam_statement_places_failures_above_eps_in_a_band():
    """Cells that fail with step-0 gradients above eps are named by how far above it they lie, and every cell
    above the highest of them trains."""
    from initstudy.report.depth import adam_statement

    summary = pd.DataFrame([
        {"init": "dead", "activation": "relu", "depth": 30, "n_failed_to_train": 5, "n_runs": 5,
         "weight_grad_std_median": 1e-20},
        {"init": "edge", "activation": "relu", "depth": 20, "n_failed_to_train": 2, "n_runs": 5,
         "weight_grad_std_median": 5e-7},
        {"init": "fine", "activation": "relu", "depth": 2, "n_failed_to_train": 0, "n_runs": 5,
         "weight_grad_std_median": 1e-3},
    ])  # fmt: skip
    said = adam_statement(summary, 1e-7)[0]
    assert "1 cells sit above it" not in said and "2 cells sit above it, and 1 of them fail" in said
    assert "Those 1 lie within x5 of eps (up to 5e-07), and 1 of them fail in some seeds only" in said
    assert "none of the 1 cells above 5e-07 fails" in said


# ---- a threshold crossed inside the first evaluation interval: an upper bound, not an interpolated step ----


def test_a_crossing_inside_the_first_evaluation_interval_is_reported_as_reached_by_the_first_pass(sweep):
    data = load_sweep(sweep)
    per_run = run_endpoints(data.runs, data.history, "val", STEPS_PER_EPOCH)
    # Every run of the fixture is at 0.1 at step 0 and at >= 0.90 at step 100: the line between them puts the
    # 90 % crossing at 100 * 0.8 / (acc - 0.1), e.g. 95.7 for beta's 0.96, a number the grid made.
    assert data.runs.set_index("init").loc["beta"].steps_to_90.min() < STEPS_PER_EPOCH
    summary = summarize(data.runs, per_run, data.history).set_index("init")
    for init in ("alpha", "beta"):
        row = summary.loc[init]
        assert row.steps_to_90_km_median == STEPS_PER_EPOCH and row.steps_to_90_upper_bound
        assert row.steps_to_90_in_first_interval == 3 and row.steps_to_90_km_ci_low == 0
    # 97 % is crossed between the first and second passes: interpolated as before, no bound
    alpha = summary.loc["alpha"]
    assert alpha.steps_to_97_km_median == pytest.approx(200) and not alpha.steps_to_97_upper_bound
    assert alpha.steps_to_97_in_first_interval == 0
    assert km_cell(next(summary.reset_index().itertuples()), "90").startswith(f"≤{STEPS_PER_EPOCH} [0, ")


def test_the_written_summary_marks_the_bound(sweep, tmp_path):
    out = tmp_path / "out"
    write_report(sweep, out)
    summary = pd.read_csv(out / "summary.csv").set_index("init")
    assert summary.steps_to_90_upper_bound.tolist() == [True, True]
    assert summary.steps_to_90_km_median.tolist() == [STEPS_PER_EPOCH, STEPS_PER_EPOCH]
    # beta reaches 95 % by the first pass in every seed: its table cell says so
    assert "≤100 [0, 100; 75.0%] (3/3)" in (out / "report.md").read_text()


def test_the_depth_report_marks_a_median_inside_the_first_evaluation_interval(tmp_path):
    from initstudy.report.depth import STEPS, UPPER, count_annotations, summarize_depth

    sweep = tmp_path / "runs_depth"
    entries = [
        {**make_run(sweep / "fast", "alpha", 0, [0.95, 0.97]), "activation": "relu", "depth": 2},
        {**make_run(sweep / "slow", "alpha", 0, [0.5, 0.95]), "activation": "relu", "depth": 5},
    ]
    for entry, folder in zip(entries, ("fast", "slow"), strict=True):
        entry["run_dir"] = f"{folder}/{entry['run_dir']}"
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    data = load_sweep(sweep)
    summary = summarize_depth(data.runs, data.history).set_index("depth")
    assert summary.loc[2, STEPS] == STEPS_PER_EPOCH and summary.loc[2, UPPER]  # by step 100, not ~94
    assert summary.loc[5, STEPS] == pytest.approx(100 + 0.4 / 0.45 * 100) and not summary.loc[5, UPPER]
    texts = count_annotations(summary.reset_index(), STEPS, "reached_90", "total_90", ".0f", UPPER)[STEPS]
    assert texts.tolist() == ["≤100 (1/1)", "189 (1/1)"]


@pytest.mark.slow
def test_the_report_counts_the_test_images_and_tests_speed_by_seed_and_repeats_its_bytes(sweep, tmp_path):
    """Both sources of noise (the bootstrap's table, equivalence at ±0.2 and ±0.5 pp) and the permutation test
    of time to 97% are in the report, and a second report of the same runs is the same bytes (seeded)."""
    first, second = tmp_path / "first", tmp_path / "second"
    write_report(sweep, first)
    write_report(sweep, second)
    report = (first / "report.md").read_text()
    assert (second / "report.md").read_text() == report
    assert "## Final test accuracy, seeds and test images (hierarchical bootstrap)" in report
    assert "within ±0.2 pp (rule: seeds >= 5)" in report and "within ±0.5 pp (rule: seeds >= 5)" in report
    assert "| `alpha` − `beta` | 3 (paired) | -6.00 |" in report  # 0.92 - 0.98 on the saved predictions
    assert "paired by seed (exact permutation and stratified log-rank tests)" in report
    assert "exact permutation test paired by seed, p = " in report


@pytest.mark.slow
def test_the_reports_level_is_read_from_the_claims_file(tmp_path, monkeypatch):
    """The report stage reads alpha from conf/experiment/claims/study.yaml under the study's root: raised to
    0.4 there, the pair whose adjusted p is about 0.3 differs too; the comparisons carry each pair's verdict."""
    sweep = tmp_path / "runs"
    values = {"a": [0.900, 0.901, 0.902], "b": [0.900, 0.9014, 0.9036], "c": [0.950, 0.953, 0.955]}
    entries = [make_run(sweep, name, s, [v]) for name, vs in values.items() for s, v in enumerate(vs)]
    pd.DataFrame(entries).to_csv(sweep / MANIFEST_NAME, index=False)
    write_report(sweep, tmp_path / "default")
    root = tmp_path / "root"
    claims = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "conf/experiment/claims/study.yaml").read_text()
    )
    entry = next(e for e in claims["claims"] if e["id"] == "pairs_differ")
    entry["value"], entry["rule"] = 0.4, entry["rule"].replace("0.05", "0.4")
    (root / "conf/experiment/claims").mkdir(parents=True)
    (root / "conf/experiment/claims/study.yaml").write_text(yaml.safe_dump(claims, allow_unicode=True))
    monkeypatch.setenv("INITSTUDY_ROOT", str(root))
    write_report(sweep, tmp_path / "looser")
    default, looser = ((tmp_path / name / "report.md").read_text() for name in ("default", "looser"))
    assert "Final test accuracy: 2 of 3 pairs of trained initializers differ significantly" in default
    assert "Final test accuracy: 3 of 3 pairs of trained initializers differ significantly" in looser
    assert "adjusted p is below 0.4" in looser and "Two-sided α=0.4" in looser
    comparisons = pd.read_csv(tmp_path / "looser" / "comparisons.csv")
    accuracy = comparisons[comparisons.endpoint == ACCURACY]
    assert accuracy.difference_verdict.tolist() == ["differs"] * 3 and set(accuracy.difference_min_seeds) == {
        3
    }

"""The report's figures on synthetic frames shaped like the study's: what each figure plots, not how it looks.

The frames stand in for real runs (the validation-split training change lands separately): four initializers
of which zeros never trains, five seeds, 782 steps per epoch, a 0 on a log-scaled quantity, censored runs.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgba

from initstudy.core import style
from initstudy.report import depth, figures

INITS = ["zeros", "random_normal", "glorot_uniform", "he_uniform"]
SEEDS = range(5)
STEPS_PER_EPOCH, EPOCHS, WINDOW, VAL_EVERY = 782, 10, 50, 100
LAST_STEP = STEPS_PER_EPOCH * EPOCHS
SPEED = {"random_normal": 40.0, "glorot_uniform": 15.0, "he_uniform": 14.0}  # steps to lose half the loss
ZERO_SEED, ZERO_INIT = 3, "he_uniform"  # the run whose last validation pass is perfect and one window is 0
ZERO_WINDOW = 4000


def _val_steps() -> list[int]:
    """Step 0, every 100 steps, and each epoch's end, as the training change logs them."""
    ends = [STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)]
    return sorted({0, *range(VAL_EVERY, LAST_STEP + 1, VAL_EVERY), *ends})


def _run_rows(init: str, seed: int) -> list[dict]:
    """One run's long history: 2.3026 loss and 0.1135 accuracy throughout for zeros, a power-law descent
    with seed-to-seed noise for the others."""
    noise = np.random.default_rng(1000 * seed + INITS.index(init))

    def curve(step: int, start: float, floor: float, power: float) -> float:
        if init == "zeros":
            return start
        jitter = float(np.exp(noise.normal(0, 0.06)))
        return (floor + (start - floor) / (1 + step / SPEED[init]) ** power) * jitter

    epoch_of = lambda step: math.ceil(step / STEPS_PER_EPOCH)  # noqa: E731
    rows = []
    for step in range(WINDOW, LAST_STEP + 1, WINDOW):
        value = (
            0.0
            if (init, seed, step) == (ZERO_INIT, ZERO_SEED, ZERO_WINDOW)
            else curve(step, 2.3026, 0.0, 0.8)
        )
        rows.append({"epoch": epoch_of(step), "step": step, "metric": "train/loss_step", "value": value})
    for step in _val_steps():
        error = 0.8865 if init == "zeros" else curve(step, 0.8865, 0.018, 1.2)
        if (init, seed, step) == (ZERO_INIT, ZERO_SEED, LAST_STEP):
            error = 0.0
        rows += [
            {
                "epoch": epoch_of(step),
                "step": step,
                "metric": "val/loss_step",
                "value": curve(step, 2.3026, 0.07, 1),
            },
            {"epoch": epoch_of(step), "step": step, "metric": "val/acc_step", "value": 1 - error},
        ]
        if step % STEPS_PER_EPOCH == 0:
            rows += [
                {"epoch": step // STEPS_PER_EPOCH, "step": step, "metric": metric, "value": value}
                for metric, value in (("val/loss", rows[-2]["value"]), ("val/acc", 1 - error))
            ]
    return [{"init": init, "seed": seed, **row} for row in rows]


def make_history() -> pd.DataFrame:
    rows = [row for init, seed in itertools.product(INITS, SEEDS) for row in _run_rows(init, seed)]
    return pd.DataFrame(rows).assign(group="", run_dir="")


def make_times() -> pd.DataFrame:
    """Steps to 97%: zeros never gets there, random_normal twice not, glorot always, he once not."""
    steps = {
        "zeros": [None] * 5,
        "random_normal": [2100.0, 2650.5, None, 3050.0, None],
        "glorot_uniform": [1010.0, 1190.0, 1190.0, 1320.0, 1405.5],
        "he_uniform": [980.0, 1100.0, 1250.0, None, 1600.0],
    }
    rows = [
        {
            "init": init,
            "seed": seed,
            "steps": LAST_STEP if step is None else step,
            "reached": step is not None,
        }
        for init, values in steps.items()
        for seed, step in enumerate(values)
    ]
    return pd.DataFrame(rows)


DEGENERATE = {"test accuracy", "minimum validation loss"}  # zeros is a constant there


def make_comparisons() -> pd.DataFrame:
    rows = []
    for endpoint in (
        "test accuracy",
        "train-loss AUC",
        "validation loss at step 100",
        "minimum validation loss",
    ):
        accuracy = endpoint.endswith("accuracy")
        for index, (a, b) in enumerate(itertools.combinations(INITS, 2)):
            degenerate = "constant vs sample" if a == "zeros" and endpoint in DEGENERATE else ""
            diff = (index - 2.5) * (0.002 if accuracy else 0.05)
            rows.append({
                "endpoint": endpoint, "init_a": a, "init_b": b, "design": "paired" if index % 2 else "welch",
                "diff_mean": diff, "diff_ci_low": diff - 0.003, "diff_ci_high": diff + 0.003,
                "degenerate": degenerate, "margin": 0.005 if accuracy else math.nan,
                "equivalent": accuracy and abs(diff) + 0.003 < 0.005, "verdict": "", "significant": abs(diff) > 0.003,
            })  # fmt: skip
    return pd.DataFrame(rows)


def make_final() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and summary as final_accuracy reads them; one he_uniform run is perfect (test error 0)."""
    accs = {"zeros": [0.1135] * 5, "random_normal": [0.977, 0.978, 0.976, 0.979, 0.980],
            "glorot_uniform": [0.980, 0.981, 0.979, 0.982, 0.980], "he_uniform": [0.979, 1.0, 0.978, 0.980, 0.979]}  # fmt: skip
    runs = pd.DataFrame(
        [
            {"init": i, "seed": s, "status": "complete", "test/acc": a}
            for i, v in accs.items()
            for s, a in enumerate(v)
        ]
    )
    summary = pd.DataFrame([
        {"init": i, "acc_mean": np.mean(v), "acc_ci95_low": np.mean(v) - 0.01, "acc_ci95_high": np.mean(v) + 0.01}
        for i, v in accs.items()
    ])  # fmt: skip
    return runs, summary


def _depth_summary() -> pd.DataFrame:
    rows = []
    for activation, init, depth_ in itertools.product(("relu", "tanh"), INITS[1:], (2, 5, 10, 20, 30)):
        reached = 0 if depth_ == 30 else 3 - (depth_ == 20)
        rows.append({"activation": activation, "init": init, "depth": depth_, "n_runs": 3, "reached_90": reached,
                     "acc_mean": 0.95 - depth_ / 100, "steps_to_90_median": math.nan if not reached else 157 * (1 + depth_ // 10)})  # fmt: skip
    return pd.DataFrame(rows)


def draw_all(folder: Path) -> dict[str, object]:
    """Every figure of the new layout, plus the heatmap with counts; name -> returned Figure."""
    summary = _depth_summary()
    counts = depth.count_annotations(summary, "steps_to_90_median", "reached_90", "n_runs", ".0f")
    return {
        "loss": figures.loss_by_step(make_history(), INITS, folder / "loss.png"),
        "error": figures.val_error_by_step(make_history(), INITS, folder / "error.png"),
        "forest": figures.forest_plot(make_comparisons(), folder / "forest.png"),
        "km": figures.time_to_threshold(make_times(), folder / "km.png"),
        "final": figures.final_accuracy(*make_final(), folder / "final.png"),
        "heatmap": depth.heatmap_figure(
            summary,
            "steps_to_90_median",
            "Median steps to 90%",
            folder / "heatmap.png",
            ".0f",
            annotations=counts,
        ),
    }


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return make_history()


@pytest.fixture(scope="module")
def times() -> pd.DataFrame:
    return make_times()


@pytest.fixture(scope="module")
def comparisons() -> pd.DataFrame:
    return make_comparisons()


@pytest.fixture(scope="module")
def final() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_final()


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("figures")
    return folder, draw_all(folder)


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.png"))}


def test_every_figure_is_a_png_and_redraws_to_the_same_bytes(drawn, tmp_path):
    folder, _ = drawn
    draw_all(tmp_path)
    assert sorted(_digests(folder)) == [
        "error.png",
        "final.png",
        "forest.png",
        "heatmap.png",
        "km.png",
        "loss.png",
    ]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in folder.glob("*.png"))
    assert _digests(tmp_path) == _digests(folder)
    assert all(b"matplotlib" not in path.read_bytes() for path in folder.glob("*.png"))  # no Software tag


@pytest.mark.slow
def test_bytes_do_not_depend_on_the_process(drawn, tmp_path):
    """Another interpreter with another hash seed (set and dict orders) draws the same bytes."""
    repo = Path(__file__).resolve().parents[1]
    script = "import sys, pathlib, tests.test_figures as t; t.draw_all(pathlib.Path(sys.argv[1]))"
    env = {"PYTHONHASHSEED": "12345", "PYTHONPATH": f"{repo / 'src'}:{repo}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=repo, env=env, timeout=120)
    assert _digests(tmp_path) == _digests(drawn[0])


def test_colours_are_distinct_for_twelve_names_and_fixed_per_name():
    known = list(style.INIT_COLOURS)
    assert len(known) == 12
    assert len(set(style.colour_map(known).values())) == 12
    unknown = [f"new_{index}" for index in range(12)]
    assert len(set(style.colour_map(unknown).values())) == 12
    mixed = known[:6] + unknown[:6]
    assert len(set(style.colour_map(mixed).values())) == 12
    everything = style.colour_map(known)
    for size in (1, 3, 4):
        for subset in itertools.combinations(known[::-1], size):
            assert style.colour_map(subset) == {name: everything[name] for name in subset}
    # an unknown name keeps its colour whichever known options it is shown with, and never takes theirs
    alone = style.colour_map(["new_a"])["new_a"]
    assert style.colour_map([*known, "new_a"])["new_a"] == alone
    assert style.colour_map(["new_a", *INITS])["new_a"] == alone
    assert alone not in style.INIT_COLOURS.values()
    assert style.colour_map(["new_b", "new_a"]) == style.colour_map(["new_a", "new_b"])


def test_the_palette_is_colour_blind_safe_and_zeros_is_dark_grey():
    colours = style.colour_map(INITS)
    red, green, blue = (int(colours["zeros"][i : i + 2], 16) for i in (1, 3, 5))
    assert red == green == blue < 0x60
    okabe_ito = {"#0072B2", "#D55E00", "#009E73", "#56B4E9", "#CC79A7"}
    assert {colours[name] for name in INITS[1:]} <= okabe_ito
    assert "#E69F00" not in {*style.INIT_COLOURS.values(), *style.SPARE_COLOURS}  # one orange only


def _log_axes(fig) -> list:
    axes = [*fig.axes, *(child for ax in fig.axes for child in ax.child_axes)]
    return [ax for ax in axes if ax.get_yscale() == "log"]


def _plotted_y(ax) -> np.ndarray:
    """Every y value drawn in data coordinates: line points, band polygon corners, scatter offsets."""
    parts = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    for collection in ax.collections:
        if isinstance(collection, PolyCollection):
            parts += [path.vertices[:, 1] for path in collection.get_paths()]
        elif isinstance(collection, PathCollection):
            parts.append(np.ma.filled(collection.get_offsets(), np.nan)[:, 1].astype(float))
    values = np.concatenate(parts) if parts else np.array([])
    return values[np.isfinite(values)]


@pytest.mark.parametrize("name", ["loss", "error", "final"])
def test_zero_values_are_masked_from_log_axes_and_marked_on_the_edge(drawn, name):
    fig = drawn[1][name]
    log_axes = _log_axes(fig)
    assert log_axes
    for ax in log_axes:
        assert (_plotted_y(ax) > 0).all()
    marks = [line for ax in log_axes for line in ax.get_lines() if line.get_marker() == figures.ZERO_MARK]
    assert marks, "the masked 0 is marked"
    for mark in marks:
        assert np.allclose(mark.get_ydata(), mark.axes.get_ylim()[0])  # on the bottom edge
    if name != "final":
        expected = ZERO_WINDOW if name == "loss" else LAST_STEP
        assert any(expected in mark.get_xdata() for mark in marks)
        legend = fig.axes[0].get_legend()
        assert "0 (off log scale)" in [text.get_text() for text in legend.get_texts()]


def _panel(fig, ylabel_start: str):
    return next(ax for ax in fig.axes if ax.get_ylabel().startswith(ylabel_start))


def test_loss_limits_follow_the_trained_curves_and_zeros_is_labelled_off_scale(drawn):
    fig = drawn[1]["loss"]
    train_ax = _panel(fig, "training loss")
    assert train_ax.get_yscale() == "log"
    assert train_ax.get_ylim()[1] < 2.30  # the trained curves' first windows set the top, not zeros' 2.30
    notes = [child.get_text() for child in train_ax.texts]
    assert any(note.startswith("zeros ≈ 2.3") and "off scale" in note for note in notes)
    assert [line.get_label() for line in train_ax.get_lines()[:4]] == INITS


def test_loss_has_a_linear_zoom_on_the_last_half_of_the_trained_curves(drawn):
    zooms = [ax for ax in drawn[1]["loss"].axes if ax.get_title().startswith("zoom")]
    assert len(zooms) == 2
    for zoom in zooms:
        assert zoom.get_yscale() == "linear" and zoom.get_xscale() == "linear"
        assert len(zoom.get_lines()) == 3  # zeros, which never trains, stays on the log panel only
        steps = np.concatenate([line.get_xdata() for line in zoom.get_lines()])
        assert steps.min() >= steps.max() / 2 and steps.max() > LAST_STEP - WINDOW
        assert zoom.get_ylim()[1] < 0.2  # the trained curves' late range, not 2.30


def test_curves_are_the_mean_over_seeds(drawn, history):
    ax = _panel(drawn[1]["loss"], "validation loss (whole validation split), log")
    line = next(line for line in ax.get_lines() if line.get_label() == "glorot_uniform")
    points = history[(history.init == "glorot_uniform") & (history.metric == "val/loss_step")]
    expected = points.groupby("step").value.mean()
    assert np.allclose(line.get_xdata(), expected.index) and np.allclose(line.get_ydata(), expected.values)


def test_validation_error_marks_the_threshold(drawn):
    ax = _panel(drawn[1]["error"], "validation error (1 - accuracy), log")
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert any(np.allclose(line.get_ydata(), 0.03) for line in dashed)
    assert "97% accuracy" in [text.get_text() for text in ax.texts]
    he = next(line for line in ax.get_lines() if line.get_label() == "he_uniform")
    assert np.isnan(he.get_ydata()[-1]) is np.False_  # the mean over seeds at the end is positive, kept


def test_forest_plot_leaves_degenerate_pairs_out_and_lists_them(drawn, comparisons):
    fig = drawn[1]["forest"]
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == list(dict.fromkeys(comparisons.endpoint))
    footnote = "\n".join(text.get_text() for text in fig.texts)
    for endpoint, ax in zip(dict.fromkeys(comparisons.endpoint), panels, strict=True):
        rows = comparisons[comparisons.endpoint == endpoint]
        shown = [label.get_text() for label in ax.get_yticklabels()]
        kept = rows[rows.degenerate == ""]
        assert len(shown) == len(kept)
        for row in rows.itertuples():
            pair = f"{row.init_a} − {row.init_b}"
            assert any(label.startswith(pair + " ") for label in shown) == (row.degenerate == "")
            assert (f"{endpoint}: {pair} (constant vs sample)" in footnote) == (row.degenerate != "")


def test_forest_plot_rows_in_percentage_points_with_margin_and_filled_when_equivalent(drawn, comparisons):
    fig = drawn[1]["forest"]
    accuracy = next(ax for ax in fig.axes if ax.get_title(loc="left") == "test accuracy")
    rows = comparisons[(comparisons.endpoint == "test accuracy") & (comparisons.degenerate == "")]
    markers = [line for line in accuracy.get_lines() if line.get_marker() == "o"]
    assert len(markers) == len(rows)
    for line, row in zip(markers, rows.itertuples(), strict=True):
        assert line.get_xdata()[0] == pytest.approx(row.diff_mean * 100)
        assert (to_rgba(line.get_markerfacecolor()) == (0.0, 0.0, 0.0, 1.0)) == row.equivalent
    bands = [c for c in accuracy.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(rows)
    assert np.allclose(sorted({*bands[0].get_paths()[0].vertices[:, 0].round(9)}), [-0.5, 0.5])
    assert "percentage points" in accuracy.get_xlabel()
    auc = next(ax for ax in fig.axes if ax.get_title(loc="left") == "train-loss AUC")
    assert not [c for c in auc.collections if isinstance(c, PolyCollection)]  # no margin, no band
    assert "percentage points" not in auc.get_xlabel()


def test_forest_plot_without_testable_rows_says_so(comparisons, tmp_path):
    only_degenerate = comparisons.assign(degenerate="constant vs constant")
    fig = figures.forest_plot(only_degenerate, tmp_path / "forest.png")
    assert "no testable comparisons" in [text.get_text() for ax in fig.axes for text in ax.texts]


def test_time_to_threshold_draws_the_estimate_with_censoring_marks(drawn, times):
    ax = drawn[1]["km"].axes[0]
    curves = {
        line.get_label().split(" (")[0]: line for line in ax.get_lines() if line.get_drawstyle() != "default"
    }
    he = curves["he_uniform"]
    # he_uniform: 980, 1100, 1250, 1600 reached, one censored at the last step: 4/5, 3/5, 2/5, 1/5, then flat
    assert np.allclose(he.get_xdata(), [0, 980, 1100, 1250, 1600, LAST_STEP])
    assert np.allclose(he.get_ydata(), [1, 0.8, 0.6, 0.4, 0.2, 0.2])
    assert he.get_label() == "he_uniform (reached 4/5)"
    assert (
        np.allclose(curves["zeros"].get_ydata(), 1) and curves["zeros"].get_label() == "zeros (reached 0/5)"
    )
    plus = [line for line in ax.get_lines() if line.get_marker() == "+"]
    he_plus = next(line for line in plus if line.get_color() == style.INIT_COLOURS["he_uniform"])
    assert he_plus.get_xdata().tolist() == [LAST_STEP] and np.allclose(he_plus.get_ydata(), 0.2)
    random_plus = next(line for line in plus if line.get_color() == style.INIT_COLOURS["random_normal"])
    assert np.allclose(random_plus.get_ydata(), 0.4)  # 3 of 5 reached before both censorings: 2/5 left
    assert len(plus) == 3  # glorot_uniform reached every time: nothing censored


def test_final_accuracy_shows_test_error_and_zooms_on_the_trained(drawn):
    log_ax, zoom = drawn[1]["final"].axes
    assert log_ax.get_ylabel().startswith("test error (evaluated once, after training)")
    assert zoom.get_ylabel() == "test error (evaluated once, after training)"
    assert [label.get_text() for label in zoom.get_xticklabels()] == INITS[1:]
    assert zoom.get_ylim()[1] < 0.1  # zeros' 0.89 is not on the zoom's scale
    dots = [c for c in log_ax.collections if isinstance(c, PathCollection)]
    assert tuple(dots[0].get_facecolor()[0][:3]) == pytest.approx((0x44 / 255,) * 3)  # zeros in its colour


def test_heatmap_cells_carry_counts_and_old_calls_still_work(drawn, tmp_path):
    fig = drawn[1]["heatmap"]
    panels = [ax for ax in fig.axes if ax.get_title() in ("relu", "tanh")]
    texts = [text.get_text() for text in panels[0].texts]
    assert "157 (3/3)" in texts and "471 (2/3)" in texts and "– (0/3)" in texts
    colorbar = next(ax for ax in fig.axes if ax not in panels)
    assert colorbar.get_ylabel() == "Median steps to 90%"
    summary = _depth_summary()
    old = depth.heatmap_figure(summary, "acc_mean", "Mean final test accuracy", tmp_path / "h.png", ".2f")
    cells = [text.get_text() for text in old.axes[0].texts]
    assert cells[:2] == ["0.93", "0.90"] and len(cells) == 15
    assert [label.get_text() for label in old.axes[0].get_yticklabels()] == INITS[1:]


def test_depth_accuracy_figure_uses_the_fixed_colours(tmp_path):
    depth_summary = _depth_summary().assign(acc_std=0.01)
    fig = depth.accuracy_figure(depth_summary, tmp_path / "a.png")
    assert {line.get_color() for line in fig.axes[0].get_lines()} >= {
        style.INIT_COLOURS[i] for i in INITS[1:]
    }
    assert (tmp_path / "a.png").stat().st_size > 0

"""The depth report's forward-signal measures: the activation std (scale) and two images' correlation at the last
hidden layer (information), on the committed step-0 diagnostics and on small fabricated cells."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from initstudy.report.depth import diagnostics_beside, statements
from initstudy.report.depth_signal import last_hidden_correlation, signal_statement

REPORTS = Path(__file__).resolve().parents[1] / "reports" / "depth"
STEP0 = ["act_std_last_over_first", "grad_std_first_over_last", "dead_or_saturated_max", "weight_grad_std_median",
         "adam_step_share", "corr_last"]  # fmt: skip


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    """The committed depth summary with its step-0 columns recomputed from the committed diagnostics."""
    summary = pd.read_csv(REPORTS / "summary.csv")
    diagnostics = pd.read_csv(REPORTS / "diagnostics" / "diagnostics.csv")
    return diagnostics_beside(summary.drop(columns=STEP0, errors="ignore"), diagnostics, 1e-7)


def test_torch_default_keeps_its_activation_std_but_collapses_two_images_to_one_direction(committed):
    cells = committed.set_index(["init", "activation", "depth"])
    for activation, depth in [("relu", 10), ("relu", 20), ("relu", 30), ("tanh", 20), ("tanh", 30)]:
        cell = cells.loc[("torch_default", activation, depth)]
        assert cell.n_failed_to_train > 0
        assert cell.act_std_last_over_first > 0.25  # the scale measure sees an intact signal
        assert cell.corr_last == pytest.approx(1.0, abs=5e-4)  # the correlation measure sees the collapse
    # tanh at 10 layers too, though it trains there: 1.000 to three decimals
    assert f"{cells.loc[('torch_default', 'tanh', 10)].corr_last:.3f}" == "1.000"


def test_the_statement_counts_the_collapse_the_activation_std_misses(committed):
    (text, _) = signal_statement(committed)
    failing = committed[committed.n_failed_to_train > 0]
    kept = failing[failing.act_std_last_over_first >= 0.1]
    assert len(kept) and (kept.init == "torch_default").all()
    assert f"The other {len(kept)} keep it" in text and f"yet {len(kept)} of them" in text
    assert "`torch_default` relu 10 (1.000)" in text
    assert "do not separate the gradient from the forward signal" in text


def test_a_failing_cell_that_keeps_scale_and_information_is_named():
    summary = pd.DataFrame([
        {"init": "a", "activation": "relu", "depth": 10, "n_failed_to_train": 3, "act_std_last_over_first": 0.9,
         "grad_std_first_over_last": 1e-4, "corr_last": 0.5},
        {"init": "b", "activation": "relu", "depth": 10, "n_failed_to_train": 5, "act_std_last_over_first": 0.3,
         "grad_std_first_over_last": 1e-4, "corr_last": 0.999},
        {"init": "c", "activation": "relu", "depth": 10, "n_failed_to_train": 0, "act_std_last_over_first": 1.0,
         "grad_std_first_over_last": 1.0, "corr_last": 0.6},
    ])  # fmt: skip
    (text, _) = signal_statement(summary)
    assert (
        "1 failing cell(s) keep both the scale and the information of the forward signal: `a` relu 10" in text
    )
    assert "yet 1 of them" in text and "`b` relu 10 (0.999)" in text
    assert "has vanished in 2 of the 2" in text and "neither measure alone" not in text


def test_the_last_hidden_layer_is_the_one_read():
    diagnostics = pd.DataFrame([
        {"init": "a", "activation": "tanh", "depth": 2, "layer": layer, "statistic": "correlation", "mean": value}
        for layer, value in [(1, 0.4), (2, 0.8), (3, 0.9)]  # layer 3: the logits
    ])  # fmt: skip
    assert last_hidden_correlation(diagnostics, "a", "tanh", 2) == 0.8


def test_the_per_initializer_statement_gives_the_correlation_beside_the_stds(committed):
    relu = next(s for s in statements(committed) if s.startswith("**relu**"))
    assert "`torch_default` fails from 20 layers" in relu
    assert "two images' correlation at its last hidden layer is 1.000" in relu

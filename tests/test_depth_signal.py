"""The depth report's forward-signal measures: the activation std (scale) and two images' correlation at the last
hidden layer (information), on the committed step-0 diagnostics and on small fabricated cells; their thresholds
are the rules of conf/experiment/claims/depth.yaml, printed beside each count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from initstudy.report.depth import diagnostics_beside, statements
from initstudy.report.depth_signal import last_hidden_correlation, marker_score, signal_statement
from initstudy.report.papers.rules import ClaimsFileError
from initstudy.report.study_rules import GRADIENT_LOST, INPUTS_COLLAPSED, SCALE_LOST, depth_thresholds

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports" / "depth"
DIAGNOSED = 2  # the seeds of the committed depth diagnostics (dvc.yaml: diagnose_depth, seed=0,1)
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
    (text, _) = signal_statement(committed, DIAGNOSED)
    failing = committed[committed.n_failed_to_train > 0]
    kept = failing[failing.act_std_last_over_first >= 0.1]
    assert len(kept) and (kept.init == "torch_default").all()
    assert f"The other {len(kept)} keep it" in text and f"yet {len(kept)} of them" in text
    assert "`torch_default` relu 10 (1.000)" in text
    assert "do not separate the gradient from the forward signal" in text


def cells_abc() -> pd.DataFrame:
    return pd.DataFrame([
        {"init": "a", "activation": "relu", "depth": 10, "n_failed_to_train": 3, "act_std_last_over_first": 0.9,
         "grad_std_first_over_last": 1e-4, "corr_last": 0.5},
        {"init": "b", "activation": "relu", "depth": 10, "n_failed_to_train": 5, "act_std_last_over_first": 0.3,
         "grad_std_first_over_last": 1e-4, "corr_last": 0.999},
        {"init": "c", "activation": "relu", "depth": 10, "n_failed_to_train": 0, "act_std_last_over_first": 1.0,
         "grad_std_first_over_last": 1.0, "corr_last": 0.6},
    ])  # fmt: skip


def test_a_failing_cell_that_keeps_scale_and_information_is_named():
    (text, _) = signal_statement(cells_abc(), DIAGNOSED)
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


def claims_root(tmp_path: Path, **values: float) -> Path:
    """A study root whose depth claims file is the repository's with the thresholds ``values`` (by rule id)
    moved, each rule's words moved with it."""
    source = REPO / "conf" / "experiment" / "claims" / "depth.yaml"
    content = yaml.safe_load(source.read_text())
    for entry in content["claims"]:
        if entry["id"] in values:
            entry["rule"] = entry["rule"].replace(f"{entry['value']:g}", f"{values[entry['id']]:g}")
            entry["value"] = values[entry["id"]]
    folder = tmp_path / "conf" / "experiment" / "claims"
    folder.mkdir(parents=True)
    (folder / "depth.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return tmp_path


def test_the_thresholds_are_the_claims_files_and_each_count_prints_its_rule():
    rules = depth_thresholds()
    assert {key: rule.value for key, rule in rules.items()} == {SCALE_LOST: 0.1, INPUTS_COLLAPSED: 0.99,
                                                                 GRADIENT_LOST: 0.01}  # fmt: skip
    (text, _) = signal_statement(cells_abc(), DIAGNOSED)
    assert "(rule `forward_scale_lost`: scale lost if act last/first is below 0.1)" in text
    assert "(rule `inputs_indistinguishable`: inputs indistinguishable if corr last is at least 0.99:" in text
    assert "(rule `gradient_vanished`: gradient vanished if grad first/last is below 0.01)" in text
    assert f"on the step-0 diagnostics' {DIAGNOSED} seeds, the rules need 2" in text


def test_moving_a_threshold_in_the_claims_file_moves_the_count(tmp_path):
    # b keeps its scale (0.3) at the file's 0.1; at 0.5 it has lost it, and no longer hides behind the scale
    moved = depth_thresholds(claims_root(tmp_path, forward_scale_lost=0.5))
    (text, _) = signal_statement(cells_abc(), DIAGNOSED, moved)
    assert (
        "1 lose the forward signal's scale (rule `forward_scale_lost`: scale lost if act last/first is below 0.5)"
        in text
    )
    assert "yet 0 of them" in text
    (default, _) = signal_statement(cells_abc(), DIAGNOSED)
    assert "0 lose the forward signal's scale" in default and "yet 1 of them" in default


def test_a_rule_whose_words_do_not_state_its_threshold_is_refused(tmp_path):
    root = claims_root(tmp_path)
    path = root / "conf" / "experiment" / "claims" / "depth.yaml"
    path.write_text(path.read_text().replace("value: 0.99", "value: 0.9"))
    with pytest.raises(ClaimsFileError, match=r"inputs_indistinguishable.*does not state its value 0\.9"):
        depth_thresholds(root)


def test_fewer_diagnosed_seeds_than_the_rules_need_are_not_testable():
    (text, _) = signal_statement(cells_abc(), 1)
    assert "Not testable at this budget: the step-0 diagnostics average over 1 seed(s), the rules of" in text
    assert "need 2" in text and "lose the forward signal's scale" not in text and "has vanished" not in text


def test_each_measure_is_scored_as_a_marker_of_failure_beside_every_cell_trains():
    summary = cells_abc()  # a and b fail, c trains
    # by hand: scale lost (< 0.1) nowhere: right on c only; corr >= 0.99 in b: right on b and c; gradient lost
    # (< 0.01) in a and b: right on all 3; "every cell trains": right on c only
    assert marker_score(summary, summary.act_std_last_over_first < 0.1) == 1
    assert marker_score(summary, summary.corr_last >= 0.99) == 2
    assert marker_score(summary, summary.grad_std_first_over_last < 0.01) == 3
    (text, _) = signal_statement(summary, DIAGNOSED)
    assert ("over all 3 cells: the scale is right on 1, the correlation is right on 2, the gradient is right on 3; "
            "the trivial baseline 'every cell trains (no measure marks a failure)' on 1.") in text  # fmt: skip

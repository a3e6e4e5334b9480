"""The maximum trainable depth per sigma_w^2 (initstudy.report.papers.max_depth), on synthetic cells, no
training: the deepest depth that trains and its censoring, the fit of L_max = c xi_c recovering a known c with
an interval, the byte-reproducible bootstrap, and the verdicts of the two claims read from it
(conf/experiment/claims/schoenholz2017.yaml: max_depth_6_xi_c, deepest_at_boundary)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from initstudy.nn.propagation import mean_field
from initstudy.report.papers import max_depth, schoenholz2017
from initstudy.report.papers.claims import AGREES, INCONCLUSIVE, NOT_TESTABLE, PARTS
from initstudy.report.papers.rules import ClaimsFileError, load

SIGMA_B2 = 0.05
CRITICAL = 1.76
RULES = load("schoenholz2017")


def _xi(scale: float) -> float:
    return mean_field("tanh", scale, SIGMA_B2).xi_c


def _cells(passed: dict[tuple[float, int], list[bool]]) -> pd.DataFrame:
    """Cells as schoenholz2017.cells makes them, from each cell's seeds' outcomes (passing: accuracy 0.9)."""
    runs = pd.DataFrame([{"init.scale": s, "depth": d, "seed": seed, "test/acc": 0.9 if ok else 0.1,
                          "status": "complete"}
                         for (s, d), outcomes in passed.items() for seed, ok in enumerate(outcomes)])  # fmt: skip
    return schoenholz2017.cells(runs, "tanh", SIGMA_B2)


def _trainable_up_to(c: float, scales, depths, seeds: int = 3) -> pd.DataFrame:
    """Every seed of a cell trains iff its depth <= c xi_c(sigma_w^2) (the cells' columns that max_depth reads,
    xi_c solved once per sigma_w^2)."""
    xi = {s: _xi(s) for s in scales}
    return pd.DataFrame([{"sigma_w2": s, "depth": d, "n_seeds": seeds, "n_passed": seeds * (d <= c * xi[s]),
                          "xi_c": xi[s]} for s in scales for d in depths])  # fmt: skip


def test_the_deepest_depth_that_trains_its_next_depth_and_censoring():
    depths = np.array([10, 20, 40, 70])
    trains = np.array([[True, True, False, False],  # ends between 20 and 40
                       [True, False, True, False],  # not monotone: the deepest that trains counts
                       [True, True, True, True],  # the deepest trains: a lower bound
                       [False, False, False, False]])  # none trains: below the grid  # fmt: skip
    top, above, censored, below = max_depth.deepest(depths, trains)
    np.testing.assert_array_equal(top, [20, 40, 70, np.nan])
    np.testing.assert_array_equal(above, [40, 70, np.nan, 10])
    assert censored.tolist() == [False, False, True, False] and below.tolist() == [False, False, False, True]
    # A cell trains when a majority of its seeds do: 2 of 3 yes, 1 of 3 or 1 of 2 no.
    assert max_depth.majority(np.array([[True, True, False], [True, False, False]])).tolist() == [True, False]
    assert not max_depth.majority(np.array([True, False]))


def test_the_table_marks_censored_and_below_grid_sigma_w2_and_fits_only_the_rest():
    cells = _cells({
        (1.0, 10): [True, True, False], (1.0, 20): [False, True, False], (1.0, 40): [False] * 3,
        (1.75, 10): [True] * 3, (1.75, 20): [True] * 3, (1.75, 40): [True, True, False],
        (4.0, 10): [False] * 3, (4.0, 20): [False] * 3, (4.0, 40): [False] * 3,
    })  # fmt: skip
    table = max_depth.table(cells).set_index("sigma_w2")
    assert table.loc[1.0, ["max_depth", "next_depth"]].tolist() == [10, 20]
    assert table.loc[1.0, "midpoint"] == pytest.approx(math.sqrt(200))
    assert (
        table.loc[1.75, "censored"] and not table.loc[1.75, "in_fit"] and table.loc[1.75, "max_depth"] == 40
    )
    assert table.loc[4.0, "below_grid"] and math.isnan(table.loc[4.0, "max_depth"])
    assert table.in_fit.tolist() == [True, False, False] and table.seeds.tolist() == [3, 3, 3]
    assert table.loc[1.0, "bound_6_xi_c"] == pytest.approx(6 * _xi(1.0))
    assert max_depth.table(cells.iloc[:0]).empty


SCALES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


def test_the_fit_recovers_a_known_c_with_an_interval_around_it():
    dense = sorted({round(2 * 1.05**k) for k in range(90)})  # 2 ... ~150 layers, 5% apart (4 xi_c <= ~100)
    result = max_depth.fit(
        cells := _trainable_up_to(4.0, SCALES, dense), max_depth.table(cells), resamples=200
    )
    assert result.c == pytest.approx(4.0, rel=0.05) and result.uncensored == len(SCALES)
    assert (
        result.low <= 4.0 <= result.high and result.high / result.low < 1.2
    )  # the grid's 5%, no seed spread
    # The committed sweep's coarse grid: c is bracketed more loosely, but still around the truth.
    coarse = _trainable_up_to(4.0, SCALES, (10, 20, 40, 70, 120, 200))
    result = max_depth.fit(coarse, max_depth.table(coarse))
    assert result.low <= 4.0 <= result.high and result.low < result.c < result.high


def test_the_bootstrap_resamples_seeds_and_is_reproducible():
    rng = np.random.default_rng(7)  # one seed in three flips its cell's outcome at random
    noisy = _cells({(s, d): [bool((d <= 4.0 * _xi(s)) ^ (k == 0 and rng.random() < 0.3)) for k in range(3)]
                    for s in SCALES for d in (10, 20, 40, 70, 120, 200)})  # fmt: skip
    table = max_depth.table(noisy)
    first, again = max_depth.fit(noisy, table), max_depth.fit(noisy, table)
    assert first == again and first.used == max_depth.RESAMPLES  # the same generator seed, the same interval
    assert first.low <= 4.0 <= first.high
    assert max_depth.fit(noisy, table, resamples=50).used == 50


def test_the_constant_claim_agrees_parts_or_is_inconclusive_by_its_rule():
    rule = RULES["max_depth_6_xi_c"]
    depths = (10, 20, 40, 70, 120, 200)

    def claim(cells: pd.DataFrame):
        table = max_depth.table(cells)
        return max_depth.constant_claim(rule, table, max_depth.fit(cells, table))

    agrees = claim(_trainable_up_to(6.0, SCALES, depths))
    assert agrees.verdict == AGREES and "c = " in agrees.ours and "RMS log10 residual" in agrees.baseline
    parts = claim(_trainable_up_to(1.0, SCALES, depths))
    assert parts.verdict == PARTS and "excludes 6" in parts.why
    # Only sigma_w^2 = 1.0 ends inside the grid; the rest train at every depth: fewer than 2 uncensored.
    few = claim(_trainable_up_to(6.0, (1.0, 1.5, 1.75, 2.0), depths[:3]))
    assert few.verdict == INCONCLUSIVE and "1 uncensored sigma_w^2 where the fit needs 2" in few.why
    assert "σw²=1.75: >= 40" in few.ours and "σw²=1: 20-40" in few.ours
    one_seed = claim(_trainable_up_to(6.0, SCALES, depths, seeds=1))
    assert one_seed.verdict == NOT_TESTABLE and one_seed.seeds.startswith("1 (rule needs 3)")


def test_the_peak_claim_can_fail_and_a_tie_at_the_grids_top_is_inconclusive():
    rule = RULES["deepest_at_boundary"]
    depths = (10, 20, 40, 70, 120, 200)

    def verdict(deepest: dict[float, int]) -> str:
        cells = _cells({(s, d): [d <= top] * 3 for s, top in deepest.items() for d in depths})
        return max_depth.peak_claim(rule, max_depth.table(cells), CRITICAL)

    assert verdict({1.0: 20, 1.75: 200, 2.0: 120}).verdict == AGREES
    parts = verdict({1.0: 20, 1.75: 70, 2.0: 120})
    assert parts.verdict == PARTS and "deeper than the one nearest the boundary" in parts.why
    tie = verdict({1.0: 20, 1.75: 200, 2.0: 200})
    assert tie.verdict == INCONCLUSIVE and "lower bounds" in tie.why
    assert "2 of 3 sigma_w^2 train at their deepest depth" in tie.baseline
    assert verdict({1.0: 70, 1.75: 70}).verdict == INCONCLUSIVE  # a tie inside the grid: not ordered either


def test_a_claims_file_without_the_papers_constant_in_its_rule_is_refused_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "conf" / "experiment" / "claims" / "schoenholz2017.yaml"
    path.parent.mkdir(parents=True)
    content = yaml.safe_load(schoenholz2017.claims_path("schoenholz2017").read_text())
    entry = next(e for e in content["claims"] if e["id"] == "max_depth_6_xi_c")
    entry["rule"] = "agrees if the interval of c contains the paper's constant"
    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    monkeypatch.setenv("INITSTUDY_ROOT", str(tmp_path))
    with pytest.raises(ClaimsFileError, match="its rule does not state its value 6") as refused:
        schoenholz2017.report(None, tmp_path / "out")  # refused before the sweep (here none) is touched
    assert "\n" not in str(refused.value).strip()
    assert not (tmp_path / "out").exists()

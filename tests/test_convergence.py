"""Time to a threshold: the first crossing, interpolated between evaluations (hand-computed cases)."""

from __future__ import annotations

import math

import pytest

from initstudy.train.convergence import first_crossing, threshold_key


def test_the_crossing_is_interpolated_between_the_last_pass_below_and_the_first_at_or_above():
    # 0.90 at step 100, 0.98 at step 200: 0.97 is 7/8 of the way -> step 187.5
    assert first_crossing([0, 100, 200], [0.1, 0.90, 0.98], 0.97) == pytest.approx(187.5)
    assert first_crossing([0, 100, 200], [0.1, 0.90, 0.98], 0.98) == 200.0


def test_only_the_first_crossing_counts_and_a_dip_afterwards_changes_nothing():
    # 0.5 at step 0, 0.96 at step 10: 0.95 is 0.45/0.46 of the way
    assert first_crossing([0, 10, 20, 30], [0.5, 0.96, 0.94, 0.99], 0.95) == pytest.approx(10 * 0.45 / 0.46)


def test_a_threshold_met_at_the_first_pass_is_that_pass_and_one_never_met_is_none():
    assert first_crossing([0, 50], [0.99, 0.995], 0.97) == 0.0
    assert first_crossing([0, 50, 100], [0.1, 0.5, 0.96], 0.97) is None
    assert first_crossing([], [], 0.97) is None


def test_nan_passes_of_a_diverged_run_never_reach_and_are_not_interpolated_from():
    assert first_crossing([0, 10, 20], [0.5, math.nan, 0.99], 0.97) == 20.0
    assert first_crossing([0, 10], [math.nan, math.nan], 0.5) is None


def test_threshold_keys():
    assert [threshold_key(t) for t in (0.9, 0.95, 0.97, 0.98)] == ["90", "95", "97", "98"]

"""The hierarchical bootstrap over seeds and test images, against hand computations on tiny cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initstudy.report.image_bootstrap import (
    compare_accuracy,
    image_counts,
    replicate_differences,
    seed_weights,
)
from initstudy.runs.rundir import PREDICTIONS


def run_folder(root: Path, init: str, seed: int, correct: list[int]) -> dict:
    """A run folder whose test_predictions.npy makes image i correct where ``correct[i]`` is 1 (true class 0;
    a wrong prediction is class 1)."""
    run_dir = root / init / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    truth = np.zeros(len(correct), dtype=np.uint8)
    predicted = np.array([0 if c else 1 for c in correct], dtype=np.uint8)
    np.save(run_dir / PREDICTIONS, np.stack([truth, predicted]), allow_pickle=False)
    return {"init": init, "seed": seed, "run_dir": str(run_dir)}


def test_a_replicate_is_the_weighted_seed_mean_of_the_difference_on_the_drawn_images():
    a = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 1, 0], [1, 1, 1, 1]], dtype=bool)
    counts = np.array([[4, 1, 0], [0, 1, 2], [0, 1, 2], [0, 1, 0]], dtype=float)  # 3 replicates of 4 draws
    weights = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    drawn = replicate_differences(a, b, True, counts, weights, weights)
    # replicate 0: seed 0 only, image 0 four times: 1 - 1 = 0
    # replicate 1: both seeds, every image once: ((3 - 2) + (1 - 4)) / 4 / 2 = -0.25
    # replicate 2: seed 1 only, images 1 and 2 twice each: (0 - 4) / 4 = -1
    assert drawn.tolist() == pytest.approx([0.0, -0.25, -1.0])


def test_image_resampling_of_one_seed_is_a_binomial_of_the_discordant_images(tmp_path: Path):
    # a and b differ on image 1 only: a replicate's difference is K / 4 with K ~ Binomial(4, 1/4)
    runs = pd.DataFrame(
        [run_folder(tmp_path, "a", 0, [1, 1, 1, 0]), run_folder(tmp_path, "b", 0, [1, 0, 1, 0])]
    )
    rng = np.random.default_rng(0)
    counts = image_counts(4, 40_000, rng)
    assert (counts.sum(axis=0) == 4).all()
    drawn = replicate_differences(np.array([[1, 1, 1, 0]]), np.array([[1, 0, 1, 0]]), True, counts,
                                  np.ones((1, 40_000)), np.ones((1, 40_000)))  # fmt: skip
    for k in range(5):
        assert np.mean(drawn == k / 4) == pytest.approx(stats.binom.pmf(k, 4, 0.25), abs=0.01)
    row = compare_accuracy(runs, replicates=40_000).iloc[0]
    assert (row.design, row.n_seeds, row.difference, row.disagreeing_images) == ("paired", 1, 0.25, 1.0)
    # the percentile interval of K / 4: P(K = 0) = 0.316 > 0.025, P(K >= 3) = 0.051 > 0.025, P(K = 4) = 0.004
    assert (row.ci95_low, row.ci95_high) == (0.0, 0.75)


def test_seed_resampling_of_two_paired_seeds_is_enumerable(tmp_path: Path):
    # seed 0: both right on every image (difference 0); seed 1: a right, b wrong on every image (difference 1).
    # The image draw cannot matter; the seed draw takes seed 1 0, 1 or 2 times of 2: 0, 0.5, 1 w.p. 1/4, 1/2, 1/4.
    runs = pd.DataFrame([run_folder(tmp_path, "a", 0, [1, 1, 1]), run_folder(tmp_path, "a", 1, [1, 1, 1]),
                         run_folder(tmp_path, "b", 0, [1, 1, 1]), run_folder(tmp_path, "b", 1, [0, 0, 0])])  # fmt: skip
    weights = seed_weights(2, 40_000, np.random.default_rng(1))
    drawn = replicate_differences(np.array([[1, 1, 1], [1, 1, 1]]), np.array([[1, 1, 1], [0, 0, 0]]), True,
                                  image_counts(3, 40_000, np.random.default_rng(2)), weights, weights)  # fmt: skip
    for value, probability in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(drawn == value) == pytest.approx(probability, abs=0.01)
    row = compare_accuracy(runs).iloc[0]
    assert (row.difference, row.ci95_low, row.ci95_high, row.ci90_low, row.ci90_high) == (
        0.5,
        0.0,
        1.0,
        0.0,
        1.0,
    )
    assert row.ci90_high > 0.005  # outside every margin: no claims rule could read it equivalent


def test_unshared_seeds_resample_each_side_apart_and_equal_runs_are_equivalent(tmp_path: Path):
    images = [1] * 90 + [0] * 10
    runs = pd.DataFrame([run_folder(tmp_path, "a", 0, images), run_folder(tmp_path, "a", 1, images),
                         run_folder(tmp_path, "b", 2, images)])  # fmt: skip
    row = compare_accuracy(runs).iloc[0]
    assert (row.design, row.difference, row.ci95_low, row.ci95_high) == ("unpaired", 0.0, 0.0, 0.0)
    assert np.isnan(row.disagreeing_images)
    assert (row.ci90_low, row.ci90_high) == (0.0, 0.0)  # inside every margin


def test_the_same_inputs_give_the_same_numbers(tmp_path: Path):
    rng = np.random.default_rng(5)
    runs = pd.DataFrame([run_folder(tmp_path, init, seed, rng.integers(0, 2, 50).tolist())
                         for init in ("a", "b", "c") for seed in range(3)])  # fmt: skip
    first, second = compare_accuracy(runs), compare_accuracy(runs)
    pd.testing.assert_frame_equal(first, second)
    assert first[["init_a", "init_b"]].values.tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]

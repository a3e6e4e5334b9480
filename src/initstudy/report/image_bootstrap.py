"""Test accuracy differences with both sources of noise: the seeds and the 10,000 test images.

A difference between two initializers' mean test accuracy varies with the seeds drawn (the networks) and with
the test images drawn (the same 10,000 for every run: a different test set would move every run at once, and
two networks that agree on 98 % of images move together). A t-test over seeds sees only the first. The
hierarchical bootstrap here resamples both, keeping their structure:

1. seeds, with replacement: for two initializers that share seeds the same drawn seeds for both (the pair of
   runs made with a seed stays a pair, so the difference is taken seed by seed); where they share none, each
   initializer's seeds apart;
2. test images, with replacement: one draw of image indices per replicate, used for every run in it, so that
   two runs are always compared on the same images (per image, paired).

The replicate's difference is the mean over the drawn seeds of (accuracy of a - accuracy of b) on the drawn
images. Its 95 % percentile interval is the difference's interval, and equivalence at a margin holds when the
90 % interval lies inside ±margin (the bootstrap form of two one-sided tests at α = 0.05). The generator is
seeded (:data:`SEED`) so the report's bytes repeat; the replicates are matrix products of per-image
correctness (runs × images) with image counts (images × replicates), a few seconds for a sweep.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from initstudy.runs.rundir import PREDICTIONS

SEED = 20_150_000  # the generator's seed: fixed, so that every report is the same bytes
REPLICATES = 2_000
BLOCK = 250  # replicates drawn at once (memory: BLOCK × images counts)


def correctness(run_dir: str | Path) -> np.ndarray:
    """One run's per-image correctness on the test set (bool, in the test set's order) from its
    test_predictions.npy: row 0 the true class, row 1 the predicted one."""
    truth, predicted = np.load(Path(run_dir) / PREDICTIONS, allow_pickle=False)
    return np.asarray(truth == predicted)


def image_counts(images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[images, replicates]: how often each image is drawn in each replicate (``images`` draws with
    replacement per replicate), built BLOCK replicates at a time. float32 holds every count and every sum of
    counts below 2^24 exactly, so the products below are exact in any summation order (80 MB for the study)."""
    out = np.empty((images, replicates), dtype=np.float32)
    for start in range(0, replicates, BLOCK):
        size = min(BLOCK, replicates - start)
        drawn = rng.integers(0, images, size=(size, images))
        offsets = (np.arange(size) * images)[:, None]
        counts = np.bincount((drawn + offsets).ravel(), minlength=size * images).reshape(size, images)
        out[:, start : start + size] = counts.T
    return out


def seed_weights(seeds: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[seeds, replicates]: the share of each seed among ``seeds`` draws with replacement, per replicate."""
    drawn = rng.integers(0, seeds, size=(replicates, seeds))
    counts = np.stack([np.bincount(row, minlength=seeds) for row in drawn])
    return (counts / seeds).T


def replicate_differences(
    a: np.ndarray,
    b: np.ndarray,
    paired: bool,
    counts: np.ndarray,
    weights_a: np.ndarray,
    weights_b: np.ndarray,
) -> np.ndarray:
    """Every replicate's difference in mean accuracy, a - b. ``a``, ``b``: [seeds, images] correctness (rows
    in the same seed order when ``paired``); ``counts``: [images, R] image draws; ``weights_*``: [seeds, R]
    seed shares (for a paired pair ``weights_b`` is ``weights_a``)."""
    images = a.shape[1]
    # correct draws per run and replicate: integers, exact in float32 (see image_counts), then float64
    acc_a = (a.astype(counts.dtype) @ counts).astype(np.float64) / images  # [seeds, R]
    acc_b = (b.astype(counts.dtype) @ counts).astype(np.float64) / images
    if paired:
        return np.sum(weights_a * (acc_a - acc_b), axis=0)
    return np.sum(weights_a * acc_a, axis=0) - np.sum(weights_b * acc_b, axis=0)


@dataclass(frozen=True)
class Pair:
    init_a: str
    init_b: str
    a: np.ndarray  # [seeds, images] correctness of a's runs
    b: np.ndarray
    paired: bool


def pairs(per_run: pd.DataFrame, loaded: dict[str, np.ndarray]) -> list[Pair]:
    """Every pair of initializers (in ``per_run``'s order, rows: init, seed, run_dir) with runs on both sides;
    paired on their shared seeds where there are any, else every run of each."""
    out = []
    inits = list(dict.fromkeys(per_run.init))
    for init_a, init_b in itertools.combinations(inits, 2):
        mine, theirs = per_run[per_run.init == init_a], per_run[per_run.init == init_b]
        shared = sorted(set(mine.seed) & set(theirs.seed))
        if shared:
            pick_a = [mine[mine.seed == seed].run_dir.iloc[0] for seed in shared]
            pick_b = [theirs[theirs.seed == seed].run_dir.iloc[0] for seed in shared]
        else:
            pick_a, pick_b = list(mine.run_dir), list(theirs.run_dir)
        if pick_a and pick_b:
            a = np.stack([loaded[str(run)] for run in pick_a])
            b = np.stack([loaded[str(run)] for run in pick_b])
            out.append(Pair(init_a, init_b, a, b, bool(shared)))
    return out


def compare_accuracy(per_run: pd.DataFrame, replicates: int = REPLICATES, seed: int = SEED) -> pd.DataFrame:
    """One row per pair of initializers: the observed difference in mean test accuracy, its hierarchical
    bootstrap intervals (95 % and 90 %), a two-sided bootstrap p and the images the two disagree on per shared
    seed (mean). ``per_run``: init, seed, run_dir of the complete runs. Equivalence at a margin is a verdict
    of the study's claims file (initstudy.report.study_rules)."""
    columns = ["init_a", "init_b", "design", "n_seeds", "difference", "ci95_low", "ci95_high", "ci90_low",
               "ci90_high", "p", "disagreeing_images"]  # fmt: skip
    loaded = {str(run): correctness(run) for run in per_run.run_dir}
    found = pairs(per_run, loaded)
    if not found:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    images = found[0].a.shape[1]
    counts = image_counts(images, replicates, rng)
    rows = []
    for pair in found:
        weights_a = seed_weights(len(pair.a), replicates, rng)
        weights_b = weights_a if pair.paired else seed_weights(len(pair.b), replicates, rng)
        drawn = replicate_differences(pair.a, pair.b, pair.paired, counts, weights_a, weights_b)
        observed = float(pair.a.mean() - pair.b.mean())
        low95, high95, low90, high90 = np.quantile(drawn, [0.025, 0.975, 0.05, 0.95])
        p = float(min(1.0, 2 * min(np.mean(drawn <= 0), np.mean(drawn >= 0))))
        disagreeing = float(np.mean(np.sum(pair.a != pair.b, axis=1))) if pair.paired else float("nan")
        rows.append({
            "init_a": pair.init_a, "init_b": pair.init_b, "design": "paired" if pair.paired else "unpaired",
            "n_seeds": len(pair.a) if pair.paired else min(len(pair.a), len(pair.b)),
            "difference": observed, "ci95_low": float(low95), "ci95_high": float(high95),
            "ci90_low": float(low90), "ci90_high": float(high90), "p": p, "disagreeing_images": disagreeing,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)

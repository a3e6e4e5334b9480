"""``initstudy evaluate RUN``: the test pass of a finished run again, from its final weights, compared with its record.

RUN is a run folder (``runs/he_uniform/seed_0``), an MLflow run id, or ``models:/<name>/<version>``
(:mod:`initstudy.trained`). The pass is the training run's own: the run's numerics profile, its device kind
and precision, the test set in ``data.eval_batch_size`` slices, and the same sums
(:class:`initstudy.train.records.EvaluationSums`), so ``test/acc`` and ``test/loss`` come out equal to
metrics.json's, float for float, and every image's predicted class equal to test_predictions.npy's (a run
trained with ``trainer.limit_test_batches``, e.g. ``debug=tiny``, is tested on those batches again). Prints one
JSON object; exit status 0 when all three agree, 1 when they do not, 2 when the run cannot be evaluated (one
line: incomplete folder, architecture, data or profile).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

from initstudy import trained
from initstudy.core import signals
from initstudy.core.errors import ConfigError


def tested_batches(run: trained.TrainedRun, available: int) -> int:
    """How many test batches the run's own test pass read: all, or what ``trainer.limit_test_batches`` left
    (``debug=tiny``), counted as Lightning counts it: a number of batches, or a share of them rounded down."""
    limit = run.cfg.trainer.get("limit_test_batches")
    if limit is None or isinstance(limit, bool):
        return available
    if isinstance(limit, int):
        return min(available, limit)
    return int(available * float(limit))


def test_pass(run: trained.TrainedRun) -> dict[str, Any]:
    """test/acc, test/loss and the [true, predicted] classes of every test image, as the run's test pass."""
    import numpy as np
    import torch

    from initstudy.data.datamodule import EvaluationBatches, ScaledPixels, Split, read_mnist
    from initstudy.train.records import EvaluationSums

    try:
        pixels, labels = read_mnist(trained.repo_root() / run.cfg.data.root, train=False)
    except RuntimeError as error:  # torchvision: a file missing or unreadable
        raise trained.TrainedRunError(f"MNIST under {run.cfg.data.root}: {error}") from None
    device = torch.device(run.device)
    split = Split("test", ScaledPixels(pixels.to(device)), labels.to(device))
    assert run.model is not None
    batches = EvaluationBatches(split, int(run.cfg.data.eval_batch_size))
    with torch.inference_mode(), trained.autocast(run):
        sums = EvaluationSums(device, keep_predictions=True)
        for images, batch_labels in itertools.islice(batches, tested_batches(run, len(batches))):
            sums.add(run.model(images), batch_labels)
    result = sums.result()
    recorded = np.load(run.folder / trained.rundir.PREDICTIONS, allow_pickle=False)
    same = result.predictions is not None and np.array_equal(result.predictions, recorded)
    return {"test/acc": result.acc, "test/loss": result.loss, "predictions_equal": bool(same)}


def report(run: trained.TrainedRun, evaluated: dict[str, Any]) -> dict[str, Any]:
    recorded = {key: run.metrics.get(key) for key in ("test/acc", "test/loss")}
    reproduced = all(evaluated[key] == recorded[key] for key in recorded) and evaluated["predictions_equal"]
    return {
        "run": str(run.folder),
        "numerics": run.cfg.numerics.name,
        "device": run.device,
        **evaluated,
        "recorded": recorded,
        "reproduced": reproduced,
    }


@signals.entry_point("initstudy.evaluate")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="initstudy evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder, MLflow run id, or models:/<name>/<version>")
    parser.add_argument("--tracking-uri", help="MLflow store for a run id or model (default: the study's)")
    args = parser.parse_args(argv)
    try:
        run = trained.open_run(args.run, args.tracking_uri, with_data=True)
        outcome = report(run, test_pass(run))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(outcome, indent=2))
    if not outcome["reproduced"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""``initstudy`` / ``python -m initstudy``: an index of the stages for users who do not start from DVC."""

from __future__ import annotations

import argparse
import runpy
import sys

STAGES = {
    "data": ("initstudy.data", "download and verify MNIST into data/raw/MNIST/raw/"),
    "train": ("initstudy.train", "train one run, or --multirun the sweep of params.yaml (Hydra)"),
    "diagnose": ("initstudy.diagnose", "signal propagation at step 0 for every network of a sweep"),
    "report": ("initstudy.report", "aggregate runs/manifest.csv into reports/ (tables, statistics, figures)"),
    "evaluate": (
        "initstudy.evaluate",
        "the test pass of a finished run again (folder, MLflow run id or models:/name/version)",
    ),
    "predict": ("initstudy.predict", "class probabilities of a finished run for an IDX file or PNG images"),
    "mlflow_import": (
        "initstudy.tracking.importer",
        "log run folders trained with logger=offline into MLflow",
    ),
}

EPILOG = """most used overrides (train):
  init=<name>                 zeros, random_normal, glorot_uniform, he_uniform, ... (conf/init/)
  seed=<int>                  trainer.max_epochs=<int>   data.batch_size=<int>   data.train_size=<int|null>
  optimizer=adam|sgd          optimizer.lr=<float>
  model.hidden_sizes=[256,128]   model.activation=relu|tanh|sigmoid|gelu|selu|...
  hydra/launcher=sequential|stacked|slurm|slurm_gpu|basic|joblib|submitit_local    logger=offline

examples:
  initstudy train init=he_uniform seed=3        # a run of the study's config (params.yaml)
  initstudy train -m init=zeros,he_uniform seed=0,1 trainer.max_epochs=1 data.train_size=2000 hydra.sweep.dir=runs_try
  initstudy evaluate runs/he_uniform/seed_0      # reproduces the run's test/acc (its numerics profile)
  initstudy predict runs/he_uniform/seed_0 digit.png
  initstudy diagnose experiment=depth --out /tmp/depth-diagnostics
  dvc repro report     # the default study: download -> train -> diagnose -> report
  dvc repro            # everything, the depth experiment included
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="initstudy",
        description="Weight-initialization study on MNIST. Run a stage; everything after it goes to the stage.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument(
        "stage", choices=list(STAGES), help="; ".join(f"{k}: {v[1]}" for k, v in STAGES.items())
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="overrides passed to the stage")
    parsed = parser.parse_args(argv)
    module = STAGES[parsed.stage][0]
    sys.argv = [module, *parsed.args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

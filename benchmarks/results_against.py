"""Do two checkouts train to the same bytes? ``python benchmarks/results_against.py ../main``

Trains a few tiny configurations (real MNIST, 2,000 training images, 2 epochs; an initializer each, LSUV on a
deeper tanh network, a held-out validation split) with this checkout's code and config and with another's,
each in a fresh process under its own code, and compares history.csv and metrics.json byte for byte
(timing.json, numerics.json and provenance.json describe the machine and the code, not the results). For
refactors that must not change a result: exit status 1 names the files that differ.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_FILES = ("history.csv", "metrics.json")
BASE = ["data.train_size=2000", "trainer.max_epochs=2", "trainer.log_every_n_steps=10", "logger=offline"]
CONFIGS = {
    "he_uniform": ["init=he_uniform"],
    "lsuv_deep_tanh": [
        "init=lsuv",
        "model.hidden_sizes=null",
        "model.depth=4",
        "model.width=64",
        "model.activation=tanh",
        "seed=3",
    ],
    "zeros": ["init=zeros"],
    "glorot_val": ["init=glorot_uniform", "data.val_size=10000", "seed=1"],
}
# Runs in the checkout under test, through the API both sides share (compose_config, train_run, wherever the
# checkout defines it).
TRAIN = """
import sys
from pathlib import Path
from initstudy.config import numerics
from initstudy.config.compose import compose_config
out, overrides = Path(sys.argv[1]), sys.argv[2:]
numerics.apply_before_torch(numerics.from_config(compose_config(overrides).numerics))
from initstudy.runs import rundir
try:
    from initstudy.train.fit import train_run
except ImportError:
    from initstudy.train.runner import train_run
train_run(compose_config(overrides), out, rundir.staging_dir(out), "compare")
"""


def train(checkout: Path, out: Path, overrides: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "INITSTUDY_ROOT": str(checkout)}
    subprocess.run([sys.executable, "-c", TRAIN, str(out), *overrides], cwd=checkout, env=env, check=True,
                   capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (e.g. the main branch's)")
    parser.add_argument(
        "--data-root", type=Path, help="folder holding MNIST/raw (default: either checkout's)"
    )
    args = parser.parse_args()
    checkouts = {"other": args.other.resolve(), "this": REPO}
    root = args.data_root or next(
        (c / "data/raw" for c in checkouts.values() if (c / "data/raw/MNIST/raw").is_dir()), None
    )
    if root is None:
        raise SystemExit("no MNIST in either checkout: give --data-root")
    differ = []
    with tempfile.TemporaryDirectory(prefix="initstudy-compare-") as folder:
        for name, overrides in CONFIGS.items():
            for side, checkout in checkouts.items():
                train(
                    checkout, Path(folder) / side / name, [*BASE, f"data.root={root.resolve()}", *overrides]
                )
            for file in RESULT_FILES:
                same = filecmp.cmp(Path(folder) / "other" / name / file, Path(folder) / "this" / name / file,
                                   shallow=False)  # fmt: skip
                print(f"{name}/{file}: {'identical' if same else 'DIFFERS'}", flush=True)
                differ += [] if same else [f"{name}/{file}"]
    if differ:
        raise SystemExit(f"{len(differ)} result file(s) differ: {', '.join(differ)}")


if __name__ == "__main__":
    main()

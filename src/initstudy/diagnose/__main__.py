"""``python -m initstudy.diagnose [--out DIR] [--pair A,B] [overrides]``: the diagnose stages' command line.

Measures every network of the sweep the overrides describe at step 0 (:mod:`initstudy.diagnose.measure`) and
writes the tables, figures and statements into ``--out``: into a staging folder beside it first, moved in once
all are written (:mod:`initstudy.core.publish`), so that a kill leaves the previous diagnostics as they were
(dvc.yaml keeps them in place: ``persist: true``). numpy's BLAS is pinned first (:mod:`initstudy.core.blas`):
the predictions are numpy products whose last digits depend on OpenBLAS's kernels and thread count."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from initstudy.core import (
    atomic,
    blas,  # noqa: F401  (before numpy: pins OpenBLAS's kernels and threads)
    publish,
    signals,
)
from initstudy.core.errors import ConfigError, no_space
from initstudy.core.faults import pause_point
from initstudy.diagnose.measure import (
    Diagnosis,
    aggregate,
    aggregate_jacobians,
    correlation_figure,
    correlation_statements,
    diagnose,
    figures,
    jacobian_figure,
    jacobian_statements,
    statements,
)

# Every file the command writes into --out: the only names it moves in, or deletes when a run no longer makes
# one (the histograms need the --pair initializers in the sweep).
OUTPUT_FILES = (
    "diagnostics.csv",
    "jacobian.csv",
    "statements.json",
    "activation_std.png",
    "gradient_std.png",
    "activation_histograms.png",
    "correlation_map.png",
    "jacobian_spectrum.png",
)


@signals.entry_point("initstudy.diagnose")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m initstudy.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/diagnostics"))
    parser.add_argument("--pair", default="random_normal,he_uniform", help="initializers for the histograms")
    parser.add_argument("overrides", nargs="*", help="sweep overrides, as for python -m initstudy.train -m")
    args = parser.parse_args(argv)
    try:
        diagnosis = diagnose(args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    out = args.out.resolve()
    publish.discard_leftovers(out, OUTPUT_FILES)
    staging = publish.staging_for(out)
    try:
        networks = write(diagnosis, staging, args.pair)
        pause_point("diagnose-publish")
    except BaseException as error:
        publish.discard(staging, OUTPUT_FILES)
        if full := no_space(error, args.out):
            print(f"error: {full}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    publish.publish(staging, out, OUTPUT_FILES)
    print(f"diagnostics of {networks} networks -> {args.out}")


def write(diagnosis: Diagnosis, folder: Path, pair_option: str) -> int:
    """The figures, tables and statements, into ``folder``; returns the number of networks measured."""
    summary = aggregate(diagnosis.layers)
    jacobians = aggregate_jacobians(diagnosis.jacobians)
    pair = [name for name in pair_option.split(",") if name in set(summary.init)] or list(
        dict.fromkeys(summary.init)
    )[:2]
    made = figures(summary, diagnosis.activations, folder, pair)
    made |= correlation_figure(summary, folder) | jacobian_figure(diagnosis.singular_values, folder)
    atomic.write_text(folder / "diagnostics.csv", summary.to_csv(index=False))
    atomic.write_text(folder / "jacobian.csv", jacobians.to_csv(index=False))
    said = statements(summary) + correlation_statements(summary) + jacobian_statements(jacobians)
    atomic.write_json(folder / "statements.json", {"statements": said, "figures": made})
    return summary.groupby(["init", "activation", "depth"]).ngroups


if __name__ == "__main__":
    main()

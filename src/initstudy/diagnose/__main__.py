"""``python -m initstudy.diagnose [--out DIR] [--pair A,B] [overrides]``: the diagnose stages' command line.

Measures every network of the sweep the overrides describe at step 0 (:mod:`initstudy.diagnose.measure`) and
writes the tables, figures and statements into ``--out``. numpy's BLAS is pinned first (:mod:`initstudy.core.blas`):
the predictions are numpy products whose last digits depend on OpenBLAS's kernels and thread count."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from initstudy.core import (
    atomic,
    blas,  # noqa: F401  (before numpy: pins OpenBLAS's kernels and threads)
    signals,
)
from initstudy.core.errors import ConfigError
from initstudy.diagnose.measure import (
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
    summary = aggregate(diagnosis.layers)
    jacobians = aggregate_jacobians(diagnosis.jacobians)
    args.out.mkdir(parents=True, exist_ok=True)
    pair = [name for name in args.pair.split(",") if name in set(summary.init)] or list(
        dict.fromkeys(summary.init)
    )[:2]
    made = figures(summary, diagnosis.activations, args.out, pair)
    made |= correlation_figure(summary, args.out) | jacobian_figure(diagnosis.singular_values, args.out)
    atomic.write_text(args.out / "diagnostics.csv", summary.to_csv(index=False))
    atomic.write_text(args.out / "jacobian.csv", jacobians.to_csv(index=False))
    said = statements(summary) + correlation_statements(summary) + jacobian_statements(jacobians)
    atomic.write_json(args.out / "statements.json", {"statements": said, "figures": made})
    print(f"diagnostics of {summary.groupby(['init', 'activation', 'depth']).ngroups} networks -> {args.out}")


if __name__ == "__main__":
    main()

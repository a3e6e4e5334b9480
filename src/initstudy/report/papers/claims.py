"""What the four classic-paper reports share (``python -m initstudy.report --paper <name>``): the paper's claim
and ours side by side in one table (paper_vs_ours.csv, one row per claim: where the claim is in the paper,
what the paper reports, what we measured, the verdict, the rule and the seeds behind it, what a trivial
baseline scores on the same cells, and why the verdict is not a plain agreement), the values each run was
configured with, and the page around it. The rules themselves live in conf/experiment/claims/<paper>.yaml
(initstudy.report.papers.rules), written before the runs are read.

Each paper's own module (glorot2010, he2015, schoenholz2017, saxe2014) turns its runs into those rows, its
figures and its statements; this module writes them, so that every report reads the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from initstudy.core import atomic
from initstudy.report.tables import markdown_table
from initstudy.runs.results import RunFileError

TABLES = "tables"  # reports/<name>/tables/: every CSV behind a report's verdicts besides paper_vs_ours.csv
AGREES, PARTS, UNTESTED = "agrees", "parts", "not tested"
INCONCLUSIVE = "inconclusive"  # the rule's statistic straddles its margin: neither agrees nor parts
NOT_TESTABLE = "not testable at this budget"  # fewer seeds than the rule needs, whatever the numbers say
NOT_COUNTED = (
    "not counted"  # an arithmetic identity, or a rule this design cannot fail: no evidence either way
)
VERDICTS = (AGREES, PARTS, INCONCLUSIVE, NOT_TESTABLE, NOT_COUNTED, UNTESTED)
COLUMNS = ("claim", "where", "paper", "ours", "verdict", "rule", "seeds", "baseline", "why")
# The papers a report exists for (--paper): checked before any import or file read; writers() maps each.
# notebook: the seed notebook's own numbers against its protocol (initstudy.report.papers.notebook); epsilon and
# width: the experiments that test the depth report's eps explanation (initstudy.report.papers.epsilon, width);
# tuned: the default study's initializers at validation-chosen learning rates (initstudy.report.papers.tuned).
PAPERS = ("glorot2010", "he2015", "schoenholz2017", "saxe2014", "notebook", "epsilon", "width", "tuned")


@dataclass
class Claim:
    """One row of paper_vs_ours.csv: a result of the paper, ours beside it, the verdict and, where they part
    or the comparison is loose, why (budget, architecture, protocol); where in the paper the result is, the
    rule that decided the verdict, the seeds behind it and the trivial baseline's score
    (initstudy.report.papers.rules.judged fills these from the claims file)."""

    claim: str
    paper: str
    ours: str
    verdict: str
    why: str = ""
    where: str = ""
    rule: str = ""
    seeds: str = ""
    baseline: str = ""


@dataclass
class PaperReport:
    """What a paper's module hands back: the rows, the metrics (DVC metrics, nested dict), the report's
    sections in Markdown (each a list of lines) and the figures it drew (caption -> file under figures/)."""

    title: str
    setup: list[str]
    claims: list[Claim]
    metrics: dict[str, Any]
    sections: list[list[str]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    # conf/experiment/claims/<paper>.yaml, named in the report beside the verdicts
    claims_file: str = ""
    # tables/<name>: the numbers behind the verdicts; tables/runs.csv (every run) is written for each report
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def config_value(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def with_config_values(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``runs`` with one column per dotted config key (``init.scale``, ``optimizer.lr``), read from each complete
    run's config.yaml: the values a sweep varies besides those the manifest carries (init, seed, activation,
    depth). Runs that are not complete get NaN."""
    values: dict[str, list[Any]] = {key: [] for key in keys}
    for row in runs.itertuples(index=False):
        config = read_config(Path(row.run_dir)) if row.status == "complete" else {}
        for key in keys:
            value = config_value(config, key)
            values[key].append(math.nan if value is None else value)
    return runs.assign(**values)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RunFileError(f"{path} is unreadable: {error}") from None


def complete(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs.status == "complete"]


def error_percent(acc: pd.Series) -> tuple[float, float, int]:
    """Test error in percent: mean, sample std (NaN for one run) and the number of runs."""
    error = 100.0 * (1.0 - acc.astype(float))
    return float(error.mean()), float(error.std(ddof=1)) if len(error) > 1 else math.nan, len(error)


def mean_sd(mean: float, sd: float, n: int, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    spread = "" if math.isnan(sd) else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{spread} (n={n})"


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in claims], columns=list(COLUMNS))


def not_complete_note(runs: pd.DataFrame) -> list[str]:
    missing = runs[runs.status != "complete"]
    if missing.empty:
        return []
    names = ", ".join(sorted(str(r) for r in missing.run_dir))
    return [f"**{len(missing)} run(s) of the sweep are not complete and are left out:** {names}", ""]


def verdict_tally(verdicts: pd.Series) -> str:
    """How many claims got each verdict, in the order of VERDICTS ("2 agrees, 3 parts"): the report's summary
    line, and the README's, which a test reads back from paper_vs_ours.csv."""
    counts = verdicts.value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS if counts.get(v, 0))


def render(paper: PaperReport, runs: pd.DataFrame, diagnostics: list[str]) -> str:
    """report.md: title, setup (what was run, what was reduced and why), the side-by-side table, the paper's
    sections with their figures, the step-0 diagnostics."""
    table = claims_frame(paper.claims)
    tally = verdict_tally(table.verdict)
    lines = [f"# {paper.title}", "", *paper.setup, "", *not_complete_note(runs),
             "## Paper and ours, side by side", "",
             f"One row per claim ({tally}); `paper_vs_ours.csv` holds the same table.", "",
             *rules_note(paper.claims_file), markdown_table(table.rename(columns=str.capitalize)), ""]  # fmt: skip
    for section in paper.sections:
        lines += [*section, ""]
    for caption, name in paper.figures.items():
        lines += [f"![{caption}](figures/{name})", ""]
    lines += diagnostics
    return "\n".join(lines).rstrip("\n") + "\n"


def rules_note(claims_file: str) -> list[str]:
    """How to read the verdicts: where the rules are and what each verdict word means."""
    if not claims_file:
        return []
    return [f"Each verdict is decided by the rule beside it, written in `{claims_file}` before the runs "
            f"were read; *Seeds* is the number of seeds behind the verdict and the fewest its rule needs; "
            f"*Baseline* is what a trivial rule scores on the same cells. *{NOT_TESTABLE}*: fewer seeds than "
            f"the rule needs (the rule's own reading is given in *Why*); *{NOT_COUNTED}*: an arithmetic "
            f"identity or a rule this design cannot fail, so no evidence either way; *{INCONCLUSIVE}*: the "
            "rule's statistic neither agrees nor parts (an interval that straddles its margin, or what its "
            "rule names: too few points for a fit, a tie the grid cannot order; *Why* says which).", ""]  # fmt: skip


RUN_COLUMNS = ("init", "seed", "group", "activation", "depth", "hidden_sizes", "status", "test/acc", "test/loss",
               "diverged")  # fmt: skip


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of the sweep in manifest order, as far as the report reads it: what it was, whether it is
    complete, its final test accuracy and loss, whether it diverged (tables/runs.csv)."""
    return runs[[c for c in RUN_COLUMNS if c in runs.columns]]


def write(paper: PaperReport, runs: pd.DataFrame, out_dir: Path, diagnostics: list[str]) -> dict[str, str]:
    """paper_vs_ours.csv, tables/*.csv, metrics.json and report.md into ``out_dir`` (the report's staging
    folder); the figures are already there. Returns claim -> verdict, for the command line."""
    table = claims_frame(paper.claims)
    atomic.write_text(out_dir / "paper_vs_ours.csv", table.to_csv(index=False))
    (out_dir / TABLES).mkdir(exist_ok=True)
    for name, frame in {"runs.csv": runs_table(runs), **paper.tables}.items():
        atomic.write_text(out_dir / TABLES / name, frame.to_csv(index=False))
    atomic.write_json(out_dir / "metrics.json", plain(paper.metrics))
    atomic.write_text(out_dir / "report.md", render(paper, runs, diagnostics))
    return {row.claim: row.verdict for row in table.itertuples(index=False)}


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it, for DVC's metrics: numpy scalars as Python numbers, NaN and infinities
    (not reached, not measured) as null, keys as text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""The rules behind the default study's and the depth report's verdicts, read from their claims files
(conf/experiment/claims/study.yaml and depth.yaml, the schema of the paper claims: initstudy.report.papers.rules),
so that a margin, a level or the seeds a verdict needs is fixed before the runs are read and printed beside
every verdict, and a pair with fewer seeds than its rule needs reads "not testable at this budget"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initstudy.report.papers.claims import AGREES, NOT_TESTABLE, PARTS
from initstudy.report.papers.rules import Rule, decide, load

STUDY, DEPTH = "study", "depth"
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not shown equivalent"
WORDS = {AGREES: EQUIVALENT, PARTS: NOT_EQUIVALENT, NOT_TESTABLE: NOT_TESTABLE}


def equivalence_rules(root: Path | None = None) -> list[Rule]:
    """The study's equivalence rules, narrowest margin first (each rule's ``value`` is its margin)."""
    rules = [rule for rule in load(STUDY, root).values() if rule.id.startswith("accuracy_within_")]
    return sorted(rules, key=lambda rule: float(rule.value or 0))


def margin_key(margin: float) -> str:
    """The column suffix of a margin: 0.002 -> '2' (tenths of a percentage point)."""
    return str(round(1000 * margin))


def judge_accuracy(accuracy: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """``accuracy`` (initstudy.report.image_bootstrap.compare_accuracy) with a verdict per rule: equivalent when
    the 90 % interval lies inside ±margin, not shown equivalent otherwise, not testable at this budget with
    fewer seeds than the rule needs; and the rule's seeds beside it."""
    judged = accuracy.copy()
    for rule in rules:
        key = margin_key(float(rule.value))
        judged[f"verdict_{key}"] = [
            WORDS[decide(rule, int(r.n_seeds), AGREES if -rule.value < r.ci90_low and r.ci90_high < rule.value else PARTS)]
            for r in accuracy.itertuples(index=False)
        ]  # fmt: skip
        judged[f"min_seeds_{key}"] = rule.min_seeds
    return judged


def failure_rule(root: Path | None = None) -> Rule:
    """The depth report's rule for "fails from depth d" (its ``value``: the one-sided Fisher test's level)."""
    return load(DEPTH, root)["fails_from_depth"]

"""The decision rules behind every paper verdict: conf/experiment/claims/<paper>.yaml, one entry per claim a
paper report judges, written as the claim's test before any run is read (the paper's value and where it is
in the paper, the statistic, the rule, the fewest seeds the rule needs, the trivial baseline it is scored
against). The reports only measure; this module turns a measurement into a verdict, so that a verdict can
never be loosened after the data are seen: too few seeds read "not testable at this budget", and an
arithmetic identity or a rule the design cannot fail is "not counted", whatever the numbers say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from initstudy.core.paths import repo_root
from initstudy.report.papers.claims import (
    AGREES,
    INCONCLUSIVE,
    NOT_COUNTED,
    NOT_TESTABLE,
    PARTS,
    UNTESTED,
    Claim,
)

CLAIMS_DIR = Path("conf") / "experiment" / "claims"
OUTCOMES = (AGREES, PARTS, INCONCLUSIVE)  # what a rule's statistic can say, before the seed count is applied


class ClaimsFileError(ValueError):
    """A claims file that is missing, malformed or lacks a claim the report judges."""


@dataclass(frozen=True)
class Rule:
    """One claim's test, as the claims file states it."""

    id: str
    claim: str
    where: str
    paper: str
    statistic: str
    rule: str
    min_seeds: int
    baseline: str
    counts: bool = True  # False: an arithmetic identity, or a rule this design cannot fail
    not_counted: str = ""  # why it is not counted (required when counts is False)
    value: float | None = None  # the paper's number, where the rule compares against one


def claims_path(paper: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / CLAIMS_DIR / f"{paper}.yaml"


def load(paper: str, root: Path | None = None) -> dict[str, Rule]:
    """The paper's rules by id, checked: every field present, a positive seed count, a reason for each claim
    that is not counted."""
    path = claims_path(paper, root)
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ClaimsFileError(f"{path} is unreadable: {error}") from None
    entries = content.get("claims") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ClaimsFileError(f"{path}: no 'claims:' list")
    rules = {}
    for entry in entries:
        rule = _rule(entry, path)
        if rule.id in rules:
            raise ClaimsFileError(f"{path}: claim {rule.id!r} twice")
        rules[rule.id] = rule
    return rules


def stated(rule: Rule, path: Path, *, below: float = math.inf) -> float:
    """``rule.value``, the number that decides the rule's verdicts, checked to be a positive number below
    ``below`` that the rule's own words state: the printed rule and the number the code applies cannot part,
    and a claims file that breaks this is refused in one line (``path`` names it) before any verdict."""
    value = rule.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < below:
        raise ClaimsFileError(
            f"{path}: claim {rule.id!r}: value {value!r} must be a number in (0, {below:g})"
        )
    if not re.search(rf"(?<![\d.]){re.escape(f'{value:g}')}(?![\d])", rule.rule):
        raise ClaimsFileError(
            f"{path}: claim {rule.id!r}: its rule does not state its value {value:g}: {rule.rule!r}"
        )
    return float(value)


def stated_value(paper: str, rule_id: str, root: Path | None = None, *, below: float = math.inf) -> Rule:
    """The rule ``rule_id`` of the claims file ``paper``, its ``value`` checked by :func:`stated`."""
    return stated_values(paper, (rule_id,), root, below=below)[rule_id]


def stated_values(
    paper: str, rule_ids: Sequence[str], root: Path | None = None, *, below: float = math.inf
) -> dict[str, Rule]:
    """Every rule of the claims file ``paper``, after checking that each of ``rule_ids`` (the rules the report
    judges by) is present and its ``value`` stated by its words (:func:`stated`): before any run is read."""
    rules = load(paper, root)
    path = claims_path(paper, root)
    for rule_id in rule_ids:
        if rule_id not in rules:
            raise ClaimsFileError(f"{path}: no claim {rule_id!r} (the report judges by it)")
        stated(rules[rule_id], path, below=below)
    return rules


def _rule(entry: Any, path: Path) -> Rule:
    required = ("id", "claim", "where", "paper", "statistic", "rule", "min_seeds", "baseline")
    if not isinstance(entry, dict) or any(entry.get(key) in (None, "") for key in required):
        raise ClaimsFileError(f"{path}: every claim needs {', '.join(required)}: {entry!r}")
    unknown = set(entry) - set(Rule.__dataclass_fields__)
    if unknown:
        raise ClaimsFileError(f"{path}: unknown field(s) {sorted(unknown)} in claim {entry['id']!r}")
    rule = Rule(**{k: v for k, v in entry.items()})
    if not isinstance(rule.min_seeds, int) or rule.min_seeds < 1:
        raise ClaimsFileError(f"{path}: claim {rule.id!r}: min_seeds must be a positive integer")
    if not rule.counts and not rule.not_counted:
        raise ClaimsFileError(f"{path}: claim {rule.id!r} is not counted but says not why")
    return rule


def decide(rule: Rule, seeds: int, outcome: str | None) -> str:
    """The verdict: ``outcome`` (what the rule's statistic says) only when the rule counts and has the seeds
    it needs; "not testable at this budget" with fewer, whatever the outcome; "not tested" without data."""
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES} or None, not {outcome!r}")
    if not rule.counts:
        return NOT_COUNTED
    if seeds == 0:
        return UNTESTED
    if seeds < rule.min_seeds:
        return NOT_TESTABLE
    return UNTESTED if outcome is None else outcome


def judged(rule: Rule, *, ours: str, seeds: int, outcome: str | None, baseline: str, why: str = "",
           paper: str | None = None, seeds_note: str = "") -> Claim:  # fmt: skip
    """The report's row for ``rule``: the verdict :func:`decide` gives, the rule and the seeds behind it, the
    trivial baseline's score on the same cells and, where the verdict is not the outcome, why."""
    verdict = decide(rule, seeds, outcome)
    reasons = []
    if verdict == NOT_COUNTED:
        reasons.append(rule.not_counted)
    elif verdict == NOT_TESTABLE:
        reading = "cannot be computed" if outcome is None else f"would say '{outcome}'"
        reasons.append(f"{seeds} seed(s) where the rule needs {rule.min_seeds}; the rule alone {reading}")
    if why:
        reasons.append(why)
    seeds_text = f"{seeds} (rule needs {rule.min_seeds})" + (f"; {seeds_note}" if seeds_note else "")
    if not rule.counts and seeds == 0:
        seeds_text = "none: no run enters it"
    return Claim(claim=rule.claim, paper=rule.paper if paper is None else paper, ours=ours, verdict=verdict,
                 why="; ".join(reasons), where=rule.where, rule=rule.rule, seeds=seeds_text,
                 baseline=f"{rule.baseline}: {baseline}")  # fmt: skip


def sign_test_p(agreeing: int, n: int) -> float:
    """Exact one-sided sign test: the chance of at least ``agreeing`` of ``n`` seeds going the predicted way
    when each goes either way with probability 1/2 (no effect)."""
    if n == 0:
        return math.nan
    return float(stats.binom.sf(agreeing - 1, n, 0.5))


def mcnemar_p(only_prediction_right: int, only_baseline_right: int) -> float:
    """Exact one-sided McNemar test: over the cells where the prediction and the baseline disagree, the
    chance that the prediction is right at least this often if each were right half the time."""
    return sign_test_p(only_prediction_right, only_prediction_right + only_baseline_right)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``values``; NaN for fewer than two."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Welch interval for mean(a) - mean(b); NaN unless both have two values. Zero spread in both: the
    difference itself."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return math.nan, math.nan
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        return diff, diff
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(vx + vy)
    return diff - half, diff + half


def against_margin(interval: tuple[float, float], centre: float, margin: float) -> str | None:
    """Equivalence read from an interval: AGREES when it lies within ``centre`` +/- ``margin``, PARTS when it
    lies wholly outside, INCONCLUSIVE when it straddles an edge; None when there is no interval."""
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return None
    if centre - margin <= low and high <= centre + margin:
        return AGREES
    if high < centre - margin or low > centre + margin:
        return PARTS
    return INCONCLUSIVE

"""The rules behind the default study's and the depth report's verdicts, read from their claims files
(conf/experiment/claims/study.yaml and depth.yaml, the schema of the paper claims: initstudy.report.papers.rules),
so that a margin, a level, a threshold or the seeds a verdict needs is fixed before the runs are read and
printed beside every verdict, and a pair with fewer seeds than its rule needs reads "not testable at this
budget". Each verdict over a set of pairs is scored beside the rule's trivial baseline on the same pairs
(:class:`Tally`): a rule that says no more than "the initializer does not matter" has shown nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from initstudy.report.papers.claims import AGREES, NOT_TESTABLE, PARTS, UNTESTED
from initstudy.report.papers.rules import Rule, claims_path, decide, load, stated_value

STUDY, DEPTH = "study", "depth"
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not shown equivalent"
WORDS = {AGREES: EQUIVALENT, PARTS: NOT_EQUIVALENT, NOT_TESTABLE: NOT_TESTABLE}
DIFFERENCE = "pairs_differ"  # the seeds-only tests' rule: its value is their level alpha
DIFFERS, NOT_DIFFERENT = "differs", "not shown to differ"
# The seeds-only TOST's rule: its value is the report's default equivalence margin (``--margin`` overrides it).
SEEDS_EQUIVALENCE = "accuracy_equivalent_seeds_only"
EQUIVALENCE_NOT_TESTABLE = f"equivalence {NOT_TESTABLE}"
DIFFERENCE_WORDS = {AGREES: DIFFERS, PARTS: NOT_DIFFERENT, NOT_TESTABLE: NOT_TESTABLE, UNTESTED: UNTESTED}
# The depth report's step-0 thresholds (conf/experiment/claims/depth.yaml): each rule's value is its threshold.
SCALE_LOST, INPUTS_COLLAPSED, GRADIENT_LOST = (
    "forward_scale_lost",
    "inputs_indistinguishable",
    "gradient_vanished",
)


def equivalence_rules(root: Path | None = None) -> list[Rule]:
    """The study's equivalence rules, narrowest margin first (each rule's ``value`` is its margin)."""
    rules = [rule for rule in load(STUDY, root).values() if rule.id.startswith("accuracy_within_")]
    return sorted(rules, key=lambda rule: float(rule.value or 0))


def difference_rule(root: Path | None = None) -> Rule:
    """The study's rule for "two initializers differ": its ``value`` is the level alpha of every seeds-only
    test of the report (significance after Benjamini-Hochberg, TOST, power), set nowhere else."""
    return stated_value(STUDY, DIFFERENCE, root, below=1)


def seeds_equivalence_rule(root: Path | None = None) -> Rule:
    """The study's rule for "equivalent, seeds only" (the TOST of every trained pair on final accuracy): its
    ``value`` is the report's default margin, a fraction below 1, set nowhere else."""
    return stated_value(STUDY, SEEDS_EQUIVALENCE, root, below=1)


def judge_seeds_equivalence(comparisons: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """``comparisons`` with each equivalence-tested pair (a margin, not reported apart) that has fewer seeds
    than ``rule`` needs reading "equivalence not testable at this budget" in ``verdict``, whatever its TOST
    says (its ``tost_p`` stays); the seeds the rule needs beside it (``equivalence_min_seeds``)."""
    judged = comparisons.copy()
    if judged.empty:
        return judged
    short = [
        bool(pd.notna(r.margin) and not r.degenerate and pair_seeds(r) < rule.min_seeds)
        for r in comparisons.itertuples(index=False)
    ]
    judged.loc[short, "verdict"] = EQUIVALENCE_NOT_TESTABLE
    judged["equivalence_min_seeds"] = rule.min_seeds
    return judged


def depth_thresholds(root: Path | None = None) -> dict[str, Rule]:
    """The depth report's step-0 thresholds by id (:data:`SCALE_LOST`, :data:`INPUTS_COLLAPSED`,
    :data:`GRADIENT_LOST`), each rule's ``value`` the threshold it states."""
    return {
        rule_id: stated_value(DEPTH, rule_id, root)
        for rule_id in (SCALE_LOST, INPUTS_COLLAPSED, GRADIENT_LOST)
    }


def margin_key(margin: float) -> str:
    """The column suffix of a margin: 0.002 -> '2' (tenths of a percentage point)."""
    return str(round(1000 * margin))


def judge_accuracy(accuracy: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """``accuracy`` (initstudy.report.image_bootstrap.compare_accuracy) with a verdict per rule: equivalent when
    the 90 % interval lies inside ±margin, not shown equivalent otherwise, not testable at this budget with
    fewer seeds than the rule needs; the rule's seeds beside it, and the trivial baseline's call on the pair
    (every pair equivalent), which :func:`tally` scores against the verdicts."""
    judged = accuracy.copy()
    for rule in rules:
        key = margin_key(float(rule.value))
        judged[f"verdict_{key}"] = [
            WORDS[decide(rule, int(r.n_seeds), AGREES if -rule.value < r.ci90_low and r.ci90_high < rule.value else PARTS)]
            for r in accuracy.itertuples(index=False)
        ]  # fmt: skip
        judged[f"min_seeds_{key}"] = rule.min_seeds
        judged[f"baseline_{key}"] = EQUIVALENT
    return judged


def pair_seeds(row: object) -> int:
    """The seeds behind a seeds-only comparison: the pairs when paired, else the smaller sample."""
    if row.design == "paired":  # type: ignore[attr-defined]
        return int(row.n_pairs)  # type: ignore[attr-defined]
    return int(min(row.n_a, row.n_b))  # type: ignore[attr-defined]


def judge_differences(comparisons: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """``comparisons`` (adjusted: initstudy.report.stats.adjust) with the verdict of ``rule`` on each tested
    pair: differs when its Benjamini-Hochberg-adjusted p is below the rule's level, not shown to differ
    otherwise, not testable at this budget with fewer seeds than the rule needs ('' for a pair reported
    apart); the seeds it needs beside it."""
    judged = comparisons.copy()
    if judged.empty:
        return judged
    judged["difference_verdict"] = [
        "" if r.degenerate else
        DIFFERENCE_WORDS[decide(rule, pair_seeds(r), AGREES if r.p_adjusted < rule.value else PARTS)]
        for r in comparisons.itertuples(index=False)
    ]  # fmt: skip
    judged["difference_min_seeds"] = rule.min_seeds
    return judged


@dataclass(frozen=True)
class Tally:
    """A rule's verdicts over a set of pairs beside its trivial baseline's on the same pairs. The baseline makes
    one call for every pair (``baseline_call``: "equivalent" for "every pair equivalent", "not shown to differ"
    for "no pair differs"); it scores the pairs where the rule's verdict is that call."""

    rule: Rule
    shown_word: str  # the verdict counted in ``shown`` ("equivalent", "differs")
    label: str  # the same as an adjective ("equivalent", "different")
    shown: int  # judged pairs whose verdict is ``shown_word``
    judged: int  # pairs with the seeds the rule needs
    not_testable: int  # pairs with fewer
    baseline_call: str
    baseline_right: int  # judged pairs whose verdict is the baseline's call
    fewest_seeds: int
    most_seeds: int
    claims_file: str

    @property
    def baseline_shown(self) -> int:
        """Judged pairs the baseline calls ``shown_word``: all of them or none."""
        return self.judged if self.baseline_call == self.shown_word else 0

    def seeds_text(self) -> str:
        low, high = self.fewest_seeds, self.most_seeds
        return (
            f"{low if low == high else f'{low}-{high}'} seeds per pair, the rule needs {self.rule.min_seeds}"
        )

    def baseline_text(self) -> str:
        """What the trivial baseline scores on the judged pairs, against the rule."""
        return (f"trivial baseline '{self.rule.baseline}': calls {self.baseline_shown} of {self.judged} pairs "
                f"{self.label}, the rule {self.shown} of {self.judged}; the same verdict on {self.baseline_right} "
                f"of {self.judged}")  # fmt: skip

    def rule_text(self) -> str:
        """The rule, the seeds behind it and the trivial baseline's score, for beside the verdict."""
        rule = f"rule `{self.rule.id}` of {self.claims_file}: {self.rule.rule}"
        return f"{rule}; {self.seeds_text()}; {self.baseline_text()}"


def tally(verdicts: Sequence[str], seeds: Sequence[int], rule: Rule, *, shown_word: str, label: str,
          baseline_call: str, paper: str = STUDY) -> Tally:  # fmt: skip
    """Count ``verdicts`` (one per pair, with its ``seeds``): how many the rule judged, how many of those read
    ``shown_word``, how many the baseline that calls every pair ``baseline_call`` gets as the rule does."""
    if len(verdicts) != len(seeds):
        raise ValueError(f"{len(verdicts)} verdicts but {len(seeds)} seed counts")
    judged = [v for v in verdicts if v not in (NOT_TESTABLE, UNTESTED)]
    return Tally(
        rule=rule, shown_word=shown_word, label=label, shown=sum(v == shown_word for v in judged),
        judged=len(judged), not_testable=sum(v == NOT_TESTABLE for v in verdicts), baseline_call=baseline_call,
        baseline_right=sum(v == baseline_call for v in judged), fewest_seeds=min(seeds, default=0),
        most_seeds=max(seeds, default=0), claims_file=claims_path(paper, Path()).as_posix(),
    )  # fmt: skip


def difference_tally(rows: pd.DataFrame, rule: Rule) -> Tally:
    """The "differs" verdicts of the tested pairs in ``rows`` (judged by :func:`judge_differences`), beside
    the baseline "no pair differs"."""
    tested = rows[rows.degenerate == ""]
    return tally(list(tested.difference_verdict), [pair_seeds(r) for r in tested.itertuples(index=False)], rule,
                 shown_word=DIFFERS, label="different", baseline_call=NOT_DIFFERENT)  # fmt: skip


def equivalence_tallies(accuracy: pd.DataFrame, rules: list[Rule]) -> list[Tally]:
    """Per margin, the equivalence verdicts of ``accuracy`` (judged by :func:`judge_accuracy`), beside the
    baseline "every pair equivalent"."""
    return [
        tally(list(accuracy[f"verdict_{margin_key(float(rule.value))}"]), [int(n) for n in accuracy.n_seeds], rule,
              shown_word=EQUIVALENT, label=EQUIVALENT, baseline_call=EQUIVALENT)
        for rule in rules
    ]  # fmt: skip


def failure_rule(root: Path | None = None) -> Rule:
    """The depth report's rule for "fails from depth d" (its ``value``: the one-sided Fisher test's level)."""
    return load(DEPTH, root)["fails_from_depth"]

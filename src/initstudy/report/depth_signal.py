"""Two measures of the forward signal at step 0, and which of them a failing network has lost.

The activation std through depth measures the forward signal's *scale*. A network can keep that scale and still
carry no information about its input: in the ordered phase of mean-field theory (Poole et al. 2016; Schoenholz
et al. 2017) every input is mapped towards the same direction, so two different images reach the last hidden
layer with correlation -> 1, whatever their scale. Large drawn biases (``torch_default``) do exactly that: the
bias terms, identical for every image, dominate the pre-activations. The correlation of two images'
pre-activations at the last hidden layer (the diagnose stage's ``correlation`` rows: cosine similarity over 32
image pairs, mean over seeds) sees this collapse; the activation std cannot.

A statement that "the failure follows the gradient, not the forward signal" would rest on the scale alone; the
statement here counts, over the failing cells, which measure has lost the forward signal, and reports it.
"""

from __future__ import annotations

import math

import pandas as pd

from initstudy.report.papers.claims import NOT_TESTABLE
from initstudy.report.papers.rules import Rule
from initstudy.report.study_rules import GRADIENT_LOST, INPUTS_COLLAPSED, SCALE_LOST, depth_thresholds

CORRELATION = "correlation"  # initstudy.diagnose.measure.CORRELATION: the statistic's name in diagnostics.csv
CLAIMS_FILE = "conf/experiment/claims/depth.yaml"  # where the thresholds below are stated (study_rules)


def last_hidden_correlation(diagnostics: pd.DataFrame, init: str, activation: str, depth: int) -> float:
    """Two images' pre-activation correlation at the last hidden layer (layer ``depth``), mean over pairs and
    seeds; NaN when the diagnostics lack it."""
    rows = diagnostics[(diagnostics.statistic == CORRELATION) & (diagnostics.init == init)
                       & (diagnostics.activation == activation) & (diagnostics.depth == depth)
                       & (diagnostics.layer == depth)]  # fmt: skip
    return float(rows["mean"].iloc[0]) if len(rows) else math.nan


def _cells(frame: pd.DataFrame) -> str:
    return ", ".join(f"`{r.init}` {r.activation} {r.depth} ({r.corr_last:.3f})" for r in frame.itertuples())


def _rule(rule: Rule) -> str:
    return f"rule `{rule.id}`: {rule.rule}"


def marker_score(known: pd.DataFrame, lost: pd.Series) -> int:
    """Cells a measure classifies right as a marker of failure: lost and failing in some seed, or kept and
    training in every seed."""
    failing = known.n_failed_to_train > 0
    return int(((lost & failing) | (~lost & ~failing)).sum())


def signal_statement(summary: pd.DataFrame, seeds: int, rules: dict[str, Rule] | None = None) -> list[str]:
    """Over the cells that fail to train in at least one seed: how many lost the forward signal's scale, how
    many kept the scale but collapsed the correlation (listed, with it), how many lost the gradient; how many
    cells that train share each loss; and each measure as a marker of failure beside the trivial baseline
    "every cell trains". The thresholds are the rules of conf/experiment/claims/depth.yaml (``rules``: read
    from there when not given), printed beside each count with the ``seeds`` the step-0 diagnostics average
    over; with fewer seeds than a rule needs the paragraph is not testable at this budget. Empty without the
    three step-0 columns."""
    needed = {"act_std_last_over_first", "grad_std_first_over_last", "corr_last"}
    if not needed <= set(summary.columns):
        return []
    known = summary.dropna(subset=sorted(needed))
    if known.empty:
        return []
    rules = rules or depth_thresholds()
    scale, collapse, gradient = rules[SCALE_LOST], rules[INPUTS_COLLAPSED], rules[GRADIENT_LOST]
    need = max(rule.min_seeds for rule in (scale, collapse, gradient))
    if seeds < need:
        return [
            f"**Forward and backward signal at step 0.** {NOT_TESTABLE[0].upper() + NOT_TESTABLE[1:]}: the step-0 "
            f"diagnostics average over {seeds} seed(s), the rules of {CLAIMS_FILE} need {need} ({_rule(scale)}; "
            f"{_rule(collapse)}; {_rule(gradient)}).",
            "",
        ]
    failing, training = known[known.n_failed_to_train > 0], known[known.n_failed_to_train == 0]
    scale_lost = failing.act_std_last_over_first < scale.value
    collapsed = failing.corr_last >= collapse.value
    hidden_by_scale = failing[~scale_lost & collapsed]
    neither = failing[~scale_lost & ~collapsed]
    gradient_lost = int((failing.grad_std_first_over_last < gradient.value).sum())
    training_collapsed = training[training.corr_last >= collapse.value]
    training_gradient = int((training.grad_std_first_over_last < gradient.value).sum())
    kept = len(failing) - int(scale_lost.sum())
    verdict = (
        "Every failing cell has therefore lost its forward signal by one measure or the other: these failures do "
        "not separate the gradient from the forward signal."
        if neither.empty
        else f"{len(neither)} failing cell(s) keep both the scale and the information of the forward signal: "
        f"{_cells(neither)}."
    )
    alone = ": neither measure alone marks failure." if len(training_collapsed) and training_gradient else "."
    scores = {
        "the scale": marker_score(known, known.act_std_last_over_first < scale.value),
        "the correlation": marker_score(known, known.corr_last >= collapse.value),
        "the gradient": marker_score(known, known.grad_std_first_over_last < gradient.value),
    }
    return [
        f"**Forward and backward signal at step 0** (the rules of {CLAIMS_FILE}, on the step-0 diagnostics' "
        f"{seeds} seeds, the rules need {need}). Of the {len(failing)} cells that fail to train in at least "
        f"one seed, {int(scale_lost.sum())} lose the forward signal's scale ({_rule(scale)}). "
        f"The other {kept} keep it, so by the activation std their forward signal is intact, yet "
        f"{len(hidden_by_scale)} of them map two different images to nearly the same direction at the last hidden "
        f"layer ({_rule(collapse)}: {_cells(hidden_by_scale) or 'none'}), the ordered "
        f"phase, where the forward information collapses while its scale does not. {verdict} The gradient "
        f"has vanished in {gradient_lost} of the {len(failing)} ({_rule(gradient)}). Of "
        f"the {len(training)} cells that train in every seed, {len(training_collapsed)} have `corr last` >= "
        f"{collapse.value:g} and {training_gradient} a gradient below {gradient.value:g}{alone} As a marker of "
        f"failure (lost: the cell fails in some seed), over all {len(known)} cells: "
        + ", ".join(f"{name} is right on {score}" for name, score in scores.items())
        + f"; the trivial baseline '{scale.baseline}' on {len(training)}.",
        "",
    ]

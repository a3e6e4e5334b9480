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

CORRELATION = "correlation"  # initstudy.diagnose.measure.CORRELATION: the statistic's name in diagnostics.csv
SCALE_LOST = 0.1  # activation std last/first hidden layer below this: the forward signal's scale is lost
COLLAPSED = (
    0.99  # two images' correlation at the last hidden layer at or above this: they are indistinguishable
)
GRADIENT_LOST = 0.01  # gradient std first/last hidden layer below this: the gradient has vanished


def last_hidden_correlation(diagnostics: pd.DataFrame, init: str, activation: str, depth: int) -> float:
    """Two images' pre-activation correlation at the last hidden layer (layer ``depth``), mean over pairs and
    seeds; NaN when the diagnostics lack it."""
    rows = diagnostics[(diagnostics.statistic == CORRELATION) & (diagnostics.init == init)
                       & (diagnostics.activation == activation) & (diagnostics.depth == depth)
                       & (diagnostics.layer == depth)]  # fmt: skip
    return float(rows["mean"].iloc[0]) if len(rows) else math.nan


def _cells(frame: pd.DataFrame) -> str:
    return ", ".join(f"`{r.init}` {r.activation} {r.depth} ({r.corr_last:.3f})" for r in frame.itertuples())


def signal_statement(summary: pd.DataFrame) -> list[str]:
    """Over the cells that fail to train in at least one seed: how many lost the forward signal's scale, how
    many kept the scale but collapsed the correlation (listed, with it), how many lost the gradient; and how
    many cells that train share each loss. Empty without the three step-0 columns."""
    needed = {"act_std_last_over_first", "grad_std_first_over_last", "corr_last"}
    if not needed <= set(summary.columns):
        return []
    known = summary.dropna(subset=sorted(needed))
    if known.empty:
        return []
    failing, training = known[known.n_failed_to_train > 0], known[known.n_failed_to_train == 0]
    scale_lost = failing.act_std_last_over_first < SCALE_LOST
    collapsed = failing.corr_last >= COLLAPSED
    hidden_by_scale = failing[~scale_lost & collapsed]
    neither = failing[~scale_lost & ~collapsed]
    gradient_lost = int((failing.grad_std_first_over_last < GRADIENT_LOST).sum())
    training_collapsed = training[training.corr_last >= COLLAPSED]
    training_gradient = int((training.grad_std_first_over_last < GRADIENT_LOST).sum())
    kept = len(failing) - int(scale_lost.sum())
    verdict = (
        "Every failing cell has therefore lost its forward signal by one measure or the other: these failures do "
        "not separate the gradient from the forward signal."
        if neither.empty
        else f"{len(neither)} failing cell(s) keep both the scale and the information of the forward signal: "
        f"{_cells(neither)}."
    )
    alone = ": neither measure alone marks failure." if len(training_collapsed) and training_gradient else "."
    return [
        f"**Forward and backward signal at step 0.** Of the {len(failing)} cells that fail to train in at least "
        f"one seed, {int(scale_lost.sum())} lose the forward signal's scale (`act last/first` below {SCALE_LOST:g}). "
        f"The other {kept} keep it, so by the activation std their forward signal is intact, yet "
        f"{len(hidden_by_scale)} of them map two different images to nearly the same direction: correlation "
        f"`corr last` >= {COLLAPSED:g} at the last hidden layer ({_cells(hidden_by_scale) or 'none'}), the ordered "
        f"phase, where the forward information collapses while its scale does not. {verdict} The gradient "
        f"(`grad first/last` below {GRADIENT_LOST:g}) has vanished in {gradient_lost} of the {len(failing)}. Of "
        f"the {len(training)} cells that train in every seed, {len(training_collapsed)} have `corr last` >= "
        f"{COLLAPSED:g} and {training_gradient} a gradient below {GRADIENT_LOST:g}{alone}",
        "",
    ]

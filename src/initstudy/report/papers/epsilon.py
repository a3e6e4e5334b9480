"""Why deep networks stop training under Adam (conf/experiment/epsilon.yaml): the depth sweep's boundary cells
trained again under optimizer arms that change only what eps does, ten seeds each.

The depth report explains its failures by Adam's eps swamping tiny gradients (the step is lr * m / (sqrt(v) +
eps), about lr * g / eps once g is below eps), but across its cells the step-0 gradient and the gradient's
decay through the layers move together, so its data cannot tell eps from a vanished gradient. Here the cells
are fixed and eps is varied, on the same initial weights (same seed): if eps is the mechanism, failures fall as
eps falls. Three tests, their rules in conf/experiment/claims/epsilon.yaml, stated before the runs were read:
paired exact McNemar tests between arms, and a logistic model of P(fail) against depth and the run's own
log10 gradient ratio, with and without a log10 eps term (likelihood-ratio test). SGD with momentum has no eps:
at its validation-chosen rate it shows what a vanished gradient does to an optimizer whose step scales with g.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from initstudy.report.depth import FAILS_BELOW, failure_interval
from initstudy.report.figures import save
from initstudy.report.load import SweepRuns
from initstudy.report.papers.arms import (
    arm_summary,
    chosen_sgd,
    discordant_p,
    gradient_track,
    paired,
    paired_difference,
    run_table,
    scientific,
    with_sgd_arm,
)
from initstudy.report.papers.claims import AGREES, PARTS, UNTESTED, Claim, PaperReport
from initstudy.report.papers.rules import Rule, judged, stated_values
from initstudy.report.tables import markdown_table

NAME = "epsilon"
REFERENCE = "adam_eps1e-7"  # the depth sweep's optimizer (conf/optimizer/adam.yaml)
# claim id -> (arm, reference, the arm predicted to fail more): each an exact one-sided McNemar test.
PAIRED = {
    "eps_1e-12_fails_less": ("adam_eps1e-12", REFERENCE, REFERENCE),
    "eps_1e-8_fails_less": ("adam_eps1e-8", REFERENCE, REFERENCE),
    "keras_eps_fails_more": ("adam_keras_eps1e-7", REFERENCE, "adam_keras_eps1e-7"),
    "sgd_fails_more": ("sgd_chosen", "adam_eps1e-12", "sgd_chosen"),
}
LOGISTIC = "logistic_eps_term"
TORCH_ADAM = ("adam_eps1e-7", "adam_eps1e-8", "adam_eps1e-12")  # constant eps: the logistic fit's arms
ARM_ORDER = ("adam_keras_eps1e-7", "adam_eps1e-7", "adam_eps1e-8", "adam_eps1e-12", "sgd_chosen")
COLOURS = dict(zip(ARM_ORDER, ("#D55E00", "#0072B2", "#56B4E9", "#009E73", "#777777"), strict=True))


def rules(root: Path | None = None) -> dict[str, Rule]:
    """The claims file's rules, each present and its level a number in (0, 1) its words state: checked before
    any run is read."""
    return stated_values(NAME, (*PAIRED, LOGISTIC), root, below=1)


@dataclass(frozen=True)
class LogisticFit:
    """P(fail) = logistic(b0 + b_depth * depth + b_ratio * log10 ratio [+ b_eps * log10 eps]) on the runs of the
    torch Adam arms: both models' log-likelihoods and AIC, the likelihood-ratio test of the eps term, its
    coefficient and 95% profile-free Wald interval, and whether the fit separated the outcomes."""

    n: int
    loglik_without: float
    loglik_with: float
    aic_without: float
    aic_with: float
    lr_stat: float
    lr_p: float
    eps_coef: float
    eps_low: float
    eps_high: float
    separated: bool
    params_without: dict[str, float]
    params_with: dict[str, float]


def _design(frame: pd.DataFrame, with_eps: bool) -> pd.DataFrame:
    columns = {"depth": frame.depth.astype(float), "log10_ratio": np.log10(frame.grad_ratio.astype(float))}
    if with_eps:
        columns["log10_eps"] = np.log10(frame.eps.astype(float))
    if frame.depth.nunique() < 2:  # one depth: its column would be the constant's twin
        del columns["depth"]
    return sm.add_constant(pd.DataFrame(columns, index=frame.index), has_constant="add")


def _fit(y: pd.Series, x: pd.DataFrame) -> tuple[object, bool]:
    """A maximum-likelihood logistic fit; ``separated`` when statsmodels warns that the outcomes are (quasi-)
    perfectly separated, so that coefficients run off and only the likelihoods mean something."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sm.Logit(y.astype(float), x).fit(method="newton", maxiter=200, disp=0)
    separated = any("separation" in str(w.message).lower() for w in caught)
    return result, separated


def logistic(table: pd.DataFrame) -> LogisticFit | None:
    """Both logistic models on the torch Adam arms' runs with a finite, positive gradient ratio; None when the
    outcome does not vary (nothing to fit)."""
    frame = table[table.arm.isin(TORCH_ADAM) & (table.grad_ratio > 0) & np.isfinite(table.grad_ratio)]
    y = frame.failed.astype(int)
    if len(frame) < 4 or y.nunique() < 2:
        return None
    without, sep_without = _fit(y, _design(frame, False))
    with_eps, sep_with = _fit(y, _design(frame, True))
    lr_stat = max(0.0, 2.0 * (with_eps.llf - without.llf))
    low, high = (float(v) for v in with_eps.conf_int().loc["log10_eps"])
    return LogisticFit(n=len(frame), loglik_without=float(without.llf), loglik_with=float(with_eps.llf),
                       aic_without=float(without.aic), aic_with=float(with_eps.aic), lr_stat=lr_stat,
                       lr_p=float(stats.chi2.sf(lr_stat, 1)), eps_coef=float(with_eps.params["log10_eps"]),
                       eps_low=low, eps_high=high, separated=sep_without or sep_with,
                       params_without={k: float(v) for k, v in without.params.items()},
                       params_with={k: float(v) for k, v in with_eps.params.items()})  # fmt: skip


def paired_claims(table: pd.DataFrame, found: dict[str, Rule], seeds: int) -> tuple[list[Claim], list[dict]]:
    """One claim per paired comparison: over the cells' (cell, seed) pairs, the runs that fail under only one of
    the two arms; agrees when the arm predicted to fail more does so significantly (exact one-sided McNemar)."""
    claims, rows = [], []
    for claim_id, (arm, reference, worse) in PAIRED.items():
        only_reference, only_arm, pairs = paired(table, arm, reference, ["cell"])
        predicted, other = (only_arm, only_reference) if worse == arm else (only_reference, only_arm)
        p = discordant_p(predicted, other) if pairs else math.nan
        level = float(found[claim_id].value)
        outcome = None if math.isnan(p) else (AGREES if p <= level else PARTS)
        diff, low, high = paired_difference(only_reference, only_arm, pairs)
        rows.append({"claim": claim_id, "arm": arm, "reference": reference, "pairs": pairs,
                     "only_reference_fails": only_reference, "only_arm_fails": only_arm, "p_one_sided": p,
                     "fail_rate_difference": diff, "difference_ci_low": low, "difference_ci_high": high})  # fmt: skip
        ours = (f"{pairs} pairs: {only_reference} fail only under {reference}, {only_arm} only under {arm}; "
                f"exact one-sided McNemar p = {p:.3g}; failure rate {reference} minus {arm}: {diff:+.3f} "
                f"[{low:+.3f}, {high:+.3f}]")  # fmt: skip
        claims.append(judged(found[claim_id], ours=ours, seeds=seeds, outcome=outcome,
                             baseline=f"{only_reference + only_arm} discordant pairs, split evenly under no effect",
                             seeds_note="seeds 0-9 per cell and arm, paired by seed"))  # fmt: skip
    return claims, rows


def logistic_claim(fit: LogisticFit | None, rule: Rule, seeds: int) -> Claim:
    """The eps term's verdict: agrees when adding log10 eps to depth and log10 gradient ratio improves the fit
    by the likelihood-ratio test and its coefficient is positive (a larger eps, more failures)."""
    if fit is None:
        return judged(rule, ours="the outcome does not vary: nothing to fit", seeds=seeds, outcome=None,
                      baseline="no model")  # fmt: skip
    level = float(rule.value)
    outcome = AGREES if fit.lr_p <= level and fit.eps_coef > 0 else PARTS
    ours = (f"n = {fit.n} runs; without eps: log-likelihood {fit.loglik_without:.2f}, AIC {fit.aic_without:.1f}; "
            f"with eps: {fit.loglik_with:.2f}, AIC {fit.aic_with:.1f}; likelihood-ratio chi2(1) = {fit.lr_stat:.2f}, "
            f"p = {fit.lr_p:.3g}; log10 eps coefficient {fit.eps_coef:+.2f} [{fit.eps_low:+.2f}, {fit.eps_high:+.2f}]")  # fmt: skip
    why = (
        "the outcomes are (quasi-)separated: the coefficients run off; read the likelihoods"
        if fit.separated
        else ""
    )
    return judged(rule, ours=ours, seeds=seeds, outcome=outcome, why=why,
                  baseline=f"depth and gradient ratio alone: AIC {fit.aic_without:.1f}")  # fmt: skip


def failure_figure(summary: pd.DataFrame, path: Path) -> None:
    """Failure rate with its 95% interval per cell and arm."""
    cells = list(dict.fromkeys(summary.cell))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cells)), 3.6))
    width = 0.8 / len(ARM_ORDER)
    for i, arm in enumerate(ARM_ORDER):
        mine = summary[summary.arm == arm].set_index("cell").reindex(cells)
        x = np.arange(len(cells)) + (i - (len(ARM_ORDER) - 1) / 2) * width
        rate = mine.n_failed / mine.n_runs
        ax.bar(x, rate, width, color=COLOURS[arm], label=arm)
        ax.errorbar(x, rate, yerr=[rate - mine.fail_ci_low, mine.fail_ci_high - rate], fmt="none", ecolor="black",
                    elinewidth=0.6, capsize=1.5)  # fmt: skip
    ax.set_xticks(np.arange(len(cells)), [c.replace("_", " ", 2) for c in cells], rotation=20, fontsize=7)
    ax.set(ylabel="P(fail to train)", ylim=(0, 1.05),
           title=f"Failures per boundary cell and optimizer arm (test acc < {FAILS_BELOW:.0%} or diverged; 95% CI)")  # fmt: skip
    ax.title.set_fontsize(8)
    ax.legend(fontsize=6, ncols=3, loc="upper left")
    fig.tight_layout()
    save(fig, path)


def fit_figure(table: pd.DataFrame, fit: LogisticFit | None, path: Path) -> None:
    """Per depth: each (cell, torch Adam arm)'s failure rate at its runs' mean log10 gradient ratio, and the
    fitted P(fail) with eps (solid, per eps) and without it (dashed)."""
    frame = table[table.arm.isin(TORCH_ADAM) & (table.grad_ratio > 0)].assign(
        log10_ratio=lambda f: np.log10(f.grad_ratio.astype(float))
    )
    depths = sorted(frame.depth.unique())
    fig, axes = plt.subplots(1, max(1, len(depths)), figsize=(3.2 * max(1, len(depths)), 3.3), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=False):
        mine = frame[frame.depth == depth]
        for (_cell, arm), group in mine.groupby(["cell", "arm"]):
            ax.scatter(group.log10_ratio.mean(), group.failed.mean(), color=COLOURS[arm], s=16, alpha=0.8)
        if fit is not None:
            x = np.linspace(mine.log10_ratio.min() - 0.5, mine.log10_ratio.max() + 0.5, 100)
            ax.plot(x, predicted(fit.params_without, depth, x), "k--", lw=1, label="without eps")
            for arm in TORCH_ADAM:
                eps = float(table[table.arm == arm].eps.iloc[0]) if (table.arm == arm).any() else math.nan
                if math.isnan(eps):
                    continue
                ax.plot(x, predicted(fit.params_with, depth, x, eps), color=COLOURS[arm], lw=1.2, label=arm)
        ax.set(
            title=f"{depth} hidden layers", xlabel="log10 gradient first/last at step 0", ylim=(-0.05, 1.05)
        )
        ax.title.set_fontsize(8)
    axes[0][0].set_ylabel("P(fail to train)")
    if fit is not None:
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    save(fig, path)


def depth_figure(table: pd.DataFrame, fit: LogisticFit | None, path: Path) -> None:
    """P(fail) against depth: each torch Adam arm's failure rate per depth, pooled over its cells, with the 95%
    Clopper-Pearson interval; the fitted curves with eps (solid, per eps) and without it (dashed), each at the
    runs' median step-0 gradient ratio, since depth and ratio enter the model together."""
    frame = table[table.arm.isin(TORCH_ADAM) & (table.grad_ratio > 0)]
    depths = sorted(frame.depth.unique())
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for k, arm in enumerate(a for a in TORCH_ADAM if (frame.arm == a).any()):
        mine = frame[frame.arm == arm].groupby("depth").failed.agg(["sum", "count"]).reindex(depths).dropna()
        rate = mine["sum"] / mine["count"]
        bounds = [failure_interval(int(f), int(n)) for f, n in zip(mine["sum"], mine["count"], strict=True)]
        low, high = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
        ax.errorbar(np.array(mine.index, dtype=float) * (1 + 0.03 * (k - 1)), rate, yerr=[rate - low, high - rate],
                    color=COLOURS[arm], marker="o", ls="none", capsize=3, label=f"{arm} (observed)")  # fmt: skip
    if fit is not None and len(frame):
        x = np.linspace(min(depths), max(depths), 100)
        ratio = float(np.median(np.log10(frame.grad_ratio.astype(float))))
        ax.plot(x, predicted(fit.params_without, x, ratio), "k--", lw=1, label="fit without eps")
        for arm in TORCH_ADAM:
            if (frame.arm == arm).any():
                eps = float(frame[frame.arm == arm].eps.iloc[0])
                ax.plot(x, predicted(fit.params_with, x, ratio, eps), color=COLOURS[arm], lw=1.2)
        ax.set_title(f"fits at the median log10 gradient ratio {ratio:.2f}", fontsize=8)
    ax.set(xscale="log", xlabel="hidden layers", ylabel="P(fail to train)", ylim=(-0.05, 1.05))
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the log axis' own labels would crowd
    ax.legend(fontsize=6)
    fig.tight_layout()
    save(fig, path)


def predicted(
    params: dict[str, float],
    depth: float | np.ndarray,
    log10_ratio: float | np.ndarray,
    eps: float | None = None,
) -> np.ndarray:
    """P(fail) under a fitted model at ``depth`` hidden layers and a log10 step-0 gradient ratio (and, for the
    model with the eps term, at ``eps``): the two figures' curves, either argument an array."""
    z = params["const"] + params.get("depth", 0.0) * depth + params["log10_ratio"] * log10_ratio
    if eps is not None:
        z = z + params["log10_eps"] * math.log10(eps)
    return _sigmoid(z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def gradient_figure(track: pd.DataFrame, path: Path) -> None:
    """Per cell: the median over hidden layers of the weight gradients' std at each probe, median over seeds,
    per arm, against each torch arm's eps (dotted)."""
    cells = list(dict.fromkeys(track.cell))
    cols = min(4, max(1, len(cells)))
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.4 * rows), squeeze=False)
    for ax, cell in zip(axes.flat, cells, strict=False):
        mine = track[track.cell == cell]
        for arm in ARM_ORDER:
            line = mine[mine.arm == arm].groupby("step").weight_grad.median()
            if len(line):
                ax.plot(line.index, line.values, color=COLOURS[arm], lw=1.2, label=arm, marker=".")
        for eps in (1e-7, 1e-8, 1e-12):
            ax.axhline(eps, color="grey", ls=":", lw=0.6)
        ax.set(yscale="log", title=cell, xlabel="step")
        ax.title.set_fontsize(7)
    for ax in axes.flat[len(cells) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("weight gradient std (median layer)")
    axes[0][0].legend(fontsize=5)
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    found = rules()
    config = sweep.config
    table = run_table(sweep.runs, int(config.get("model", {}).get("width") or 0))
    choice = chosen_sgd(table, ["cell"])
    arms = with_sgd_arm(table, choice, ["cell"])
    summary = arm_summary(arms, ["cell", "arm"])
    seeds = int(arms.groupby(["cell", "arm"]).seed.nunique().min()) if len(arms) else 0
    claims, pairs = paired_claims(arms, found, seeds)
    fit = logistic(arms)
    claims.append(logistic_claim(fit, found[LOGISTIC], seeds))
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    failure_figure(summary, figures_dir / "failures_by_arm.png")
    fit_figure(arms, fit, figures_dir / "p_fail_fit.png")
    depth_figure(arms, fit, figures_dir / "p_fail_depth.png")
    gradient_figure(gradient_track(arms), figures_dir / "gradients_during_training.png")
    data = config.get("data", {})
    setup = [
        "The depth report explains its failures by Adam's eps swamping tiny gradients; its data cannot tell that "
        "from the vanished gradient itself. Here its boundary cells (some seeds failed, some did not) are trained "
        "again with only eps changed, on the same initial weights per seed (`conf/experiment/epsilon.yaml`, DVC "
        "stages `train_epsilon` -> `report_paper@epsilon`).",
        "",
        f"- Cells: {', '.join(f'`{c}`' for c in dict.fromkeys(table.cell))} (activation, hidden layers, "
        f"initializer; width {config.get('model', {}).get('width')}).",
        f"- Budget: {data.get('train_size')} training images, {config.get('trainer', {}).get('max_epochs')} "
        f"epoch, batch {data.get('batch_size')}; validation on {data.get('val_size')} held-out training images; "
        f"a run fails to train when its final test accuracy is below {FAILS_BELOW:.0%} or it diverged.",
        "- Arms: Keras' Adam (eps 1e-7 on the uncorrected sqrt(v), 3.2e-6 in torch's terms at step 1); torch's "
        "Adam at eps 1e-7 (the depth sweep's), 1e-8 and 1e-12; SGD with momentum 0.9 at each cell's learning rate "
        "chosen on validation accuracy among "
        f"{', '.join(f'{v:g}' for v in sorted(table.lr.dropna().unique()))} (`tables/sgd_learning_rates.csv`).",
        f"- Seeds: {' '.join(str(s) for s in sorted(table.seed.unique()))} for every cell and arm; the same seed "
        "gives the same initial weights under every arm.",
    ]
    arm_table = summary.assign(fails=[f"{r.n_failed}/{r.n_runs} [{r.fail_ci_low:.2f}, {r.fail_ci_high:.2f}]"
                                      for r in summary.itertuples(index=False)])  # fmt: skip
    sections = [[
        "## Failures per cell and arm", "",
        "`fails`: runs that fail to train / runs, with the 95% Clopper-Pearson interval; `weight grad` and "
        "`ratio`: the step-0 median weight-gradient std and the gradient's std in the first hidden layer over the "
        "last, each run's own probe, geometric mean over the seeds. `tables/arms.csv` holds the table, `tables/runs.csv` every run.",
        "",
        markdown_table(scientific(arm_table, ["weight_grad_gmean", "grad_ratio_gmean"])
                       [["cell", "arm", "fails", "acc_mean", "weight_grad_gmean", "grad_ratio_gmean"]]
                       .rename(columns={"weight_grad_gmean": "weight grad", "grad_ratio_gmean": "ratio"})),
    ], [
        "## Paired tests", "",
        "Each pair is one cell and seed under two arms; *only reference* / *only arm*: pairs where just that arm's "
        "run failed. `tables/paired_tests.csv` holds the table.", "",
        markdown_table(pd.DataFrame(pairs)),
    ], logistic_section(fit), conclusion(claims, found)]  # fmt: skip
    metrics = {"arms": {f"{r.cell}/{r.arm}": {"n_runs": r.n_runs, "n_failed": r.n_failed, "acc_mean": r.acc_mean}
                        for r in summary.itertuples(index=False)},
               "paired": {r["claim"]: {"p_one_sided": r["p_one_sided"], "pairs": r["pairs"],
                                       "fail_rate_difference": r["fail_rate_difference"]} for r in pairs},
               "logistic": None if fit is None else {"lr_p": fit.lr_p, "eps_coef": fit.eps_coef,
                                                     "eps_ci": [fit.eps_low, fit.eps_high], "n": fit.n,
                                                     "aic_without": fit.aic_without, "aic_with": fit.aic_with}}  # fmt: skip
    return PaperReport(title="Why deep networks stop training under Adam: eps or the vanished gradient",
                       setup=setup, claims=claims, metrics=metrics, sections=sections,
                       figures={"Failures per cell and arm": "failures_by_arm.png",
                                "P(fail) against depth, fitted with and without eps": "p_fail_depth.png",
                                "P(fail) against the step-0 gradient ratio, fitted with and without eps": "p_fail_fit.png",
                                "Weight gradients during training": "gradients_during_training.png"},
                       claims_file="conf/experiment/claims/epsilon.yaml",
                       tables={"runs.csv": arms.drop(columns="run_dir"), "arms.csv": summary,
                               "sgd_learning_rates.csv": choice, "paired_tests.csv": pd.DataFrame(pairs)})  # fmt: skip


def conclusion(claims: list[Claim], found: dict[str, Rule]) -> list[str]:
    """What the verdicts say about the depth report's explanation. The words for each combination of verdicts
    are fixed here, before the runs are read: eps is supported as a cause only when lowering it lowers the
    failures (the paired test at 1e-12) and it explains failures beyond depth and gradient ratio (the logistic
    term); the vanished gradient is supported when, without eps, SGD still fails more."""
    verdict = {rule_id: next((c.verdict for c in claims if c.claim == rule.claim), UNTESTED)
               for rule_id, rule in found.items()}  # fmt: skip
    lowered, term, sgd = verdict["eps_1e-12_fails_less"], verdict[LOGISTIC], verdict["sgd_fails_more"]
    if lowered == AGREES and term == AGREES:
        eps = (
            "The data support eps as a cause: lowering it to 1e-12 lowers the failures on the same initial "
            "weights, and it explains failures beyond depth and the gradient ratio."
        )
    elif lowered == PARTS and term == PARTS:
        eps = (
            "The data do not support eps as the cause: lowering it to 1e-12 does not lower the failures "
            "significantly, and depth and the gradient ratio explain them as well without it."
        )
    elif AGREES in (lowered, term):
        eps = (
            f"The data support eps only in part: one of its two tests agrees (lowering eps to 1e-12: "
            f"{lowered}; the logistic eps term: {term})."
        )
    else:
        eps = f"The data cannot decide on eps (lowering eps to 1e-12: {lowered}; the logistic eps term: {term})."
    if sgd == AGREES:
        gradient = (
            "Without eps, SGD with momentum fails more than Adam at eps 1e-12: where the gradient has "
            "vanished, an optimizer whose step scales with it stalls, and Adam's normalisation works "
            "around it."
        )
    elif sgd == PARTS:
        gradient = (
            "SGD with momentum at its validation-chosen rate does not fail significantly more than Adam "
            "at eps 1e-12: the vanished gradient alone does not make these cells fail."
        )
    else:
        gradient = f"The SGD comparison is {sgd}."
    return ["## What this says about the depth report's explanation", "",
            "The depth report explains its failing cells by Adam's eps swamping gradients below it. "
            "Read from the verdicts above, by words fixed before the runs "
            "(`initstudy.report.papers.epsilon.conclusion`):", "", f"- {eps}", f"- {gradient}"]  # fmt: skip


def logistic_section(fit: LogisticFit | None) -> list[str]:
    if fit is None:
        return [
            "## Logistic model",
            "",
            "Every run of the torch Adam arms had the same outcome: nothing to fit.",
        ]
    rows = pd.DataFrame(
        [{"model": "without eps", **{k: fit.params_without.get(k, math.nan) for k in fit.params_with},
          "log-likelihood": fit.loglik_without, "AIC": fit.aic_without},
         {"model": "with eps", **fit.params_with, "log-likelihood": fit.loglik_with, "AIC": fit.aic_with}]
    )  # fmt: skip
    return [
        "## Logistic model", "",
        f"P(fail) = logistic(const + depth + log10 gradient ratio [+ log10 eps]) over the {fit.n} runs of torch's "
        f"Adam (constant eps); likelihood-ratio test of the eps term: chi2(1) = {fit.lr_stat:.2f}, p = {fit.lr_p:.3g}; "
        f"its coefficient {fit.eps_coef:+.2f}, 95% Wald interval [{fit.eps_low:+.2f}, {fit.eps_high:+.2f}] per "
        "decade of eps" + ("; the outcomes are (quasi-)separated, so the coefficients run off and only the "
                            "likelihoods can be read." if fit.separated else "."),
        "",
        markdown_table(rows),
    ]  # fmt: skip

"""report.md: the setup (from the resolved config), the tables, the figures, and statements the data support.

Every sentence is generated from the numbers; none is a hard-coded conclusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from initstudy.report.image_bootstrap import REPLICATES, SEED
from initstudy.report.load import parse_group
from initstudy.report.papers.rules import Rule
from initstudy.report.stats import SEED_NOTEBOOK
from initstudy.report.study_rules import (
    DIFFERS,
    NOT_TESTABLE,
    Tally,
    difference_tally,
    equivalence_tallies,
    margin_key,
)
from initstudy.report.tables import cell as _fmt
from initstudy.report.tables import markdown_table as _table


def setup_section(config: dict[str, Any], runs: pd.DataFrame) -> str:
    model, optimizer, data, trainer = (config.get(k, {}) for k in ("model", "optimizer", "data", "trainer"))
    module = config.get("module", {})
    hidden = model.get("hidden_sizes")
    if hidden is None:  # model.depth x model.width (a depth preset's layout)
        hidden = [model.get("width")] * int(model.get("depth") or 0)
    sizes = [model.get("input_size", 784), *hidden, model.get("num_classes", 10)]
    opt_name = str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
    opt_args = ", ".join(f"{k}={v}" for k, v in optimizer.items() if not k.startswith("_"))
    val_size = int(data.get("val_size") or 0)
    train_size = data.get("train_size") or f"{60_000 - val_size:,}"
    seeds = sorted(runs.seed.unique().tolist())
    made_on = (
        runs.groupby(["device", "numerics"]).size().items()
        if {"device", "numerics"} <= set(runs.columns)
        else []
    )
    numerics = "; ".join(
        f"{n} runs on {device} under `numerics={profile}`" for (device, profile), n in made_on
    )
    every = module.get("val_every_n_steps")
    if val_size:
        protocol = (
            f"- Validation: the last {val_size:,} of the 60,000 training images, never trained on. Every curve, "
            "threshold and convergence number below is measured on them: a full pass at step 0, "
            + (f"every {every} optimizer steps " if every else "")
            + "and at every epoch end. The 10,000 test images are evaluated once, after training, and reported "
            "once (final test accuracy)."
        )
    else:
        protocol = (
            "- No validation split (`data.val_size=0`, the seed notebook's protocol): the test images are "
            "evaluated at step 0, "
            + (f"every {every} optimizer steps " if every else "")
            + "and after every epoch, so every curve and threshold below is measured on the test set."
        )
    return "\n".join(
        [
            "## Setup",
            "",
            f"- Network: {'-'.join(map(str, sizes))} MLP, {model.get('activation', '?')} activations, "
            "cross-entropy on logits; biases start at zero (except `torch_default`).",
            f"- Optimizer: {opt_name} ({opt_args}); batch size {data.get('batch_size')}; "
            f"{trainer.get('max_epochs')} epochs; training images: {train_size}.",
            f"- Initializers: {', '.join(f'`{i}`' for i in runs.init.unique())}; seeds {seeds} "
            f"({len(runs)} runs in the sweep manifest).",
            protocol,
            "- Design: runs with the same seed share the order of the training data (and initializers drawing from "
            "the same distribution share the draws: `glorot_uniform` and `he_uniform` rescale the same uniform "
            "numbers). Comparisons are therefore paired by seed (paired t-test on the per-seed differences); "
            "Welch's t-test where fewer than two seeds pair up.",
            f"- Numerics (each run's `numerics.json`): {numerics or 'not recorded'}. CPU and GPU results differ by "
            "design; `numerics=portable` pins the CPU arithmetic across x86-64 machines (README).",
            "- Derived from the resolved config of the runs (`runs/*/seed_*/config.yaml`), not retyped.",
        ]
    )


def _interval(low: float, high: float, digits: int = 4) -> str:
    return f"[{_fmt(low, digits)}, {_fmt(high, digits)}]"


def notebook_verdict(row: Any) -> str:
    reference = row.seed_notebook_acc
    if math.isnan(reference) or math.isnan(row.acc_pi95_low):
        return "–"
    return "inside" if row.acc_pi95_low <= reference <= row.acc_pi95_high else "outside"


def summary_table(summary: pd.DataFrame) -> str:
    rows = summary.itertuples(index=False)
    table = pd.DataFrame(
        [
            {
                "initializer": r.init,
                "runs": f"{r.n_complete}/{r.n_runs}",
                "test acc mean ± sd": f"{_fmt(r.acc_mean)} ± {_fmt(r.acc_std)}",
                "95% CI of the mean": _interval(r.acc_ci95_low, r.acc_ci95_high),
                "95% prediction interval (one new run)": _interval(r.acc_pi95_low, r.acc_pi95_high),
                "seed notebook (one Keras run)": _fmt(r.seed_notebook_acc),
                "notebook in the prediction interval": notebook_verdict(r),
                "test loss": _fmt(r.loss_mean),
                "diverged": r.n_diverged,
                "failed": r.n_failed,
            }
            for r in rows
        ]
    )
    return _table(table)


def km_cell(row: Any, key: str) -> str:
    """'1369 [1290, 1410; 93.8%] (5/5)': the Kaplan-Meier median, the order-statistic interval with its exact
    coverage (a 5-run interval cannot reach 95 %, and the cell says how far it gets), the runs that reached it."""
    median = getattr(row, f"steps_to_{key}_km_median")
    counts = f"({getattr(row, f'reached_{key}')}/{getattr(row, f'total_{key}')})"
    if math.isnan(median):
        return f"– {counts}"
    low, high = getattr(row, f"steps_to_{key}_km_ci_low"), getattr(row, f"steps_to_{key}_km_ci_high")
    covered = getattr(row, f"steps_to_{key}_km_ci_coverage", math.nan)
    share = "" if math.isnan(covered) else f"; {100 * covered:.1f}%"
    flag = getattr(row, f"steps_to_{key}_upper_bound", False)
    bound = "≤" if isinstance(flag, (bool, np.bool_)) and flag else ""
    return f"{bound}{median:.0f} [{_fmt(low, 0)}, {_fmt(high, 0)}{share}] {counts}"


def rmst_cell(row: Any, key: str) -> str:
    """The restricted mean, marked ≤ when a run's time is only known as "by the first evaluation pass"."""
    bounded = getattr(row, f"steps_to_{key}_in_first_interval", 0)
    value = _fmt(getattr(row, f"steps_to_{key}_rmst"), 0)
    return f"≤{value}" if bounded == bounded and bounded > 0 and value != "–" else value  # NaN: unknown


def convergence_table(summary: pd.DataFrame, split_name: str) -> str:
    table = pd.DataFrame(
        [
            {
                "initializer": r.init,
                **{
                    f"steps to {key}% {split_name} acc: KM median [interval; its coverage] (reached/runs)": km_cell(
                        r, key
                    )
                    for key in ("95", "97", "98")
                },
                "steps to 97%: restricted mean": rmst_cell(r, "97"),
                "train loss AUC / steps": _fmt(r.train_loss_auc_mean),
                f"min {split_name} loss (mean) at step (median)": f"{_fmt(r.val_loss_min_mean)} at "
                f"{_fmt(r.val_loss_min_step_median, 0)}",
                f"final {split_name} loss": _fmt(r.val_loss_final_mean),
            }
            for r in summary.itertuples(index=False)
        ]
    )
    return _table(table)


def comparisons_table(
    comparisons: pd.DataFrame, rule: Rule, equivalence: Rule | None = None, margin: float | None = None
) -> str:
    """Every tested pair on every endpoint, with the verdict of ``rule`` (conf/experiment/claims/study.yaml:
    initstudy.report.study_rules.judge_differences) and, where it has a margin, of the seeds-only equivalence
    rule ``equivalence`` at ``margin`` (judge_seeds_equivalence), both stated in the column heads."""
    tested = comparisons[comparisons.degenerate == ""] if len(comparisons) else comparisons
    if tested.empty:
        return "_No pair of initializers with spread on both sides: nothing to test._"
    rows = []
    for r in tested.itertuples(index=False):
        rows.append({
            "endpoint": r.endpoint,
            "A": r.init_a,
            "B": r.init_b,
            "design": f"{r.design} (n={r.n_pairs if r.design == 'paired' else f'{r.n_a}+{r.n_b}'})",
            "A − B [95% CI]": _difference(r),
            "effect size [95% CI]": f"{r.effect_size_name} {_fmt(r.effect_size, 2)} {_interval(r.effect_ci_low, r.effect_ci_high, 2)}",
            "p": _p(r.p_value),
            "BH-adjusted p (tests)": f"{_p(r.p_adjusted)} ({r.family_size})",
            f"differs (rule `{rule.id}`: adjusted p < {rule.value:g}, seeds >= {rule.min_seeds})": r.difference_verdict,
            equivalence_head(equivalence, margin): _tost_verdict(r),
        })  # fmt: skip
    return _table(pd.DataFrame(rows))


def equivalence_head(rule: Rule | None, margin: float | None) -> str:
    """The TOST column's head: the rule, its margin (or the one ``--margin`` set instead) and its seeds."""
    if rule is None:
        return "equivalence (TOST)"
    stated = _pp(float(rule.value))
    used = (
        stated
        if margin is None or margin == rule.value
        else f"{_pp(margin)} set by --margin, not the rule's {stated}"
    )
    return f"equivalence (TOST; rule `{rule.id}`: margin {used}, seeds >= {rule.min_seeds})"


def _pp(fraction: float) -> str:
    """A margin as a fraction in percentage points: 0.005 -> '±0.5 pp'."""
    return f"±{100 * fraction:g} pp"


def degenerate_table(comparisons: pd.DataFrame) -> str:
    """Pairs that cannot differ in the sense a test asks (a constant against a sample): reported apart."""
    apart = comparisons[comparisons.degenerate != ""] if len(comparisons) else comparisons
    if apart.empty:
        return ""
    rows = []
    for r in apart.itertuples(index=False):
        rows.append({
            "endpoint": r.endpoint, "A": r.init_a, "B": r.init_b, "why apart": r.degenerate,
            "A − B [95% CI]": _difference(r),
            "p (outside any correction)": _p(r.p_value),
        })  # fmt: skip
    return _table(pd.DataFrame(rows))


def power_table(comparisons: pd.DataFrame, endpoint: str) -> str:
    rows = (
        comparisons[(comparisons.endpoint == endpoint) & (comparisons.degenerate == "")]
        if len(comparisons)
        else comparisons
    )
    if rows.empty:
        return ""
    table = pd.DataFrame([{
        "A": r.init_a, "B": r.init_b, "design": r.design,
        "sd (of the per-seed differences when paired)": f"{r.sd * 100:.3f} pp",
        "minimum detectable difference": f"{r.mde * 100:.2f} pp",
        "seeds for 0.1 pp": _fmt(r.seeds_for_0_1pp, 0),
        "seeds for 0.2 pp": _fmt(r.seeds_for_0_2pp, 0),
        "seeds for 0.5 pp": _fmt(r.seeds_for_0_5pp, 0),
    } for r in rows.itertuples(index=False)])  # fmt: skip
    return _table(table)


def _scale(row: Any) -> tuple[float, int]:
    """Accuracy differences in percentage points (2 decimals), step counts whole, other endpoints in their
    own units (see :func:`_signed`)."""
    if isinstance(row.margin, float) and not math.isnan(row.margin):
        return 100.0, 2
    if row.endpoint.startswith("step"):
        return 1.0, 0
    return 1.0, -1


def _signed(value: float, digits: int) -> str:
    """A signed number: ``digits`` decimals, or 3 significant digits when ``digits`` is -1 (losses)."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.3g}" if digits < 0 else f"{value:+.{digits}f}"


def _difference(row: Any) -> str:
    scale, digits = _scale(row)
    unit = " pp" if scale != 1 else ""
    low, high = row.diff_ci_low * scale, row.diff_ci_high * scale
    return f"{_signed(row.diff_mean * scale, digits)} [{_signed(low, digits)}, {_signed(high, digits)}]{unit}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def statements(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    runs: pd.DataFrame,
    split_name: str,
    margin: float,
    rule: Rule,
) -> list[str]:
    """Short claims, each computed from this sweep's numbers."""
    out: list[str] = []
    done = runs[runs.status == "complete"]
    for row in summary.itertuples(index=False):
        group = done[done.init == row.init]
        if len(group) == 0:
            out.append(f"`{row.init}`: no complete run ({row.n_failed} failed or incomplete).")
            continue
        distinct = group.get("distinct_hidden_units")
        if distinct is not None and all(isinstance(d, list) and all(u == 1 for u in d) for d in distinct):
            units = group.iloc[0].get("hidden_units")
            out.append(
                f"`{row.init}` never breaks symmetry: in all {len(group)} runs, every unit of each hidden layer "
                f"(sizes {units}) ends training with the same weights (1 distinct weight row per layer)."
            )
        constant = group.get("test/distinct_predictions")
        if constant is not None and (constant == 1).all():
            share = float(group["test/majority_class_share"].iloc[0])
            classes = sorted(set(int(c) for c in group["test/majority_class"]))
            matches = (group["test/acc"].astype(float).round(6) == round(share, 6)).sum()
            out.append(
                f"`{row.init}` predicts one class for every test image in all {len(group)} runs; in {matches} of them "
                f"the accuracy equals the share of the most frequent test class ({classes}, {share:.4f})."
            )
        reference = SEED_NOTEBOOK.get(row.init)
        if reference is not None and not math.isnan(row.acc_pi95_low):
            out.append(
                f"`{row.init}`: the seed notebook's single run ({reference:.4f}) lies {notebook_verdict(row)} the 95% "
                f"prediction interval for one new run of this study {_interval(row.acc_pi95_low, row.acc_pi95_high)} "
                f"(mean {row.acc_mean:.4f}; notebook − mean = {reference - row.acc_mean:+.4f})."
            )
        if row.n_diverged:
            steps = group[group.get("diverged", False) == True].get("diverged_at_step")  # noqa: E712
            out.append(
                f"`{row.init}`: {row.n_diverged} run(s) diverged (loss NaN/inf) at step(s) {list(steps)}."
            )
    out += accuracy_statements(comparisons, margin, rule)
    out += convergence_statements(summary, comparisons, split_name, rule)
    return out


def difference_sentence(subject: str, rows: pd.DataFrame, tally: Tally, detail: str) -> str:
    """How many of the tested ``rows`` differ by the claims file's rule, with the rule, the seeds behind it and
    the trivial baseline's score; "not testable at this budget" when no pair has the seeds the rule needs."""
    if tally.judged == 0:
        return (f"{subject}: whether the {len(rows)} pairs of trained initializers differ is {NOT_TESTABLE} "
                f"({detail}{tally.rule_text()}).")  # fmt: skip
    untestable = f" ({tally.not_testable} more {NOT_TESTABLE})" if tally.not_testable else ""
    return (f"{subject}: {tally.shown} of {tally.judged} pairs of trained initializers differ significantly"
            f"{untestable} ({detail}{tally.rule_text()}).")  # fmt: skip


def accuracy_statements(comparisons: pd.DataFrame, margin: float, rule: Rule) -> list[str]:
    """Final test accuracy: which trained pairs differ (by ``rule``, conf/experiment/claims/study.yaml), which
    are shown equivalent, and what n could detect."""
    if comparisons.empty:
        return []
    acc = comparisons[comparisons.endpoint == ACCURACY_ENDPOINT]
    tested = acc[acc.degenerate == ""]
    apart = acc[acc.degenerate != ""]
    out = []
    if len(apart):
        out.append(
            f"{len(apart)} pair(s) set a constant against a sample ({', '.join(f'`{r.init_a}` vs `{r.init_b}`' for r in apart.itertuples())}): "
            "reported apart, outside the multiple-comparison family (a constant cannot be in doubt); on the other "
            "endpoints, whose values vary a little with the seed, the pairs with an initializer that did not train "
            "are set apart likewise."
        )
    if len(tested):
        detail = f"paired by seed, Benjamini-Hochberg over these {len(tested)} tests; "
        out.append(difference_sentence("Final test accuracy", tested, difference_tally(tested, rule), detail))
        for r in tested.itertuples(index=False):
            n = r.n_pairs if r.design == "paired" else min(r.n_a, r.n_b)
            low, high = sd_interval_factors(int(n)) if n > 1 else (math.nan, math.nan)
            out.append(
                f"`{r.init_a}` vs `{r.init_b}`: {r.diff_mean * 100:+.2f} pp [{r.diff_ci_low * 100:+.2f}, "
                f"{r.diff_ci_high * 100:+.2f}], adjusted p = {_p(r.p_adjusted)} ({r.difference_verdict}); "
                f"{_tost_words(r)}; "
                f"with n = {n} the smallest difference detectable with 80% power is {r.mde * 100:.2f} pp (from the "
                f"sd of {n} seeds, whose 95% interval runs from x{low:.2f} to x{high:.2f} of it), and 0.1 / 0.2 / "
                f"0.5 pp would need {_fmt(r.seeds_for_0_1pp, 0)} / {_fmt(r.seeds_for_0_2pp, 0)} / "
                f"{_fmt(r.seeds_for_0_5pp, 0)} seeds; seeds only: the test images' noise is in the bootstrap below."
            )
    return out


def _tost_verdict(row: Any) -> str:
    """The comparisons table's equivalence cell: '–' without a margin, else the verdict of the seeds-only
    equivalence rule (initstudy.report.study_rules.judge_seeds_equivalence: not testable with too few seeds)."""
    if not isinstance(row.margin, float) or math.isnan(row.margin):
        return "–"
    return str(row.verdict)


def _tost_words(row: Any) -> str:
    """The seeds-only equivalence test's verdict, as judged by its rule, with its TOST p."""
    return f"{row.verdict} (TOST p = {_p(row.tost_p)})"


def convergence_statements(
    summary: pd.DataFrame, comparisons: pd.DataFrame, split_name: str, rule: Rule
) -> list[str]:
    out = []
    trained = summary[summary.reached_97 > 0]
    if len(trained):
        order = trained.sort_values(["steps_to_97_km_median", "steps_to_97_rmst"], na_position="last")
        out.append(
            f"Steps to 97% {split_name} accuracy (Kaplan-Meier median, interpolated between passes): "
            + "; ".join(f"`{r.init}` {km_cell(r, '97')}" for r in order.itertuples(index=False))
            + "."
        )
    for row in summary[(summary.reached_97 == 0) & (summary.n_complete > 0)].itertuples(index=False):
        out.append(
            f"`{row.init}` never reached 97% {split_name} accuracy in any of its {row.n_complete} runs."
        )
    past = summary[
        (summary.reached_95 > 0)  # initializers that train: a flat loss has no best step to be past
        & summary.val_loss_min_step_median.notna()
        & (summary.val_loss_min_step_median < summary.horizon_steps)
        & (summary.val_loss_final_mean > summary.val_loss_min_mean)
    ]
    if len(past):
        out.append(
            f"The endpoint is past the best {split_name} loss: "
            + "; ".join(
                f"`{r.init}` reaches its lowest {split_name} loss ({r.val_loss_min_mean:.4f}) at step "
                f"{r.val_loss_min_step_median:.0f} (median) and ends at {r.val_loss_final_mean:.4f} after "
                f"{r.horizon_steps:.0f} steps"
                for r in past.itertuples(index=False)
            )
            + ". Final accuracy is a fixed-budget endpoint, not the best model a validation-driven stop would keep."
        )
    if not comparisons.empty:
        others = comparisons[(comparisons.endpoint != ACCURACY_ENDPOINT) & (comparisons.degenerate == "")]
        for endpoint, rows in others.groupby("endpoint", sort=False):
            differing = rows[rows.difference_verdict == DIFFERS]
            listed = "".join(
                f"`{r.init_a}` − `{r.init_b}` = {_difference(r)}, adjusted p = {_p(r.p_adjusted)}; "
                for r in differing.itertuples(index=False)
            )
            subject = endpoint[0].upper() + endpoint[1:]
            out.append(difference_sentence(subject, rows, difference_tally(rows, rule), listed))
    return out


ACCURACY_ENDPOINT = "test accuracy (once, after training)"
SPEED_KEY = "97"  # the threshold whose time the permutation test compares
SPEED_NOTE = (
    "Paired by seed: within each seed the two initializers' times are exchangeable under the null hypothesis, "
    "so the p-value is exact over all 2^n swaps (sign flips of the per-seed differences), and n seeds cannot "
    "give a p below 2 / 2^n (the table's smallest possible p). A run that never reached the threshold enters "
    "at the step it stopped (its time is longer), a crossing inside the first evaluation interval at that "
    "pass's step (its time is shorter); both counts are in the table."
)


BOOTSTRAP_NOTE = (
    "Both sources of noise: {replicates:,} replicates of a hierarchical bootstrap (generator seed {seed}) that "
    "draws the seeds with replacement (the same seeds for both initializers where they share them, so a seed's "
    "two runs stay a pair) and then the test images with replacement (the same images for every run of a "
    "replicate, so two runs are compared image by image). Interval: the 95% percentile interval of the "
    "difference; p: twice the smaller share of replicates on either side of 0. Equivalent at a margin: the 90% "
    "interval inside ±margin, by the rules of conf/experiment/claims/study.yaml, written before the runs were read "
    "(each printed with its count above, beside the trivial baseline's); fewer seeds than a rule needs read "
    "'not testable at this budget'. "
    "Disagreeing images: on how many test images the "
    "two runs of a seed differ in being right (mean over the shared seeds)."
)


def accuracy_table(accuracy: pd.DataFrame) -> str:
    """The bootstrap over seeds and test images: difference, interval and equivalence at every margin."""
    table = pd.DataFrame(
        [
            {
                "pair (a − b)": f"`{r.init_a}` − `{r.init_b}`",
                "seeds": f"{r.n_seeds} ({r.design})",
                "difference (pp)": _signed(100 * r.difference, 2),
                "95% interval (pp)": f"[{_signed(100 * r.ci95_low, 2)}, {_signed(100 * r.ci95_high, 2)}]",
                "p": _p(r.p),
                "disagreeing images per seed": _fmt(r.disagreeing_images, 1),
                **{
                    f"within ±{int(key) / 10:.1f} pp (rule: seeds >= {getattr(r, f'min_seeds_{key}')})": getattr(
                        r, f"verdict_{key}"
                    )
                    for key in margin_keys(accuracy)
                },
            }
            for r in accuracy.itertuples(index=False)
        ]
    )
    return _table(table)


def speed_statements(speed: pd.DataFrame | None, split_name: str) -> list[str]:
    """Each pair's time to SPEED_KEY% in words, slower first: how many times the steps, the difference in
    steps per seed, and the exact permutation p beside it."""
    if speed is None:
        return []
    out = []
    for r in speed.itertuples(index=False):
        tested = (f"exact permutation test paired by seed, p = {_p(r.p)}, {r.n_seeds} seeds; log-rank test "
                  f"stratified by seed, p = {_p(r.logrank_p)}")  # fmt: skip
        if r.difference == 0:
            out.append(f"`{r.init_a}` and `{r.init_b}` take the same mean steps to {SPEED_KEY}% ({tested}).")
            continue
        slow, fast = (r.init_a, r.init_b) if r.difference > 0 else (r.init_b, r.init_a)
        ratio = r.ratio if r.difference > 0 else 1 / r.ratio
        out.append(
            f"`{slow}` needs {ratio:.2f} times the steps of `{fast}` to reach {SPEED_KEY}% {split_name} accuracy "
            f"({abs(r.difference):.0f} more steps per seed on average; {tested}; the smallest p the permutation "
            f"test can give with {r.n_seeds} seeds is {_p(2 / 2**r.n_seeds)})."
        )
    return out


def optional_section(title: str, frame: pd.DataFrame | None, table: Any, note: str | None) -> list[str]:
    """A report section of one table (and its note), or nothing when ``frame`` is missing or empty."""
    if frame is None or not len(frame):
        return []
    return [title, "", table(frame), "", *([note, ""] if note else [])]


def margin_keys(accuracy: pd.DataFrame) -> list[str]:
    """The margins the claims file judged (``verdict_<tenths of a pp>`` columns), narrowest first."""
    return sorted((c.removeprefix("verdict_") for c in accuracy.columns if c.startswith("verdict_")), key=int)


def bootstrap_statements(accuracy: pd.DataFrame | None, rules: list[Rule] | None = None) -> list[str]:
    """Each pair's final test accuracy with both sources of noise (seeds and test images), and whether it is
    shown equivalent at every margin: the accuracy verdicts (the seeds-only test above sees the networks'
    noise only). With the claims file's equivalence ``rules``, each margin's count too, beside the rule, the
    seeds and the trivial baseline's score on the same pairs."""
    if accuracy is None or accuracy.empty:
        return []
    out = [equivalence_sentence(t) for t in equivalence_tallies(accuracy, rules or [])]
    for r in accuracy.itertuples(index=False):
        margins = "; ".join(
            f"{getattr(r, f'verdict_{key}')} within ±{int(key) / 10:.1f} pp" for key in margin_keys(accuracy)
        )
        out.append(
            f"`{r.init_a}` vs `{r.init_b}`, seeds and test images resampled: {100 * r.difference:+.2f} pp, 95% "
            f"interval [{100 * r.ci95_low:+.2f}, {100 * r.ci95_high:+.2f}]; {margins} (90% interval "
            f"[{100 * r.ci90_low:+.2f}, {100 * r.ci90_high:+.2f}], {r.n_seeds} seeds)."
        )
    return out


def equivalence_sentence(tally: Tally) -> str:
    """One margin's equivalence verdicts over the pairs, with the rule, its seeds and the baseline's score."""
    margin = f"±{int(margin_key(float(tally.rule.value))) / 10:.1f} pp"
    if tally.judged == 0:
        return f"Final test accuracy within {margin}, seeds and test images: {NOT_TESTABLE} ({tally.rule_text()})."
    untestable = f" ({tally.not_testable} more {NOT_TESTABLE})" if tally.not_testable else ""
    return (f"Final test accuracy within {margin}, seeds and test images: {tally.shown} of {tally.judged} pairs "
            f"shown equivalent{untestable} ({tally.rule_text()}).")  # fmt: skip


def sd_interval_factors(n: int, level: float = 0.95) -> tuple[float, float]:
    """How far the true sd may lie from one estimated on ``n`` runs: the ``level`` chi-square interval of
    sigma as multiples of the sample sd (normal data). With 5 seeds, x0.60 to x2.87: a minimum detectable
    difference computed from that sd is uncertain by as much."""
    from scipy.stats import chi2

    df = n - 1
    return math.sqrt(df / chi2.ppf((1 + level) / 2, df)), math.sqrt(df / chi2.ppf((1 - level) / 2, df))


def speed_table(speed: pd.DataFrame) -> str:
    """The permutation test of time to a threshold: effect in steps and as a ratio, beside the seeds."""
    table = pd.DataFrame(
        [
            {
                "pair (a − b)": f"`{r.init_a}` − `{r.init_b}`",
                "seeds": r.n_seeds,
                "mean steps a / b": f"{r.steps_a:.0f} / {r.steps_b:.0f}",
                "difference (steps)": f"{r.difference:+.0f}",
                "ratio a / b": f"{r.ratio:.2f}",
                "permutation p (exact)": _p(r.p),
                "smallest possible p": _p(2 / 2**r.n_seeds),
                "stratified log-rank p": _p(r.logrank_p),
                "not reached / in first interval": f"{r.not_reached} / {r.in_first_interval}",
            }
            for r in speed.itertuples(index=False)
        ]
    )
    return _table(table)


SEED_NOTEBOOK_NOTE = (
    "The seed notebook column is the Keras notebook's single run per initializer: another framework "
    "(Keras/TensorFlow), another seed (42), and the notebook's protocol (trained on all 60,000 training images, "
    "test set evaluated after every epoch; its final-epoch number is the one shown). A single run is judged "
    "against the prediction interval for one new run (mean ± t·s·sqrt(1 + 1/n)), not against the confidence "
    "interval of the mean. Its 0.1135 for zeros is the share of the digit 1 among the 10,000 test images: a "
    "constant prediction."
)
KM_NOTE = (
    "Time to a threshold is interpolated between evaluation passes and right-censored: a run that never "
    "reaches it counts as censored at its last step (a diverged run at the planned horizon), never dropped. "
    "A crossing inside the first evaluation interval (between step 0 and the first pass after it) is not "
    "interpolated, since the line from step 0's chance accuracy would put it just below the first pass whatever "
    "the run did: it counts as reached by the first pass, and a median or restricted mean resting on such runs "
    "is printed as ≤ that step (an upper bound; `summary.csv`: `steps_to_*_upper_bound`, "
    "`steps_to_*_in_first_interval`). "
    "Kaplan-Meier median with a distribution-free interval for it: between the r-th smallest and r-th largest "
    "time, the narrowest whose exact coverage, P(r <= B <= n - r) for B ~ Binomial(n, 1/2), reaches 95%; with "
    "too few runs for that (n = 5: none can), [min, max] and the coverage it has, 1 - 2 * 0.5^n. The coverage "
    "is printed in every cell (– when fewer than half of the runs got there, or when the interval is open); "
    "restricted mean = the mean steps to the threshold with every run capped at the horizon."
)
TESTS_NOTE = (
    "Paired t-test on the per-seed differences (Welch's t-test where fewer than two seeds pair up); effect size "
    "d_z (paired) or Hedges' g (Welch) with a noncentral-t 95% CI; Benjamini-Hochberg correction per endpoint over "
    "the trained pairs. Equivalence: two one-sided tests (TOST) at the margin stated in the column, for accuracy "
    "endpoints only (a margin needs the endpoint's units to mean something to a reader)."
)


@dataclass
class Section:
    """One group's results: the whole sweep when nothing but init and seed varies (group '')."""

    group: str
    runs: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame  # adjusted per endpoint over every test of the sweep
    figures: dict[str, str]  # caption: path relative to report.md
    difference: (
        Rule  # "two initializers differ" (conf/experiment/claims/study.yaml): its value is the tests' alpha
    )
    split_name: str = "validation"
    margin: float | None = None  # the seeds-only TOST's margin: the rule's value unless --margin set another
    speed: pd.DataFrame | None = None  # time to SPEED_KEY% paired by seed (initstudy.report.speed_test)
    accuracy: pd.DataFrame | None = (
        None  # seeds and test images bootstrapped (initstudy.report.image_bootstrap)
    )
    equivalence: list[Rule] = field(default_factory=list)  # the accuracy margins' rules (the claims file)
    seeds_equivalence: Rule | None = None  # the seeds-only TOST's rule (the claims file)


def results(section: Section, level: str, notes: bool) -> list[str]:
    """Tables, statements, comparisons and power of one section, headed at ``level`` ('##' or '###')."""
    split = section.split_name
    apart = degenerate_table(section.comparisons)
    power = power_table(section.comparisons, ACCURACY_ENDPOINT)
    return [
        f"{level} Final test accuracy per initializer (evaluated once)",
        "",
        summary_table(section.summary),
        "",
        *([SEED_NOTEBOOK_NOTE, ""] if notes else []),
        f"{level} Convergence ({split} split)",
        "",
        convergence_table(section.summary, split),
        "",
        *([KM_NOTE, ""] if notes else []),
        *optional_section(
            f"{level} Steps to {SPEED_KEY}% {split} accuracy, paired by seed (exact permutation and stratified "
            "log-rank tests)",
            section.speed,
            speed_table,
            SPEED_NOTE if notes else None,
        ),
        f"{level} What the data support",
        "",
        *[
            f"- {statement}"
            for statement in statements(
                section.summary, section.comparisons, section.runs, split, section.margin, section.difference
            )
        ],
        *[f"- {statement}" for statement in bootstrap_statements(section.accuracy, section.equivalence)],
        *[f"- {statement}" for statement in speed_statements(section.speed, split)],
        "",
        f"{level} Pairwise comparisons",
        "",
        comparisons_table(section.comparisons, section.difference, section.seeds_equivalence, section.margin),
        "",
        *([TESTS_NOTE, ""] if notes else []),
        *optional_section(
            f"{level} Final test accuracy, seeds and test images (hierarchical bootstrap)",
            section.accuracy,
            accuracy_table,
            BOOTSTRAP_NOTE.format(replicates=REPLICATES, seed=SEED) if notes else None,
        ),
        *(
            [
                f"{level} Pairs reported apart (a constant, or an initializer that did not train)",
                "",
                apart,
                "",
            ]
            if apart
            else []
        ),
        *(
            [
                f"{level} Power (final test accuracy)",
                "",
                f"Two-sided α={section.difference.value:g} (rule `{section.difference.id}` of "
                "conf/experiment/claims/study.yaml), 80% power, at each pair's number of seeds and measured spread.",
                "",
                power,
                "",
            ]
            if power
            else []
        ),
    ]


def figure_lines(section: Section, level: str) -> list[str]:
    """The section's figures with their captions (last in a section, after the diagnostics if ungrouped)."""
    return [
        f"{level} Figures",
        "",
        *[f"![{caption}]({path})\n\n{caption}.\n" for caption, path in section.figures.items()],
    ]


def groups_overview(sections: list[Section]) -> list[str]:
    """Which keys varied besides init and seed, and how the grouped report tests: said once, up front."""
    keys = [parse_group(section.group) for section in sections]
    varied = {key: sorted({k[key] for k in keys if key in k}) for key in sorted(set().union(*keys))}
    n_tests = sum(
        int(((s.comparisons.degenerate == "") & (s.comparisons.endpoint == ACCURACY_ENDPOINT)).sum())
        for s in sections
        if not s.comparisons.empty
    )
    return [
        "## Groups",
        "",
        "Besides the initializer and the seed, this sweep varied "
        + ", ".join(f"`{key}` ({', '.join(values)})" for key, values in varied.items())
        + f": {len(sections)} groups, each reported in a section of its own below (sorted by name). The setup above "
        "shows the first run's values of these keys.",
        "",
        "Initializers are compared only within a group (paired by seed). "
        "The Benjamini-Hochberg correction runs per endpoint over all of the sweep's tests of that endpoint at once "
        f"(for final test accuracy: over all {n_tests} tests of the sweep), not per group: "
        "the report reads them together, so it bounds the expected share of false discoveries among all of its "
        "significant differences, whichever group they are in (a per-group correction would bound it only within "
        "each group).",
        "",
        SEED_NOTEBOOK_NOTE,
        "",
    ]


def render(
    config: dict[str, Any], runs: pd.DataFrame, sections: list[Section], extra: list[str] | None = None
) -> str:
    """The whole report.md: one results section for an ungrouped sweep, one per group otherwise."""
    failed = runs[runs.status != "complete"]
    grouped = len(sections) > 1
    lines = [
        "# Weight initialization on MNIST: report",
        "",
        "Generated by `python -m initstudy.report` (DVC stage `report`) from the run folders listed in "
        "`runs/manifest.csv`. Do not edit by hand: `dvc repro` rewrites it.",
        "",
        setup_section(config, runs),
        "",
    ]
    if grouped:
        lines += groups_overview(sections)
        for section in sections:
            title = ", ".join(f"`{k}={v}`" for k, v in parse_group(section.group).items())
            lines += [f"## Group {title}", "", *results(section, "###", False), *figure_lines(section, "###")]
        lines += extra or []
    else:
        lines += [*results(sections[0], "##", True), *(extra or []), *figure_lines(sections[0], "##")]
    if len(failed):
        lines += [
            "## Runs that did not complete",
            "",
            _table(failed[[*(["group"] if grouped else []), "init", "seed", "status", "run_dir"]]),
            "",
        ]
    return "\n".join(lines) + "\n"

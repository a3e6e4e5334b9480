"""The tuned comparison (conf/experiment/lr_grid.yaml, tuned.yaml): initializer and learning rate untangled.

Every arm of the default study trains at Adam lr 1e-3, so an initializer that looks better may only be better
suited to that rate. Each trained initializer's rate is chosen on validation accuracy over a grid of rates
(initstudy.report.choose_lr, three seeds per rate); 20 fresh seeds then train each initializer at its chosen
rate and at the fixed 1e-3. The pairs of initializers are compared in both arms exactly as the default study
compares them (initstudy.report.image_bootstrap: seeds and test images resampled, paired by seed and image;
initstudy.report.study_rules: equivalent at a margin when the 90 % interval lies inside it), and the claims file
(conf/experiment/claims/tuned.yaml) decides whether the fixed-protocol conclusions survive tuning.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from initstudy.core.style import colour_map
from initstudy.report.choose_lr import choose, chosen_rates, grid_table, rate_text, run_lr
from initstudy.report.figures import save
from initstudy.report.image_bootstrap import compare_accuracy
from initstudy.report.load import SweepRuns, load_sweep, parse_group
from initstudy.report.papers.claims import AGREES, PARTS, Claim, PaperReport, complete
from initstudy.report.papers.rules import Rule, judged, stated_values
from initstudy.report.study_rules import judge_accuracy, margin_key
from initstudy.report.tables import markdown_table
from initstudy.runs.results import RunFileError

NAME = "tuned"
ARM_KEY = "tuned_arm"  # the sweep's group: conf/tuned_arm/<init>_{chosen,fixed}.yaml
TUNED, FIXED = "chosen", "fixed"
ARMS = {TUNED: "tuned (validation-chosen rate)", FIXED: "fixed rate 1e-3"}
SURVIVE, RATES_DIFFER = "fixed_conclusions_survive", "chosen_rates_differ"
UP, DOWN, NO_ORDER = "a > b", "a < b", "no order shown"


def rules(root: Path | None = None) -> dict[str, Rule]:
    """The claims file's two rules, each present with the number its words state: checked before any run is
    read (the margin a fraction below 1, the fixed rate a positive number)."""
    return stated_values(NAME, (SURVIVE, RATES_DIFFER), root, below=1)


def arm_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The complete runs with their arm (from the run folder's ``tuned_arm`` level, ``<init>_<arm>``) and
    learning rate (their config), sorted by arm, initializer (the sweep's order) and seed. A run whose option
    names another initializer than it trained, or an arm of neither kind, is refused in one line."""
    done = complete(runs).reset_index(drop=True)
    arms = []
    for group, init, run_dir in zip(done.group, done.init, done.run_dir, strict=True):
        option = parse_group(group).get(ARM_KEY, "")
        named, _, arm = option.rpartition("_")
        if arm not in ARMS or named != init:
            raise RunFileError(
                f"{run_dir}: {ARM_KEY} {option!r} is not {init}_{TUNED} or {init}_{FIXED}: is this runs_tuned?"
            )
        arms.append(arm)
    table = done.assign(arm=arms, lr=[run_lr(Path(d)) for d in done.run_dir],
                        seed=done.seed.astype(int), acc=done["test/acc"].astype(float))  # fmt: skip
    # arms in ARMS' order, initializers in the sweep's (the manifest's first appearance), seeds ascending
    order = {
        **{arm: i for i, arm in enumerate(ARMS)},
        **{init: i for i, init in enumerate(dict.fromkeys(table.init))},
    }
    return table.sort_values(["arm", "init", "seed"], key=lambda c: c.map(order) if c.name != "seed" else c,
                             kind="stable").reset_index(drop=True)  # fmt: skip


def check_rates(table: pd.DataFrame, rates: dict[str, float], fixed: float) -> None:
    """Every tuned run trained at its initializer's rate as the grid chooses it now, every fixed run at the
    fixed rate (the claims file's, rule chosen_rates_differ): a tuned sweep left from an earlier choice is
    refused in one line, never reported as tuned."""
    for row in table.itertuples(index=False):
        want = rates.get(row.init) if row.arm == TUNED else fixed
        if want is None:
            raise RunFileError(f"{row.run_dir}: the grid has no runs of {row.init!r}")
        if not math.isclose(row.lr, want, rel_tol=1e-9):
            raise RunFileError(
                f"{row.run_dir} trained at lr {rate_text(row.lr)} but its arm's rate is {rate_text(want)} "
                "(dvc repro choose_lr train_tuned)"
            )


def short_rate(lr: float) -> str:
    """A rate of one significant digit as the report's prose and figures write it: 0.001 -> 1e-3."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def direction(low: float, high: float) -> str:
    """The order a 95 % interval of a - b shows: a > b wholly above zero, a < b wholly below, else none."""
    if low > 0:
        return UP
    if high < 0:
        return DOWN
    return NO_ORDER


def compare_arms(table: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Per arm, every pair of initializers paired by seed: the bootstrap of the default study (same generator
    seed in both arms), its equivalence verdict at the rule's margin and its direction."""
    key = margin_key(float(rule.value))
    parts = []
    for arm in ARMS:
        mine = table[table.arm == arm][["init", "seed", "run_dir"]]
        if mine.empty:
            continue
        judged_pairs = judge_accuracy(compare_accuracy(mine), [rule])
        parts.append(judged_pairs.assign(arm=arm, verdict=judged_pairs[f"verdict_{key}"],
                                         direction=[direction(r.ci95_low, r.ci95_high)
                                                    for r in judged_pairs.itertuples(index=False)]))  # fmt: skip
    columns = ["arm", "init_a", "init_b", "n_seeds", "difference", "ci95_low", "ci95_high", "ci90_low",
               "ci90_high", "p", "verdict", "direction"]  # fmt: skip
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def tuning_gain(table: pd.DataFrame) -> pd.DataFrame:
    """Per initializer, its tuned arm minus its fixed arm in test accuracy, paired by seed, by the same bootstrap
    (the arms as the two sides of one pair): what the fixed rate costs each initializer."""
    columns = ["init", "lr", "n_seeds", "difference", "ci95_low", "ci95_high", "p"]
    rows = []
    for init in dict.fromkeys(table.init):
        mine = table[table.init == init]
        sides = mine.assign(init=mine.arm)[["init", "seed", "run_dir"]]
        found = compare_accuracy(sides)
        if found.empty:
            continue
        r = found.iloc[0]  # chosen - fixed: ARMS' order
        lr = float(mine[mine.arm == TUNED].lr.iloc[0])
        rows.append({"init": init, "lr": lr, "n_seeds": int(r.n_seeds), "difference": float(r.difference),
                     "ci95_low": float(r.ci95_low), "ci95_high": float(r.ci95_high), "p": float(r.p)})  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def survival(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of initializers: its verdict and direction in each arm and whether both are the same."""
    fixed = pairs[pairs.arm == FIXED].set_index(["init_a", "init_b"])
    tuned = pairs[pairs.arm == TUNED].set_index(["init_a", "init_b"])
    rows = []
    for key in fixed.index:
        if key not in tuned.index:
            continue
        f, t = fixed.loc[key], tuned.loc[key]
        rows.append({"pair": f"{key[0]} - {key[1]}", "fixed_verdict": f.verdict, "tuned_verdict": t.verdict,
                     "fixed_direction": f.direction, "tuned_direction": t.direction,
                     "same": bool(f.verdict == t.verdict and f.direction == t.direction),
                     "n_seeds": int(min(f.n_seeds, t.n_seeds))})  # fmt: skip
    return pd.DataFrame(rows, columns=["pair", "fixed_verdict", "tuned_verdict", "fixed_direction",
                                       "tuned_direction", "same", "n_seeds"])  # fmt: skip


def survive_claim(kept: pd.DataFrame, rule: Rule, seeds_note: str = "") -> Claim:
    """Agrees when every pair keeps its verdict and direction; the seeds: the fewest shared by any pair."""
    seeds = int(kept.n_seeds.min()) if len(kept) else 0
    outcome = None if kept.empty else (AGREES if bool(kept.same.all()) else PARTS)
    changed = [r.pair for r in kept.itertuples(index=False) if not r.same]
    ours = (f"{int(kept.same.sum())} of {len(kept)} pairs keep their verdict at ±{100 * float(rule.value):g} pp "
            f"and their direction" + (f"; changed: {', '.join(changed)}" if changed else ""))  # fmt: skip
    return judged(rule, ours=ours, seeds=seeds, outcome=outcome, baseline=f"all {len(kept)} pairs kept",
                  seeds_note=seeds_note or "per initializer and arm, paired by seed")  # fmt: skip


def rates_claim(rates: dict[str, float], grid_seeds: int, rule: Rule) -> Claim:
    """Agrees when the grid chooses another rate than the fixed one for at least one initializer."""
    fixed = float(rule.value)
    moved = [init for init, lr in rates.items() if not math.isclose(lr, fixed, rel_tol=1e-9)]
    outcome = None if not rates else (AGREES if moved else PARTS)
    ours = "; ".join(f"{init} {rate_text(lr)}" for init, lr in rates.items())
    ours += f" ({len(moved)} of {len(rates)} not {rate_text(fixed)})"
    return judged(rule, ours=ours, seeds=grid_seeds, outcome=outcome,
                  baseline=f"all {len(rates)} at {rate_text(fixed)}", seeds_note="the grid's seeds per rate")  # fmt: skip


def grid_figure(choice: pd.DataFrame, path: Path, fixed: float) -> None:
    """Final validation accuracy against the learning rate per initializer: the mean over the grid's seeds, a
    min-max band over them, the chosen rate ringed (a larger ring per initializer, so that rings at one point
    stay apart) and the fixed rate dotted."""
    inits = list(dict.fromkeys(choice.init))
    colours = colour_map(inits)
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for i, init in enumerate(inits):
        mine = choice[choice.init == init].sort_values("lr")
        ax.plot(mine.lr, mine.val_acc_mean, marker="o", ms=3, lw=1.2, color=colours[init], label=init)
        ax.fill_between(mine.lr, mine.val_acc_min, mine.val_acc_max, color=colours[init], alpha=0.2, lw=0)
        best = mine[mine.chosen.astype(bool)]
        ax.scatter(
            best.lr,
            best.val_acc_mean,
            s=60 + 50 * i,
            facecolors="none",
            edgecolors=colours[init],
            linewidths=1.5,
        )
    ax.axvline(fixed, color="grey", ls=":", lw=0.8, label=f"fixed rate {short_rate(fixed)}")
    low = float(np.nanmin(choice.val_acc_min))
    ax.set(xscale="log", xlabel="Adam learning rate", ylabel="final validation accuracy",
           ylim=(max(low - 0.01, 0.0), min(1.0, float(np.nanmax(choice.val_acc_max)) + 0.005)),
           title="Final validation accuracy against the learning rate\n(mean, min-max band over the grid's seeds; ringed: the chosen rate)")  # fmt: skip
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm and initializer: the rate, the seeds, the test accuracy's mean and sd."""
    rows = []
    for (arm, init), group in table.groupby(["arm", "init"], sort=False):
        acc = group.acc.to_numpy(dtype=float)
        rows.append({"arm": arm, "init": init, "lr": float(group.lr.iloc[0]), "n_seeds": len(acc),
                     "test_acc_mean": float(acc.mean()),
                     "test_acc_sd": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan})  # fmt: skip
    return pd.DataFrame(rows)


def pair_rows(pairs: pd.DataFrame, arm: str) -> pd.DataFrame:
    """One arm's pairs as the default study's report prints them (pp)."""
    mine = pairs[pairs.arm == arm]
    return pd.DataFrame({
        "pair": [f"{r.init_a} - {r.init_b}" for r in mine.itertuples(index=False)],
        "difference (pp)": [f"{100 * r.difference:+.2f}" for r in mine.itertuples(index=False)],
        "95% interval (pp)": [f"[{100 * r.ci95_low:+.2f}, {100 * r.ci95_high:+.2f}]" for r in mine.itertuples(index=False)],
        "90% interval (pp)": [f"[{100 * r.ci90_low:+.2f}, {100 * r.ci90_high:+.2f}]" for r in mine.itertuples(index=False)],
        "within the margin": list(mine.verdict), "direction": list(mine.direction),
        "seeds": list(mine.n_seeds),
    })  # fmt: skip


def _count(value: object) -> str:
    """An image count as the docs write it (10,000); anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Every run as the report reads it: arm, initializer, seed, rate, final validation and test accuracy."""
    return pd.DataFrame({"arm": table.arm, "init": table.init, "seed": table.seed, "lr": table.lr,
                         "val_acc": table["val/acc"].astype(float), "test_acc": table.acc})  # fmt: skip


def conclusion(kept: pd.DataFrame, verdict: str) -> str:
    """What the survival verdict says, in words fixed here before the runs were read."""
    if verdict == AGREES:
        return ("**The fixed-protocol conclusions survive tuning**: at each initializer's validation-chosen rate "
                "every pair keeps its equivalence verdict and its direction.")  # fmt: skip
    if verdict == PARTS:
        changed = ", ".join(r.pair for r in kept.itertuples(index=False) if not r.same)
        return (f"**The fixed-protocol conclusions do not all survive tuning**: {changed} get(s) another "
                "verdict or direction once each initializer trains at its own rate, so that conclusion holds for "
                "the fixed rate 1e-3, not for the initializers as such.")  # fmt: skip
    return f"**Whether the fixed-protocol conclusions survive is {verdict}** (see the table above)."


def report(
    sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None, grid: Path | None = None
) -> PaperReport:
    found = rules()
    if grid is None:
        raise RunFileError("the tuned report needs the learning-rate grid: --grid runs_lr_grid")
    choice = choose(grid_table(load_sweep(grid).runs))
    rates = chosen_rates(choice)
    table = arm_runs(sweep.runs)
    fixed = float(found[RATES_DIFFER].value)
    check_rates(table, rates, fixed)
    survive_rule = found[SURVIVE]
    pairs = compare_arms(table, survive_rule)
    kept = survival(pairs)
    grid_seeds = int(choice.n_seeds.min())
    seeds = {arm: " ".join(str(s) for s in sorted(table[table.arm == arm].seed.unique())) for arm in ARMS}
    note = f"seeds {seeds[TUNED]} per initializer and arm, paired by seed"
    claims = [survive_claim(kept, survive_rule, note), rates_claim(rates, grid_seeds, found[RATES_DIFFER])]
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    grid_figure(choice, figures_dir / "val_acc_by_lr.png", fixed)
    summary = summary_table(table)
    gain = tuning_gain(table)
    config = sweep.config
    data = config.get("data", {})
    grid_rates = ", ".join(rate_text(lr) for lr in sorted(choice.lr.unique()))
    setup = [
        "Every arm of the default study trains at Adam lr 1e-3, so an initializer that looks better there may only "
        "be better suited to that rate. Here each trained initializer's rate is chosen on validation accuracy, and "
        "the default study's pairwise comparison is made again at the chosen rates beside the fixed one "
        "(`conf/experiment/lr_grid.yaml`, `conf/experiment/tuned.yaml`; DVC stages `train_lr_grid` -> `choose_lr` "
        "-> `train_tuned` -> `report_paper@tuned`). zeros is left out: its hidden units never break symmetry, so "
        "no rate trains it.",
        "",
        f"- Cell (shrunk from the default study's 50,000 images x 10 epochs, never the seeds): "
        f"{_count(data.get('train_size'))} training images x {config.get('trainer', {}).get('max_epochs')} epochs, "
        f"batch {data.get('batch_size')}, the 784-256-128-10 ReLU MLP with Adam; validation on "
        f"{_count(data.get('val_size'))} "
        "held-out training images, the test set (10,000 images) once after training.",
        f"- Grid: rates {grid_rates} x seeds {choice.seeds.iloc[0]} per initializer; the rate with the highest final "
        "validation accuracy, mean over the seeds, is chosen (a tie: the smaller rate; `tables/lr_grid.csv`).",
        "- Chosen rates: " + ", ".join(f"{init} {rate_text(lr)}" for init, lr in rates.items()) + ".",
        f"- Tuned arm seeds: {seeds[TUNED]}; fixed arm seeds: {seeds[FIXED]} (disjoint from the grid's, so the "
        "seeds that chose a rate never judge it; paired by seed across initializers).",
        f"- Pairs compared as in the default study: the hierarchical bootstrap over seeds and test images, paired "
        f"by seed and image; equivalent within ±{100 * float(survive_rule.value):g} pp when the 90% interval lies "
        "inside it; a direction when the 95% interval excludes zero.",
    ]
    summary_md = summary.assign(
        arm=[ARMS[a] for a in summary.arm], lr=[rate_text(v) for v in summary.lr],
        test_acc=[f"{m:.4f} ± {s:.4f}" for m, s in zip(summary.test_acc_mean, summary.test_acc_sd, strict=True)],
    )[["arm", "init", "lr", "n_seeds", "test_acc"]].rename(columns={"test_acc": "test acc mean ± sd"})  # fmt: skip
    verdict = claims[0].verdict
    sections = [
        ["## Test accuracy per initializer and arm", "",
         "`tables/summary.csv` holds the table, `tables/runs.csv` every run.", "", markdown_table(summary_md)],
        ["## What the fixed rate costs each initializer", "",
         "Tuned minus fixed test accuracy per initializer, paired by seed, by the same bootstrap over seeds and test "
         "images (`tables/tuning_gain.csv`); where the chosen rate is 1e-3 the two arms are the same networks.", "",
         markdown_table(pd.DataFrame({
             "init": gain.init, "chosen lr": [rate_text(v) for v in gain.lr],
             "tuned - fixed (pp)": [f"{100 * v:+.2f}" for v in gain.difference],
             "95% interval (pp)": [f"[{100 * a:+.2f}, {100 * b:+.2f}]" for a, b in zip(gain.ci95_low, gain.ci95_high, strict=True)],
             "seeds": gain.n_seeds}))],
        ["## The pairs at the fixed rate 1e-3", "", markdown_table(pair_rows(pairs, FIXED))],
        ["## The pairs at each initializer's chosen rate", "", markdown_table(pair_rows(pairs, TUNED))],
        ["## Do the fixed-protocol conclusions survive?", "",
         "`tables/accuracy_bootstrap.csv` holds both arms' intervals.", "",
         markdown_table(kept.drop(columns="n_seeds")), "", conclusion(kept, verdict)],
    ]  # fmt: skip
    metrics = {
        "chosen_lr": rates,
        "arms": {f"{r.arm}/{r.init}": {"lr": r.lr, "n_seeds": r.n_seeds, "test_acc_mean": r.test_acc_mean}
                 for r in summary.itertuples(index=False)},
        "pairs": {f"{r.arm}/{r.init_a}-{r.init_b}": {"difference": r.difference, "ci90": [r.ci90_low, r.ci90_high],
                                                     "verdict": r.verdict, "direction": r.direction}
                  for r in pairs.itertuples(index=False)},
        "tuning_gain": {r.init: {"difference": r.difference, "ci95": [r.ci95_low, r.ci95_high]}
                        for r in gain.itertuples(index=False)},
        "verdicts": {SURVIVE: claims[0].verdict, RATES_DIFFER: claims[1].verdict},
    }  # fmt: skip
    return PaperReport(title="The tuned comparison: initializer or learning rate?", setup=setup, claims=claims,
                       metrics=metrics, sections=sections,
                       figures={"Validation accuracy against learning rate per initializer": "val_acc_by_lr.png"},
                       claims_file="conf/experiment/claims/tuned.yaml",
                       tables={"runs.csv": run_rows(table), "lr_grid.csv": choice,
                               "summary.csv": summary, "accuracy_bootstrap.csv": pairs,
                               "survival.csv": kept, "tuning_gain.csv": gain})  # fmt: skip

"""The seed notebook's single numbers against its own protocol, run with seeds (conf/experiment/notebook.yaml).

The notebook trained one Keras network per initializer and printed one test accuracy each; read as a ranking,
those four numbers say nothing about how far one more run would land. This report asks, per initializer,
whether the notebook's number is what one more run of the same protocol could give: it lies inside the 95 %
prediction interval for one new run (initstudy.report.inference.prediction_interval) of this study's seeds of
that protocol. The numbers and the rule are in conf/experiment/claims/notebook.yaml, read before any run.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from initstudy.report.figures import save
from initstudy.report.inference import CONFIDENCE, prediction_interval
from initstudy.report.load import SweepRuns
from initstudy.report.papers.claims import AGREES, PARTS, Claim, PaperReport, complete
from initstudy.report.papers.rules import ClaimsFileError, Rule, claims_path, decide, judged
from initstudy.report.papers.rules import load as load_rules
from initstudy.report.tables import markdown_table

NAME = "notebook"
# The notebook's initializers by this study's names (conf/init/), in the notebook's order; claim ids are
# notebook_<init>.
INITS = ("zeros", "random_normal", "glorot_uniform", "he_uniform")
TEST_IMAGES = 10_000
# Half the test set's resolution: an accuracy is a count out of 10,000, and the notebook printed it as a
# float32 (0.11349999904632568 is 1,135 images). The rule widens each end of the interval by this much.
HALF_STEP = 0.5 / TEST_IMAGES
CONSISTENT, INCONSISTENT = "consistent", "inconsistent"
WORDS = {AGREES: CONSISTENT, PARTS: INCONSISTENT}
COLUMNS = ("init", "notebook_acc", "notebook_acc_counted", "n_seeds", "seeds", "acc_mean", "acc_sd",
           "pi95_low", "pi95_high", "inside", "verdict", "reading", "min_seeds", "baseline")  # fmt: skip


def claim_id(init: str) -> str:
    return f"{NAME}_{init}"


def notebook_rules(root: Path | None = None) -> dict[str, Rule]:
    """The four rules by initializer, checked before any run is read: each present, its value an accuracy in
    (0, 1], its words stating the level and the widening the code applies. A claims file that breaks this is
    refused in one line naming the file, the claim and the bad value."""
    rules = load_rules(NAME, root)
    path = claims_path(NAME, root)
    level, widening = f"{100 * CONFIDENCE:g} %", f"{HALF_STEP:.5f}"
    checked = {}
    for init in INITS:
        rule = rules.get(claim_id(init))
        if rule is None:
            raise ClaimsFileError(f"{path}: no claim {claim_id(init)!r} (the report judges by it)")
        value = rule.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ClaimsFileError(
                f"{path}: claim {rule.id!r}: value {value!r} must be the notebook's test accuracy, a number in (0, 1]"
            )
        if level not in rule.rule or widening not in rule.rule:
            raise ClaimsFileError(
                f"{path}: claim {rule.id!r}: its rule must state the level {level} and the widening {widening} "
                f"the report applies: {rule.rule!r}"
            )
        checked[init] = rule
    return checked


def counted(accuracy: float) -> float:
    """An accuracy at the test set's resolution (the nearest count out of 10,000)."""
    return round(accuracy * TEST_IMAGES) / TEST_IMAGES


def intervals(runs: pd.DataFrame, rules: dict[str, Rule]) -> pd.DataFrame:
    """One row per notebook initializer: the notebook's number (as printed and as a count), our seeds' mean, sd
    and 95 % prediction interval for one new run, whether the notebook's number lies inside (each end widened
    by HALF_STEP), the verdict its rule gives with these seeds and the trivial baseline's call."""
    done = complete(runs)
    rows = []
    for init, rule in rules.items():
        mine = done[done.init == init].sort_values("seed")
        acc = mine["test/acc"].astype(float) if len(mine) else pd.Series(dtype=float)
        low, high = prediction_interval(acc)
        notebook = counted(float(rule.value))
        inside = None if math.isnan(low) else bool(low - HALF_STEP <= notebook <= high + HALF_STEP)
        outcome = None if inside is None else (AGREES if inside else PARTS)
        verdict = decide(rule, len(mine), outcome)
        rows.append({"init": init, "notebook_acc": float(rule.value), "notebook_acc_counted": notebook,
                     "n_seeds": len(mine), "seeds": " ".join(str(int(s)) for s in mine.seed),
                     "acc_mean": float(acc.mean()) if len(acc) else math.nan,
                     "acc_sd": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
                     "pi95_low": low, "pi95_high": high, "inside": inside, "verdict": verdict,
                     "reading": WORDS.get(verdict, verdict), "min_seeds": rule.min_seeds,
                     "baseline": CONSISTENT})  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def claims_of(table: pd.DataFrame, rules: dict[str, Rule]) -> list[Claim]:
    """One claim per initializer, its verdict from its rule (too few seeds: not testable at this budget)."""
    claims = []
    for row in table.itertuples(index=False):
        outcome = None if row.inside is None else (AGREES if row.inside else PARTS)
        if math.isnan(row.pi95_low):
            ours = f"{row.n_seeds} complete run(s): no interval"
        else:
            ours = (f"mean {row.acc_mean:.4f} ± {row.acc_sd:.4f} (sd, n={row.n_seeds}); 95 % prediction interval "
                    f"[{row.pi95_low:.4f}, {row.pi95_high:.4f}]; notebook {row.notebook_acc_counted:.4f} "
                    f"{'inside' if row.inside else 'outside'}")  # fmt: skip
        reading = "" if outcome is None else WORDS[outcome]
        claims.append(judged(rules[row.init], ours=ours, seeds=int(row.n_seeds), outcome=outcome,
                             baseline=f"{CONSISTENT} (the rule: {reading or 'no interval'})",
                             seeds_note=f"seeds {row.seeds}" if row.seeds else ""))  # fmt: skip
    return claims


def tally(table: pd.DataFrame) -> list[str]:
    """One line per reading (consistent, inconsistent, not testable, ...), naming its initializers in order."""
    return [f"- **{reading}**: {', '.join(f'`{init}`' for init in group.init)}"
            for reading, group in table.groupby("reading", sort=False)]  # fmt: skip


def figure(runs: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """Per initializer (own y-axis: zeros sits near chance), every seed a dot, the prediction interval a bar,
    the notebook's number a cross."""
    done = complete(runs)
    fig, axes = plt.subplots(1, len(table), figsize=(2.6 * max(1, len(table)), 3.4), squeeze=False)
    for ax, row in zip(axes[0], table.itertuples(index=False), strict=False):
        acc = done[done.init == row.init]["test/acc"].astype(float)
        ax.scatter([0.0] * len(acc), acc, color="#0072B2", s=18, alpha=0.8, label="our seeds")
        if not math.isnan(row.pi95_low):
            ax.vlines(
                0.25, row.pi95_low, row.pi95_high, color="#0072B2", linewidth=3, label="95 % PI, one run"
            )
        ax.scatter([0.5], [row.notebook_acc_counted], marker="x", color="black", s=50, label="notebook")
        ax.set(title=f"{row.init}\n{row.reading}", xticks=[], xlim=(-0.4, 0.9))
        ax.ticklabel_format(axis="y", useOffset=False)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "The seed notebook's single runs against this protocol's 95 % prediction intervals", fontsize=9
    )
    fig.tight_layout()
    save(fig, path)


def report(sweep: SweepRuns, out_dir: Path, diagnostics_dir: Path | None = None) -> PaperReport:
    rules = notebook_rules()
    table = intervals(sweep.runs, rules)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figure(sweep.runs, table, out_dir / "figures" / "notebook_vs_intervals.png")
    config = sweep.config
    model, optimizer, data, trainer = (config.get(k, {}) for k in ("model", "optimizer", "data", "trainer"))
    n_train = "all" if data.get("train_size") is None else data.get("train_size")
    seeds = sorted(int(s) for s in sweep.runs.seed.unique())
    setup = [
        "The seed notebook printed one Keras test accuracy per initializer. This report reruns the notebook's "
        "protocol with seeds (`conf/experiment/notebook.yaml`, DVC stages `train_notebook` -> `report_paper@notebook`) "
        "and asks, per initializer, whether the notebook's number is one that a new run of the same protocol "
        "could give.",
        "",
        f"- **Ours:** MLP {model.get('hidden_sizes')} ({model.get('activation')}), optimizer "
        f"`{optimizer.get('_target_')}` lr {optimizer.get('lr')} eps {optimizer.get('eps')}, batch "
        f"{data.get('batch_size')}, {n_train} training images less a validation split of {data.get('val_size')}, "
        f"{trainer.get('max_epochs')} epochs; the test accuracy of the final weights on the 10,000 test images; "
        f"seeds {seeds}.",
        "- **Notebook:** the same network, Keras `Adam(learning_rate=0.001)`, batch 64, 10 epochs on all 60,000 "
        "training images, `model.evaluate` on the test set after the last epoch; one run each, "
        "`tf.random.set_seed(42)`.",
        "- **Where ours differs by design:** PyTorch, not TensorFlow: the same update rule (Keras' Adam, "
        "`initstudy.nn.keras_adam`) and the same distributions, but other random streams, so seed 42 cannot be "
        "replayed and the notebook's run counts as one draw of the protocol. The notebook passes its initializer "
        "to the two hidden layers only, so its output layer keeps Keras' default (Glorot uniform) in all four "
        "models; ours applies the initializer to every layer, the output layer included.",
    ]
    section = [
        "## Per initializer",
        "",
        "The notebook's number as printed and at the test set's resolution (a count out of 10,000); our seeds' "
        "mean, sd and 95 % prediction interval for one new run (mean ± t(n−1) · sd · sqrt(1 + 1/n)); *inside*: "
        f"the notebook's number within the interval, each end widened by {HALF_STEP:.5f}. "
        "`tables/prediction_intervals.csv` holds the same table.",
        "",
        markdown_table(table.drop(columns=["baseline"])),
        "",
        *tally(table),
    ]
    metrics = {row.init: {"notebook_acc": row.notebook_acc, "acc_mean": row.acc_mean, "acc_sd": row.acc_sd,
                          "n_seeds": row.n_seeds, "pi95_low": row.pi95_low, "pi95_high": row.pi95_high,
                          "verdict": row.verdict} for row in table.itertuples(index=False)}  # fmt: skip
    return PaperReport(title="The seed notebook's numbers against its own protocol", setup=setup,
                       claims=claims_of(table, rules), metrics=metrics, sections=[section],
                       figures={"The notebook's single runs against this protocol's 95 % prediction intervals":
                                "notebook_vs_intervals.png"},
                       claims_file="conf/experiment/claims/notebook.yaml",
                       # the per-initializer numbers beside the side-by-side table (which holds the verdicts in words)
                       tables={"prediction_intervals.csv": table})  # fmt: skip

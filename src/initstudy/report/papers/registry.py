"""Which classic papers have a report (``--paper``): the single lookup from a paper's name to its module, whose
``report`` function writes it and whose rule check runs before any run is read."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from initstudy.report.papers.claims import PAPERS, PaperReport


def modules() -> dict[str, ModuleType]:
    """The papers a report exists for (``--paper``), each its module, in the order of ``PAPERS`` (imported
    here, on first use: a refused ``--paper`` imports none of them)."""
    from initstudy.report.papers import (
        epsilon,
        glorot2010,
        he2015,
        notebook,
        saxe2014,
        schoenholz2017,
        tuned,
        width,
    )

    found = {"glorot2010": glorot2010, "he2015": he2015, "schoenholz2017": schoenholz2017, "saxe2014": saxe2014,
             "notebook": notebook, "epsilon": epsilon, "width": width, "tuned": tuned}  # fmt: skip
    return {name: found[name] for name in PAPERS}


def writers() -> dict[str, Callable[..., PaperReport]]:
    """Each paper's ``report`` function, called with the sweep, the output folder and the diagnostics folder
    (the tuned comparison's also with ``grid=``, the learning-rate grid's sweep folder)."""
    return {name: module.report for name, module in modules().items()}


def check_paper(name: str) -> str:
    """``name`` if a report exists for it, else a ValueError naming what does (before any file is read)."""
    if name not in PAPERS:
        raise ValueError(f"invalid --paper={name!r}: must be one of {', '.join(PAPERS)}")
    return name


def check_claims(name: str) -> None:
    """The paper's claims file, read and checked before any run is: a malformed one is refused in one line
    (initstudy.report.papers.rules.ClaimsFileError) while the previous report stays as it was. A report that
    applies values its rules state (the notebook's, eps, width, tuned) also checks those values."""
    from initstudy.report.papers.rules import load

    papers = modules()
    stated = {"notebook": papers["notebook"].notebook_rules, "epsilon": papers["epsilon"].rules,
              "width": papers["width"].rules, "tuned": papers["tuned"].rules}  # fmt: skip
    if name in stated:
        stated[name]()
    else:
        load(name)

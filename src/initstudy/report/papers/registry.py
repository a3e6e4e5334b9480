"""Which classic papers have a report (``--paper``): the single lookup from a paper's name to its module's
``report`` function, checked before any run is read."""

from __future__ import annotations

from collections.abc import Callable

from initstudy.report.papers.claims import PAPERS, PaperReport


def writers() -> dict[str, Callable[..., PaperReport]]:
    """The papers a report exists for (``--paper``), each its module's ``report`` function, called with the
    sweep, the output folder and the diagnostics folder (the tuned comparison's also with ``grid=``, the
    learning-rate grid's sweep folder)."""
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

    return {"glorot2010": glorot2010.report, "he2015": he2015.report,
            "schoenholz2017": schoenholz2017.report, "saxe2014": saxe2014.report,
            "notebook": notebook.report, "epsilon": epsilon.report, "width": width.report,
            "tuned": tuned.report}  # fmt: skip


def check_paper(name: str) -> str:
    """``name`` if a report exists for it, else a ValueError naming what does (before any file is read)."""
    if name not in PAPERS:
        raise ValueError(f"invalid --paper={name!r}: must be one of {', '.join(PAPERS)}")
    return name


def check_claims(name: str) -> None:
    """The paper's claims file, read and checked before any run is: a malformed one is refused in one line
    (initstudy.report.papers.rules.ClaimsFileError) while the previous report stays as it was. The notebook's
    rules are also checked for the values its report applies (initstudy.report.papers.notebook)."""
    from initstudy.report.papers import epsilon, notebook, tuned, width
    from initstudy.report.papers.rules import load

    if name == notebook.NAME:
        notebook.notebook_rules()
    elif name == epsilon.NAME:
        epsilon.rules()
    elif name == width.NAME:
        width.rules()
    elif name == tuned.NAME:
        tuned.rules()
    else:
        load(name)

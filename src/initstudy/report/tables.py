"""Markdown tables of the reports: one cell format and one table layout for every report (study, depth,
papers), kept in a module that imports nothing of the report, so that the report's modules (and the rules
that decide their verdicts) can all use it without importing one another."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def cell(value: Any, digits: int = 4) -> str:
    """A table cell: '–' for a missing value, floats to ``digits`` decimals, anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table, every value through :func:`cell`."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])

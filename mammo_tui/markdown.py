"""Markdown pieces shared by the reports (a run's, a CV's, a sweep's) (pure)."""

from __future__ import annotations

import time
from typing import Any, Sequence


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A Markdown table padded so the columns also line up in a plain terminal.

    `right` lists the columns to right-align (numbers)."""
    cells = [[cell(h) for h in headers]] + [[cell(c) for c in row] for row in rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def when(timestamp: Any) -> str:
    if not timestamp:
        return "n/a"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))

"""Secondary suppression: hide enough further cells that no hidden cell follows from a row or column total."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Mask = NDArray[np.bool_]


def exposed_line(mask: Mask) -> tuple[int, int] | None:
    """The first (axis, position) of a row (axis 0) or column (axis 1) of two or more cells with exactly one hidden.

    Such a line gives its hidden cell away as the line's total minus its visible cells.
    """
    for axis in (0, 1):
        if mask.shape[1 - axis] < 2:
            continue
        hidden = mask.sum(axis=1 - axis)
        lines = np.flatnonzero(hidden == 1)
        if lines.size:
            return axis, int(lines[0])
    return None


def _complement(mask: Mask, weight: NDArray[np.float64], axis: int, line: int) -> tuple[int, int]:
    """The visible cell to hide alongside the line's lone hidden cell.

    Prefer a cell whose crossing line also has exactly one hidden cell (hiding it protects both), then one whose
    crossing line already hides two or more (no new exposure), and among those the smallest cell.
    """
    cells = mask[line] if axis == 0 else mask[:, line]
    weights = weight[line] if axis == 0 else weight[:, line]
    crossing = mask.sum(axis=0) if axis == 0 else mask.sum(axis=1)
    preference = np.select([crossing == 1, crossing >= 2], [0, 1], default=2)
    candidates = np.flatnonzero(~cells)
    best = min(candidates, key=lambda k: (preference[k], weights[k], k))
    return (line, int(best)) if axis == 0 else (int(best), line)


def protect(primary: Mask, weight: NDArray[np.float64]) -> Mask:
    """Extend the primary suppressions until every row and column hides no cell or at least two.

    ``weight`` ranks the visible cells (the smallest is hidden first). The grid includes the totals row and column
    when the table shows them; without them the totals are assumed derivable from other outputs.
    """
    mask = primary.copy()
    while (line := exposed_line(mask)) is not None:
        mask[_complement(mask, weight, *line)] = True
    return mask

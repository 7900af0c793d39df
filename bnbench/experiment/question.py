"""A spec's question: the paired comparisons it states (``compare = ["AXIS=A,B", ...]``), each naming a
grid axis and two of its values, and the ``margin``, the smallest difference of the compared metric that
matters. ``sweep`` ends with the comparisons, ``report`` shows them, and ``--seeds auto`` adds seeds
until each rules out a difference larger than the margin (:mod:`bnbench.stats.group_sequential`)."""

from __future__ import annotations

import math
from typing import Any

from bnbench.experiment.rules import csv_value
from bnbench.experiment.runs import SpecError


def parse_comparison(text: str) -> tuple[str, str, str] | None:
    """``AXIS=A,B`` as ``(axis, a, b)``; None if ``text`` is not of that form."""
    axis, _, values = text.partition("=")
    pair = values.split(",")
    return (axis.strip(), pair[0].strip(), pair[1].strip()) if axis.strip() and len(pair) == 2 and all(pair) else None


def check_comparisons(source: str, texts: Any, grid: dict[str, list]) -> tuple[tuple[str, str, str], ...]:
    """The spec's ``compare`` list: each ``"AXIS=A,B"`` names a grid axis and two of its values; raises
    :class:`bnbench.experiment.runs.SpecError` naming ``source`` otherwise."""
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SpecError(source, "compare", f'must be a list of "AXIS=A,B" strings, got {texts!r}')
    comparisons = []
    for text in texts:
        comparison = parse_comparison(text)
        if comparison is None:
            raise SpecError(source, "compare", f'expected "AXIS=A,B" (e.g. "placement=pre,post"), got {text!r}')
        axis, a, b = comparison
        if axis not in grid:
            raise SpecError(source, "compare", f"{text!r}: {axis} is not an axis of [grid] ({', '.join(grid) or 'none'})")
        written = [str(csv_value(tuple(v) if isinstance(v, list) else v)) for v in grid[axis]]
        for value in (a, b):
            if not any(_same_value(value, w, v) for w, v in zip(written, grid[axis])):
                raise SpecError(source, "compare", f"{text!r}: {value} is not a value of grid.{axis} ({', '.join(written)})")
        if a == b:
            raise SpecError(source, "compare", f"{text!r}: compares {a} with itself")
        comparisons.append(comparison)
    return tuple(dict.fromkeys(comparisons))


def _same_value(text: str, written: str, value: Any) -> bool:
    """Whether ``text`` names ``value`` (written ``written``), as :func:`bnbench.stats.comparisons.compare` matches
    runs: booleans in any case, numbers by value (``1e-5`` is 1e-05)."""
    if isinstance(value, bool):
        return text.lower() == written.lower()
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == written


def check_margin(source: str, raw: dict[str, Any]) -> float | None:
    """The spec's ``margin`` (None if it sets none); raises :class:`bnbench.experiment.runs.SpecError`
    unless it is a positive number and the spec states comparisons."""
    margin = raw.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf:
        raise SpecError(source, "margin", f"must be a difference > 0 of the compared metric (e.g. 0.01), got {margin!r}")
    if "compare" not in raw:
        raise SpecError(source, "margin", "applies to the spec's comparisons; add compare = [\"AXIS=A,B\"]")
    return float(margin)

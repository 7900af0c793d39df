"""What values a run field takes: one :class:`Rule` per field (:mod:`bnbench.config` assigns them).

A rule checks a value as read from TOML (``check(value)`` returns an error message or ``None``), parses
one value written on the command line (``parse(text)``; lists are dash-separated there, as in the CSV:
``100-100-100``), and says in words what it allows (``allowed``, for the field table in the docs).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple


class Rule(NamedTuple):
    """How one field's values are checked, parsed from ``--set`` and described."""

    check: Callable[[Any], str | None]
    parse: Callable[[str], Any]
    kind: str  # "int", "float", "str", "bool", "list" or "choices" (a list of names): the value's type
    allowed: Callable[[], str]


def integer(minimum: int) -> Rule:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer >= {minimum}, got {v!r}"
        return None if v >= minimum else f"must be an integer >= {minimum}, got {v}"

    return Rule(check, int, "int", lambda: f"integer >= {minimum}")


def real(lo: float, hi: float | None = None, *, lo_open: bool, hi_open: bool = True) -> Rule:
    lo_text = f"{'>' if lo_open else '>='} {lo:g}"
    allowed = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}" if hi is not None else lo_text

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number {allowed}, got {v!r}"
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo)
        if hi is not None:
            ok = ok and (v < hi if hi_open else v <= hi)
        return None if ok else f"must be a finite number {allowed}, got {v!r}"

    return Rule(check, float, "float", lambda: f"number {allowed}")


def _listed(choices: tuple[str, ...]) -> str:
    return ", ".join(repr(c) for c in choices)


def choice(choices: Callable[[], tuple[str, ...]]) -> Rule:
    """One of ``choices()`` (a function: the data sets are known only once registered)."""

    def check(v):
        return None if v in choices() else f"must be one of {_listed(choices())}, got {v!r}"

    return Rule(check, str, "str", lambda: " | ".join(choices()))


def _parse_boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def boolean() -> Rule:
    return Rule(lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}", _parse_boolean, "bool",
                lambda: "true | false")


def _is_list(v) -> bool:
    return isinstance(v, (list, tuple))


def positive_integers() -> Rule:
    """A non-empty list of integers >= 1 (widths)."""

    def check(v):
        if not _is_list(v) or not v or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in v):
            return f"must be a non-empty list of integers >= 1, got {v!r}"
        return None

    return Rule(check, lambda text: [int(w) for w in text.split("-")], "list", lambda: "non-empty list of integers >= 1")


def choices_list(choices: tuple[str, ...], *, what: str, empty: bool) -> Rule:
    """A list of distinct ``choices``, empty only if ``empty``; ``what`` names one element in errors."""

    def check(v):
        kind = "list" if empty else "non-empty list"
        if not _is_list(v) or (not v and not empty) or any(c not in choices for c in v):
            return f"must be a {kind} of {_listed(choices)}, got {v!r}"
        return None if len(set(v)) == len(v) else f"lists {what} twice: {v!r}"

    return Rule(check, lambda text: [c for c in text.split("-") if c], "choices",
                lambda: f"{'list' if empty else 'non-empty list'} of {' | '.join(choices)}")


def fractions() -> Rule:
    """A non-empty increasing list of fractions in (0, 1) (the step schedule's milestones)."""

    def check(v):
        if not _is_list(v) or not v or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1 for m in v):
            return f"must be a non-empty increasing list of fractions in (0, 1), got {v!r}"
        return None if all(a < b for a, b in zip(v, v[1:])) else f"must be increasing, got {v!r}"

    return Rule(check, lambda text: [float(m) for m in text.split("-")], "list",
                lambda: "increasing list of fractions in (0, 1)")

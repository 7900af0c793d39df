"""What values a run field takes: one :class:`Rule` per field (:mod:`bnbench.experiment.fields` assigns them).

A rule checks a value as read from TOML (``check(value)`` returns an error message or ``None``), parses
one value written on the command line (``parse(text)``; lists are dash-separated there, as in the CSV:
``100-100-100``), and says in words what it allows (``allowed``, for the field table in the docs).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, NamedTuple


class Rule(NamedTuple):
    """How one field's values are checked, parsed from ``--set`` and described."""

    check: Callable[[Any], str | None]
    parse: Callable[[str], Any]
    kind: str  # "int", "float", "str", "bool", "list", "choices" (a list of names) or "keywords" (a table)
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
        if v in choices():
            return None
        close = difflib.get_close_matches(v, choices(), n=1) if isinstance(v, str) else []
        return f"must be one of {_listed(choices())}, got {v!r}" + (f"; did you mean {close[0]!r}?" if close else "")

    return Rule(check, str, "str", lambda: " | ".join(choices()))


def deferred(described: str) -> Rule:
    """A name that only a layer above this one can check (an optax optimizer's: knowing optax's names
    imports optax, hence JAX, which a spec's dry run does without). Every value passes here; the layer
    that may import what the check needs refuses the others (:func:`bnbench.sweeping.plan.check_spec`)."""
    return Rule(lambda v: None, str, "str", lambda: described)


def reference(builtins: Callable[[], tuple[str, ...]], files: tuple[str, ...] = ()) -> Rule:
    """One of ``builtins()``, or a reference to the user's own code or data (:mod:`bnbench.data.references`):
    ``path.py:function``, ``package.module:function``, an entry point's name, or ``PREFIX:path`` for a
    prefix in ``files`` (``npz:data.npz``). Only the form is checked here; resolving it is the spec's."""

    def check(v):
        if isinstance(v, str) and v.strip() == v and v:
            return None
        return (f"must be one of {_listed(builtins())} or a reference (./file.py:function, package.module:function, "
                f"an entry point{', ' + ', '.join(f'{p}:file' for p in files) if files else ''}), got {v!r}")

    extra = "".join(f" | {p}:file" for p in files)
    return Rule(check, str, "str", lambda: " | ".join(builtins()) + extra + " | ./file.py:function | module:function")


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


def _scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str))


def keywords() -> Rule:
    """Keyword arguments: a table of names to TOML scalars or lists of them (a plugin's model_args, an
    optax optimizer's optimizer_args). Stored as sorted ``(name, value)`` pairs, lists as tuples."""

    def check(v):
        pairs = v.items() if isinstance(v, dict) else v if _is_list(v) else None
        if pairs is None:
            return f"must be a table of name = value, got {v!r}"
        for pair in pairs:
            if not (_is_list(pair) and len(pair) == 2 and isinstance(pair[0], str) and pair[0].isidentifier()):
                return f"must be a table of name = value, got {v!r}"
            value = pair[1]
            if not (_scalar(value) or (_is_list(value) and all(_scalar(x) for x in value))):
                return f"{pair[0]}: must be a number, string, boolean or a list of them, got {value!r}"
        return None

    return Rule(check, parse_scalar, "keywords", lambda: "table of name = value")


def parse_scalar(text: str):
    """One ``--set model_args.NAME=`` value: an integer, a float, true/false, or else text."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return _parse_boolean(text) if text.lower() in ("true", "false") else text


def _is_pairs(value) -> bool:
    return bool(value) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value)


def csv_value(value):
    """A field's value as written to CSV and matched in comparisons: tuples (widths) dash-separated (the
    form ``parse`` reads back), keyword arguments as ``name=value;...``."""
    if isinstance(value, tuple) and _is_pairs(value):
        return ";".join(f"{k}={csv_value(v)}" for k, v in value)
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return value


def as_pairs(value) -> tuple[tuple[str, object], ...]:
    """Keyword arguments (a table or pairs) as the sorted pairs a RunConfig holds."""
    pairs = value.items() if isinstance(value, dict) else value
    return tuple(sorted((k, tuple(v) if _is_list(v) else v) for k, v in pairs))

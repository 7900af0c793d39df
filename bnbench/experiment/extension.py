"""Whether one spec holds another's runs: the same runs (resume, merge) or more of them (extension by
seeds and axis values), and where not, the first difference, named."""

from __future__ import annotations

from bnbench.experiment.fields import ARGUMENT_FIELDS, RUN_FIELDS
from bnbench.experiment.spec import Spec


def first_difference(stored: Spec, new: Spec, *, superset_ok: bool = False) -> str | None:
    """The first way in which ``new`` is not ``stored`` (with ``superset_ok``: in which ``new`` does not
    hold every run of ``stored``), as a phrase naming the field; None if there is none.

    A superset keeps every fixed field and may add seeds and axis values, or sweep a field whose fixed
    value is among the new axis values.
    """
    if stored.name != new.name:
        return f"name is {stored.name!r} there, {new.name!r} here"

    def differs(old: list, now: list) -> list:
        return [v for v in old if v not in now] if superset_ok else ([] if old == now else old)

    lost = differs(list(stored.seeds), list(new.seeds))
    if lost or (not superset_ok and len(new.seeds) != len(stored.seeds)):
        return f"seeds {list(stored.seeds)} there, {list(new.seeds)} here"
    arguments = sorted({*stored.argument_columns, *new.argument_columns})
    for field in (*(f for f in RUN_FIELDS if f not in ARGUMENT_FIELDS), *arguments):
        old_values, new_values = stored.axis(field), new.axis(field)
        if differs(old_values, new_values) or (not superset_ok and old_values != new_values):
            return f"{field} is {_listed(old_values)} there, {_listed(new_values)} here"
    return None


def _listed(values: list) -> str:
    return repr(values[0]) if len(values) == 1 else repr(values)

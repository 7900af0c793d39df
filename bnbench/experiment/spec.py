"""Experiment specs: TOML files that expand into a grid of fully resolved runs.

A spec has top-level fields (one value each; every run field, its default and its range:
:mod:`bnbench.experiment.fields`), ``seeds`` (a count ``n`` meaning seeds ``0..n-1``, or a list of seeds), tables
of keyword arguments (``[model_args]``, ``[optimizer_args]``) and an optional ``[grid]`` table whose
keys are run fields, or ``"model_args.NAME"``, and whose values are lists to sweep. The grid is the
Cartesian product of its axes in the order written, times the seeds. References to a researcher's own
network or data (:mod:`bnbench.data.references`) are relative to ``base_dir`` (default: the spec file's
folder); data sets are loaded when the spec is. Every value is validated before anything runs; a problem
raises :class:`SpecError` with a one-line message naming the file and the field.

This layer imports no JAX: what needs it (a plugin network's existence and norm sites, the name and
arguments of an optax optimizer) is checked when the spec is planned (:func:`bnbench.sweeping.plan.check_spec`,
which ``bnbench.load_spec`` and every sweep, dry run or not, go through).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from bnbench.data import own
from bnbench.errors import BnbenchError
from bnbench.experiment import rules
from bnbench.experiment.fields import (
    ARGUMENT_FIELDS, COMBINATION_FIELDS, FIELD_DEFAULTS, FIELDS, LATER_FIELDS, LIST_FIELDS, RUN_FIELDS, RunConfig,
)
from bnbench.experiment.question import check_comparisons, check_margin
from bnbench.experiment.rules import Rule
from bnbench.experiment.runs import SpecError, argument_key, resolve
from bnbench.options import DEFAULT_WIDTHS, MODELS, NUMERICS


RULES: dict[str, Rule] = {name: spec.rule for name, spec in FIELDS.items()}
TOP_LEVEL_KEYS = ("name", "seeds", "grid", "base_dir", "compare", "margin", "data_layout", "numerics", *RUN_FIELDS)
# How a researcher's image arrays are read: channels last, and arrays that look channels first refused
# (:func:`bnbench.data.own.check`); or as they are, for data whose shape only looks so.
DATA_LAYOUTS = ("channels_last", "as_is")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed, validated spec: fixed field values, grid axes (in order), seeds, the folder its
    references are relative to, and its question: the paired ``comparisons`` ``(axis, a, b)`` that
    ``sweep`` ends with and ``report`` shows, and the ``margin``, the smallest difference of the
    compared metric that matters (``--seeds auto`` stops once a comparison rules out a larger one).
    ``data_layout`` (:data:`DATA_LAYOUTS`) says how its own data sets' image arrays are read; ``numerics``
    (:data:`bnbench.options.NUMERICS`, None: portable where the machine can) the bits its CPU runs get
    (:mod:`bnbench.training.numerics`; ``--portable``/``--native`` override it)."""

    name: str
    values: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: tuple[int, ...]
    source: str
    base_dir: Path = Path(".")
    comparisons: tuple[tuple[str, str, str], ...] = ()
    margin: float | None = None
    data_layout: str = DATA_LAYOUTS[0]
    numerics: str | None = None

    @property
    def num_runs(self) -> int:
        """The number of runs of the grid, computed from the axes without expanding them."""
        return math.prod(len(values) for values in self.grid.values()) * len(self.seeds)

    def axis(self, field: str) -> list[Any]:
        """The values ``field`` (or ``"model_args.NAME"``) takes in the grid; unset widths are the fixed
        model's default, an unset argument None."""
        if field in self.grid:
            return self.grid[field]
        argument = argument_key(field)
        if argument:
            return [dict(self.values[argument[0]]).get(argument[1])]
        if field == "widths" and self.values[field] is None and "model" not in self.grid:
            return [list(DEFAULT_WIDTHS.get(self.values["model"], ()))]
        return [self.values[field]]

    @property
    def argument_columns(self) -> tuple[str, ...]:
        """The ``"model_args.NAME"`` columns (one per keyword argument of a field of them, fixed or swept)."""
        fixed = [f"{field}.{name}" for field in ARGUMENT_FIELDS for name, _ in self.values[field]]
        return tuple(sorted({*fixed, *(k for k in self.grid if argument_key(k))}))

    @property
    def has_references(self) -> bool:
        """Whether a model or data set of the grid is a reference to the user's own (not built in)."""
        models, datasets = self.axis("model"), self.axis("dataset")
        return any(m not in MODELS for m in models) or any(own.is_reference(d) for d in datasets)

    @property
    def datasets(self) -> list[str]:
        """The data sets the grid's runs use."""
        return sorted(set(self.grid.get("dataset", [self.values["dataset"]])))

    def expand(self) -> list[RunConfig]:
        """All runs of the grid (axes in order, seeds innermost), fully resolved.

        Raises :class:`SpecError` on a combination that is invalid as a whole (a batch larger than
        the training split, ``eval_every`` larger than ``steps``).
        """
        axes = list(self.grid)
        runs = []
        for combo in itertools.product(*(self.grid[a] for a in axes)):
            fields = {**self.values, **dict(zip(axes, combo))}
            for seed in self.seeds:
                runs.append(resolve(fields, seed, self.source))
        return runs

    def validate(self, source: str | None = None) -> list[RunConfig]:
        """Raises :class:`SpecError` (naming ``source``, default the spec's) if any run of the grid
        would be invalid, as :meth:`expand` would, without building the whole grid: only the axes that
        the checks of a combination read are crossed, and only one seed. Returns the run of each
        combination it checked, for the checks of the layers above (:mod:`bnbench.sweeping.plan`)."""
        axes = [a for a in self.grid if a in COMBINATION_FIELDS or argument_key(a)]
        return [resolve({**self.values, **dict(zip(axes, combo))}, self.seeds[0], source or self.source)
                for combo in itertools.product(*(self.grid[a] for a in axes))]

    def to_toml(self) -> str:
        """The spec as TOML, every field written out once (a swept field only in ``[grid]``); loading
        it gives a spec with the same runs and the same TOML."""
        lines = [f"name = {_toml_value(self.name)}", f"seeds = {_toml_value(list(self.seeds))}"]
        if self.has_references:  # resolvable from wherever the TOML lands (a results folder's spec.toml)
            lines.append(f"base_dir = {_toml_value(str(self.base_dir))}")
        # With epochs, steps are derived: writing the default steps too would read back as setting both.
        derived = {"steps"} if self.values["epochs"] or "epochs" in self.grid else set()
        # Fields newer than the first specs are written only where they differ from their defaults, so
        # that an MLP spec's TOML does not list ResNet options.
        skip = derived | set(self.grid) | set(ARGUMENT_FIELDS)
        skip |= {k for k in LATER_FIELDS if _same(self.values[k], FIELD_DEFAULTS[k])}
        values = {**self.values, "widths": self.axis("widths")[0]} if "widths" not in self.grid else self.values
        if self.values["model"] not in MODELS and "widths" not in self.grid:
            skip.add("widths")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None and k not in skip]
        # Top-level keys before the first table header: after one, TOML files a key under that table.
        if self.comparisons:
            lines.append(f"compare = {_toml_value([f'{axis}={a},{b}' for axis, a, b in self.comparisons])}")
        if self.margin is not None:
            lines.append(f"margin = {self.margin!r}")
        if self.data_layout != DATA_LAYOUTS[0]:
            lines.append(f"data_layout = {_toml_value(self.data_layout)}")
        if self.numerics is not None:
            lines.append(f"numerics = {_toml_value(self.numerics)}")
        for field in ARGUMENT_FIELDS:
            if self.values[field]:
                lines += ["", f"[{field}]"] + [f"{k} = {_toml_value(v)}" for k, v in self.values[field]]
        if self.grid:
            lines += ["", "[grid]"] + [f"{json.dumps(k) if '.' in k else k} = {_toml_value(v)}" for k, v in self.grid.items()]
        return "\n".join(lines) + "\n"

    @property
    def spec_hash(self) -> str:
        """A 12-hex-digit hash of the resolved spec (its TOML form)."""
        return hashlib.sha256(self.to_toml().encode()).hexdigest()[:12]


def _same(value: Any, default: Any) -> bool:
    return list(value) == list(default) if isinstance(default, tuple) else value == default


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _unknown_key(source: str, key: str, valid: tuple[str, ...], where: str) -> SpecError:
    close = difflib.get_close_matches(key.rpartition(".")[2], valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return SpecError(source, key, f"unknown {where} key{hint}")


def _check(source: str, field: str, value: Any, label: str | None = None) -> Any:
    """Validates one value of ``field``; errors name ``label`` (default: the field)."""
    message = RULES[field].check(value)
    if message:
        raise SpecError(source, label or field, message)
    return float(value) if RULES[field].kind == "float" else value


def _check_seeds(source: str, seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SpecError(source, "seeds", f"a count of seeds must be >= 1, got {seeds}")
        return tuple(range(seeds))
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not ok or min(seeds) < 0:
        raise SpecError(source, "seeds", f"must be a count >= 1 or a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(source, "seeds", f"lists a seed twice: {seeds!r}")
    return tuple(seeds)


def parse_spec(raw: dict[str, Any], *, source: str, default_name: str, validate: bool = True) -> Spec:
    """Validates a spec given as a dict (as read from TOML) and returns a :class:`Spec`; with
    ``validate=False`` its combinations are left to the caller's :meth:`Spec.validate`, for a caller that
    first checks what this layer cannot (:func:`bnbench.sweeping.plan.check_spec`)."""
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown_key(source, key, TOP_LEVEL_KEYS, "top-level")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SpecError(source, "name", f"must be a non-empty string usable as a folder name, got {name!r}")
    defaults = RunConfig()
    values = {f: getattr(defaults, f) for f in RUN_FIELDS}
    for f in RUN_FIELDS:
        if f in raw:
            if isinstance(raw[f], list) and f not in LIST_FIELDS or f in LIST_FIELDS and _is_list_of_lists(raw[f]):
                raise SpecError(source, f, f"takes one value at the top level, got {raw[f]!r}; to sweep it, "
                                f"put it under [grid]: {f} = {_toml_value(raw[f])}")
            values[f] = _check(source, f, raw[f])
    if "widths" not in raw:
        values["widths"] = None  # the model's own (DEFAULT_WIDTHS), resolved per run
    for key in LIST_FIELDS:
        values[key] = None if values[key] is None else list(values[key])
    for key in ARGUMENT_FIELDS:
        values[key] = rules.as_pairs(values[key])
    grid = _parse_grid(raw.get("grid", {}), source)
    seeds = _check_seeds(source, raw.get("seeds", 1))
    _check_steps_or_epochs(source, values, grid, steps_written="steps" in raw)
    spec = Spec(name=name, values=values, grid=grid, seeds=seeds, source=source, base_dir=_base_dir(raw, source),
                comparisons=check_comparisons(source, raw.get("compare", []), grid), margin=check_margin(source, raw),
                data_layout=_check_data_layout(source, raw.get("data_layout", DATA_LAYOUTS[0])),
                numerics=_check_numerics(source, raw.get("numerics")))
    _register_datasets(spec, source)
    if validate:
        spec.validate()
    return spec


def _base_dir(raw: dict[str, Any], source: str) -> Path:
    """The folder a spec's references are relative to: its ``base_dir`` (itself relative to the spec's
    folder), else the spec's folder."""
    base = raw.get("base_dir", ".")
    if not isinstance(base, str) or not base:
        raise SpecError(source, "base_dir", f"must be a folder, got {base!r}")
    return (Path(source).parent / base).resolve()


def _parse_grid(grid_raw: Any, source: str) -> dict[str, list[Any]]:
    if not isinstance(grid_raw, dict):
        raise SpecError(source, "grid", "must be a table of field = [values, ...]")
    grid = {}
    for key, axis in grid_raw.items():
        if key == "seeds":
            raise SpecError(source, "grid.seeds", "set seeds at the top level (a count or a list), not in [grid]")
        if argument_key(key):
            grid[key] = _check_argument_axis(source, key, axis)
            continue
        if key not in RUN_FIELDS:
            raise _unknown_key(source, f"grid.{key}", RUN_FIELDS, "grid")
        grid[key] = _check_axis(source, key, axis)
    return grid


def numerics_of(path: str | Path) -> str | None:
    """The ``numerics`` key of the spec file at ``path``, read alone (None where unset, or where the file
    cannot be read: loading it says why). Loading a spec that names a plugin starts JAX, and portable
    numerics must be set up before JAX starts (:func:`bnbench.training.numerics.prepare`)."""
    try:
        value = tomllib.loads(Path(path).read_text()).get("numerics")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return _check_numerics(str(path), value)


def _check_numerics(source: str, numerics: Any) -> str | None:
    if numerics is not None and numerics not in NUMERICS:
        raise SpecError(source, "numerics", f"must be one of {', '.join(map(repr, NUMERICS))}, got {numerics!r}")
    return numerics


def _check_data_layout(source: str, layout: Any) -> str:
    if layout not in DATA_LAYOUTS:
        raise SpecError(source, "data_layout", f"must be one of {', '.join(map(repr, DATA_LAYOUTS))}, got {layout!r}")
    return layout


def _register_datasets(spec: Spec, source: str) -> None:
    """Loads and registers the researcher's own data sets the spec's grid names (:mod:`bnbench.data.own`),
    relative to its ``base_dir``; raises :class:`SpecError` naming the field and the file."""
    for text in spec.axis("dataset"):
        if own.is_reference(text):
            try:
                own.register_reference(text, spec.base_dir, as_is=spec.data_layout == "as_is")
            except BnbenchError as err:
                raise SpecError(source, "dataset", str(err)) from None


def _is_list_of_lists(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)


def _check_steps_or_epochs(source: str, values: dict[str, Any], grid: dict[str, list], *, steps_written: bool) -> None:
    if (values["epochs"] or "epochs" in grid) and (steps_written or "steps" in grid):
        raise SpecError(source, "epochs", "set steps or epochs, not both")


def _check_argument_axis(source: str, key: str, axis: Any) -> list[Any]:
    """A ``"model_args.NAME"`` axis: a list of argument values (TOML scalars, or lists of them)."""
    field = f"grid.{key}"
    if not isinstance(axis, list) or not axis:
        raise SpecError(source, field, f"must be a non-empty list of values, got {axis!r}")
    name = argument_key(key)[1]
    for value in axis:
        message = RULES[argument_key(key)[0]].check({name: value})
        if message:
            raise SpecError(source, field, message)
    values = [tuple(v) if isinstance(v, list) else v for v in axis]
    if len({json.dumps(v) for v in values}) != len(values):
        raise SpecError(source, field, f"lists a value twice: {axis!r}")
    return values


def _check_axis(source: str, key: str, axis: Any) -> list[Any]:
    field = f"grid.{key}"
    if not isinstance(axis, list) or not axis:
        raise SpecError(source, field, f"must be a non-empty list of values, got {axis!r}")
    values = [_check(source, key, v, label=field) for v in axis]
    if len({json.dumps(v) for v in values}) != len(values):
        raise SpecError(source, field, f"lists a value twice: {axis!r}")
    return values


def load_spec(path: str | Path, *, validate: bool = True) -> Spec:
    """Reads and validates a TOML spec file (``validate``: as :func:`parse_spec`); its name defaults to
    the file's stem."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise SpecError(source, "file", "is a folder, not a spec file (e.g. experiments/quickstart.toml)")
    if not path.is_file():
        raise SpecError(source, "file", "no such spec file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SpecError(source, "TOML syntax", str(err)) from None
    except UnicodeDecodeError:
        raise SpecError(source, "file", "is not UTF-8 text") from None
    return parse_spec(raw, source=source, default_name=path.stem, validate=validate)


def with_overrides(spec: Spec, *, sets: list[str] = (), seeds: int | None = None, validate: bool = True) -> Spec:
    """Applies command-line overrides: ``key=v1,v2`` replaces or adds a grid axis; ``seeds`` a count
    (``validate``: as :func:`parse_spec`).

    ``eval_stats`` takes one list, comma- or dash-separated (``eval_stats=running,precise`` evaluates
    every run both ways); ``widths`` values are dash-separated lists, several of them comma-separated.
    Errors that only the overrides cause name ``--set`` (or ``--seeds``), not the spec file.
    """
    grid = dict(spec.grid)
    for expression in sets:
        key, sep, text = expression.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise SpecError("--set", expression, "expected key=value[,value...]")
        if key == "seeds":
            raise SpecError("--set", key, f"use --seeds N for a count of seeds (--seeds {text.strip()})")
        if argument_key(key):
            grid[key] = _check_argument_axis("--set", key, [rules.parse_scalar(t.strip()) for t in text.split(",")])
            continue
        if key not in RUN_FIELDS:
            raise _unknown_key("--set", key, RUN_FIELDS, "run field")
        # A list of names (eval_stats, probes) is one value: its commas separate names, not values.
        texts = [text.replace(",", "-")] if RULES[key].kind == "choices" else text.split(",")
        try:
            axis = [RULES[key].parse(t.strip()) for t in texts]
        except ValueError:
            raise SpecError("--set", key, f"cannot read {text!r} as {key} values") from None
        grid[key] = _check_axis("--set", key, axis)
    _check_steps_or_epochs("--set", spec.values, grid, steps_written=False)
    new_seeds = spec.seeds if seeds is None else _check_seeds("--seeds", seeds)
    updated = dataclasses.replace(spec, grid=grid, seeds=new_seeds)
    _register_datasets(updated, "--set")
    if validate:
        updated.validate(source="--set" if sets else "--seeds")
    return updated

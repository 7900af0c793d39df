"""One combination of a spec's fields resolved into a :class:`bnbench.experiment.fields.RunConfig`, with the checks
a combination needs as a whole: a batch that fits the training split, options the model or norm layer
has (others would be silently ignored), steps and evaluation intervals that agree. The checks that need
JAX (a plugin network that builds for the run, an optax optimizer's arguments) are the planner's
(:func:`bnbench.sweeping.plan.check_runs`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from bnbench import data
from bnbench.experiment import rules
from bnbench.experiment.fields import ARGUMENT_FIELDS, RunConfig
from bnbench.errors import BnbenchError
from bnbench.options import DEFAULT_DEPTH, DEFAULT_WIDTHS, MODELS


class SpecError(BnbenchError):
    """An invalid spec or override; the message names the source and the field."""

    def __init__(self, source: str, field: str, message: str):
        super().__init__(f"{source}: {field}: {message}")


def argument_key(key: str) -> tuple[str, str] | None:
    """``("model_args", "width")`` for the grid key ``"model_args.width"``; None for other keys."""
    field, dot, name = key.partition(".")
    return (field, name) if dot and field in ARGUMENT_FIELDS and name.isidentifier() else None


def merge_arguments(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with each ``"model_args.NAME"`` value merged into the ``model_args`` pairs (and so for
    every field of keyword arguments)."""
    merged = {k: v for k, v in fields.items() if not argument_key(k)}
    for field in ARGUMENT_FIELDS:
        extra = {argument_key(k)[1]: v for k, v in fields.items() if (argument_key(k) or ("",))[0] == field}
        merged[field] = rules.as_pairs({**dict(fields[field]), **extra})
    return merged


def resolve(fields: dict[str, Any], seed: int, source: str) -> RunConfig:
    """The run of ``fields`` (one combination of a spec's grid, ``model_args.NAME`` keys included) and
    ``seed``; raises :class:`SpecError` naming ``source`` and the field on an invalid combination."""
    fields = merge_arguments(fields)
    info = data.info(fields["dataset"])
    num_samples = fields["num_samples"] if fields["num_samples"] is not None else info.default_num_samples
    train_size = info.train_size(num_samples)
    batch_size = fields["batch_size"]
    if batch_size > train_size:
        raise SpecError(source, "batch_size",
                        f"{batch_size} is larger than the training split of {fields['dataset']!r} ({train_size} examples)")
    if fields["widths"] is not None and fields["model"] not in MODELS:
        raise SpecError(source, "widths", "applies to the built-in models; pass your network's sizes in [model_args]")
    widths = tuple(fields["widths"] or DEFAULT_WIDTHS.get(fields["model"], ()))
    fields = {**fields, "widths": widths}
    depth = _check_model_options(fields, source)
    _check_norm_options(fields, source)
    if fields["augment"] != "none" and len(info.input_shape) != 3:
        raise SpecError(source, "augment", f"{fields['augment']!r} takes images; {fields['dataset']!r} is not an image data set")
    steps = fields["epochs"] * (train_size // batch_size) if fields["epochs"] else fields["steps"]
    eval_every = _check_steps(fields, steps, source)
    return RunConfig(**{
        **fields, "num_samples": num_samples, "steps": steps, "eval_every": eval_every, "widths": widths, "depth": depth,
        "eval_stats": tuple(fields["eval_stats"]), "probes": tuple(fields["probes"]),
        "lr_milestones": tuple(fields["lr_milestones"]), "seed": seed,
    })


def completed(run: RunConfig) -> RunConfig:
    """``run`` with the fields a spec derives (``num_samples``, ``eval_every``, the depth) resolved as a
    spec resolves them, for a :class:`RunConfig` built by hand (``RunConfig(dataset="synthetic")``);
    raises :class:`SpecError` on an invalid combination."""
    if run.num_samples is not None and run.eval_every is not None:
        return run
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}
    return resolve({**fields, "eval_stats": list(run.eval_stats), "probes": list(run.probes)}, run.seed, "RunConfig")


def _check_steps(fields: dict[str, Any], steps: int, source: str) -> int:
    """The evaluation interval (default: a tenth of the steps); refuses warm-up and intervals longer
    than training."""
    # An override of steps (or epochs) can leave a field the spec sets out of range: say to set it too.
    also = " (pass --set {field}=N with the new steps)" if source in ("--set", "--seeds") else ""
    if fields["warmup_steps"] >= steps:
        raise SpecError(source, "warmup_steps", f"must be less than steps={steps}, got {fields['warmup_steps']}"
                        + also.format(field="warmup_steps"))
    eval_every = fields["eval_every"]
    if eval_every is None:
        return max(1, steps // 10)
    if eval_every > steps:
        raise SpecError(source, "eval_every", f"must be in [1, steps={steps}], got {eval_every}"
                        + also.format(field="eval_every"))
    return eval_every


_RESNET_OPTIONS = (("residual_unit", "original"), ("shortcut", "pad"), ("init", "default"))
_STAGES = {"vgg": 5, "resnet": 3}


def _check_model_options(fields: dict[str, Any], source: str) -> int:
    """Refuses options the run's model does not have (they would be silently ignored) and depths it
    cannot take; returns the depth (0 resolved to the model's default)."""
    model, depth = fields["model"], fields["depth"]
    if model != "resnet":
        for option, default in _RESNET_OPTIONS:
            if fields[option] != default:
                raise SpecError(source, option, f"applies to model = 'resnet' only, not {model!r}")
    if model in MODELS and fields["model_args"]:
        raise SpecError(source, "model_args", f"applies to plugin networks (bnbench.models.plugin), not {model!r}")
    if model not in ("vgg", "resnet"):
        if depth:
            raise SpecError(source, "depth", f"applies to models 'vgg' and 'resnet'; {model!r} takes its depth from "
                            f"{'widths' if model in MODELS else 'model_args'}")
        if model not in MODELS and "ics" in fields["probes"]:
            raise SpecError(source, "probes", "'ics' updates a chain of layers one by one; a plugin network's "
                            "parameters are not known to be one (grad_norm, weight_norm, smoothness, stats_gap work)")
        return 0
    if len(fields["widths"]) != _STAGES[model]:
        raise SpecError(source, "widths", f"{model} takes one width per stage ({_STAGES[model]}), got {list(fields['widths'])}")
    if model == "vgg":
        if depth not in (0, 11, 16):
            raise SpecError(source, "depth", f"vgg depth must be 11 or 16, got {depth}")
        return depth or DEFAULT_DEPTH[model]
    if depth and (depth < 8 or (depth - 2) % 6):
        raise SpecError(source, "depth", f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    if fields["placement"] != "pre":
        raise SpecError(source, "placement", "resnet places its norm layers by residual_unit; placement applies to mlp, cnn and vgg")
    if fields["init"] != "default" and fields["residual_unit"] == "none":
        raise SpecError(source, "init", f"{fields['init']!r} scales residual branches; residual_unit 'none' has none")
    if "ics" in fields["probes"]:
        raise SpecError(source, "probes", "'ics' needs a chain of layers (mlp, cnn, vgg); a resnet's earlier layers are not one")
    return depth or DEFAULT_DEPTH[model]


def _check_norm_options(fields: dict[str, Any], source: str) -> None:
    """Options of one norm layer set on another would be silently ignored: refuse them."""
    norm, ghost = fields["norm"], fields["ghost_batch_size"]
    if norm != "batch":
        for option, default in (("ghost_batch_size", 0), ("renorm", False)):
            if fields[option] != default:
                raise SpecError(source, option, f"applies to norm = 'batch' only, not {norm!r}")
    if norm == "group":
        bad = [w for w in fields["widths"] if w % fields["groups"]]
        if bad:
            raise SpecError(source, "groups", f"{fields['groups']} does not divide the widths {bad}")
    if ghost and fields["batch_size"] % ghost:
        raise SpecError(source, "ghost_batch_size", f"{ghost} does not divide batch_size {fields['batch_size']}")

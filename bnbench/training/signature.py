"""What one compiled training program is specialised to (:class:`Signature`) and what it takes as traced
arguments (:class:`HParams`), both derived from the field registry (:mod:`bnbench.experiment.fields`).

A run field enters the program as :class:`bnbench.experiment.fields.FieldSpec` says: ``compiled="value"`` fields
are Signature fields of their name, ``"switch"`` fields Signature fields holding ``value > 0`` (their
strength traced), the norm layer's fields make ``Signature.norm``, the schedule's ``Signature.schedule``,
and the data set the input shape, class count and training-split size. Traced fields are HParams fields
of their name (float32 scalars, or vectors under ``vmap``), so every run that shares a signature
shares one XLA compilation. Both are built by keyword from the registry: adding a field to the registry
adds it here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from bnbench.training import optimizers
from bnbench.training import probes
from bnbench.training import recipe
from bnbench.experiment.fields import TRACED_FIELDS, RunConfig, fields_compiled_as
from bnbench.data.registry import Dataset
from bnbench.models import PLUGINS, Model, Normalization, is_plugin, make_model, num_params
from bnbench.norm.settings import BNSettings
from bnbench.options import OPTIMIZERS

_VALUES = fields_compiled_as("value")
_SWITCHES = fields_compiled_as("switch")
# The Signature fields that are not run fields of their name: built from several fields, the optimizer's
# arguments, the plugin's code, or the data set.
COMPOSITE_FIELDS = ("norm", "schedule", "optimizer_static", "optimizer_traced", "model_source", "input_shape",
                    "num_classes", "num_train")


def optimizer_arguments(config: RunConfig) -> tuple[tuple, tuple[str, ...]]:
    """The run's optimizer arguments split into those compiled in (name, value pairs) and the names of
    those traced (:func:`bnbench.training.optimizers.traced_args`)."""
    if config.optimizer in OPTIMIZERS:
        return (), ()
    traced = optimizers.traced_args(config.optimizer, config.optimizer_args)
    return tuple(pair for pair in config.optimizer_args if pair[0] not in traced), traced


class HParams(NamedTuple("_HParams", [(name, jax.Array) for name in (*TRACED_FIELDS, "optimizer_floats")])):
    """The traced hyperparameters of a run: one float32 scalar per traced run field
    (:data:`bnbench.experiment.fields.TRACED_FIELDS`; ``lr`` is the effective learning rate, after linear scaling
    with the batch size), and ``optimizer_floats``, the values of the optimizer's traced arguments
    (``Signature.optimizer_traced``), a vector."""

    @classmethod
    def of(cls, config: RunConfig) -> HParams:
        values = {name: getattr(config, name) for name in TRACED_FIELDS} | {"lr": config.effective_lr}
        traced = dict(config.optimizer_args)
        floats = np.asarray([traced[name] for name in optimizer_arguments(config)[1]], np.float32)
        return cls(**{name: np.float32(value) for name, value in values.items()}, optimizer_floats=floats)

    @property
    def bn_settings(self) -> BNSettings:
        """BN's traced settings, the run fields of their names: the ``bn_settings`` of ``Model.apply``."""
        return BNSettings(*(getattr(self, name) for name in BNSettings._fields))


_FIELD_TYPES = [(name, Any) for name in (*_VALUES, *_SWITCHES)]
_COMPOSITE_TYPES = [("norm", Normalization), ("schedule", recipe.Schedule), ("optimizer_static", tuple),
                    ("optimizer_traced", tuple), ("model_source", str), ("input_shape", tuple), ("num_classes", int),
                    ("num_train", int)]


class Signature(NamedTuple("_Signature", _FIELD_TYPES + _COMPOSITE_TYPES)):
    """What one compiled program is specialised to: runs sharing it share a compilation. Switch fields
    (``noisy_bn``, ``dropout``) hold whether the feature is on; its strength is traced (:class:`HParams`)."""

    @classmethod
    def of(cls, config: RunConfig, data: Dataset) -> Signature:
        norm = Normalization(
            config.norm, config.groups, config.ghost_batch_size or None, config.renorm, config.running_var
        )
        milestones = config.lr_milestones if config.schedule == "step" else ()
        schedule = recipe.Schedule(config.schedule, config.steps, milestones, config.warmup_steps > 0)
        static, traced = optimizer_arguments(config)
        source = PLUGINS[config.model].source if is_plugin(config.model) else ""
        return cls(
            **{name: getattr(config, name) for name in _VALUES},
            **{name: getattr(config, name) > 0 for name in _SWITCHES},
            norm=norm, schedule=schedule, optimizer_static=static, optimizer_traced=traced, model_source=source,
            input_shape=data.input_shape, num_classes=data.num_classes, num_train=len(data.y_train),
        )

    @property
    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`bnbench.models.make_model` (after the family's name)."""
        return dict(
            input_shape=self.input_shape, widths=self.widths, num_classes=self.num_classes,
            activation=self.activation, placement=self.placement, norm=self.norm, depth=self.depth,
            residual_unit=self.residual_unit, shortcut=self.shortcut, init=self.init,
            dropout_placement=self.dropout_placement, dtype=self.dtype, model_args=self.model_args,
            model_source=self.model_source,
        )

    def make_model(self) -> Model:
        return make_model(self.model, **self.model_options)

    @property
    def num_params(self) -> int:
        """The model's learned parameters (norm layers' scale and offset included)."""
        return num_params(self.model, **self.model_options)

    @property
    def norm_layers(self) -> bool:
        """Whether the model has norm layers."""
        return self.placement != "none" and self.norm.kind != "none"

    @property
    def step_randomness(self) -> bool:
        """Whether a training step draws random numbers (noise, dropout, augmentation, or a plugin
        network's own key)."""
        return self.noisy_bn or self.dropout or self.augment != "none" or self.plugin

    @property
    def plugin(self) -> bool:
        """Whether the model is a plugin network (:mod:`bnbench.models.plugin`)."""
        return bool(self.model_source)

    @property
    def probe_labels(self) -> tuple[tuple[int, str], ...]:
        """``(layer, value name)`` of each probe value (:func:`bnbench.training.probes.labels`)."""
        model = self.make_model()
        return probes.labels(self.probes, model.hidden_layers, self.norm_layers, model.bn_layers)

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """The step counts after which the test split is evaluated (always including the last)."""
        points = list(range(self.eval_every, self.steps + 1, self.eval_every))
        if points[-1] != self.steps:
            points.append(self.steps)
        return tuple(points)

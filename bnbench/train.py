"""The training program: init, train step, evaluation, and a whole run as one ``lax.scan``.

A run is ``init -> steps x train step -> evaluate every eval_every steps``. Everything that changes
array shapes or the traced program (the :class:`Signature`) is static; the seed and the scalar
hyperparameters (:class:`HParams`) are traced arguments, so every run that shares a signature can
share one XLA compilation. Batches are gathered by index from device-resident data; each epoch is a
fresh permutation of the training split drawn from the run's seed.

The training loss of an evaluation point is the mean minibatch loss over the steps since the
previous one. A run whose minibatch loss becomes NaN/inf is ``diverged`` at that step.

Every evaluation computes the test loss and accuracy once per requested ``eval_stats`` mode:
``running`` (BN with its EMA statistics), ``batch`` (each test batch normalized with its own
statistics; test batches have the size BN normalized over in training: ``ghost_batch_size`` or
``batch_size``, the last one shorter) and ``precise`` (PreciseBN, Wu & Johnson 2021: with the weights
frozen, the training-mode forward pass over ``precise_batches`` training batches, those that would
follow the last step, gives each BN layer's population mean and variance: the mean of the batch means,
and the mean of the batch variances plus the variance of the batch means).

With ``probes``, :mod:`bnbench.probes` measures at step 0 and at every evaluation on a fixed probe batch
(the first ``batch_size`` training examples). With ``noisy_bn``, ``dropout`` or ``augment``, every
training step draws its noise, dropout masks and crops from the run's own stream (its initialization
key folded with a constant, split every step), so that both engines, and a resumed sweep, see the
same draws. The learning rate of each update follows the run's schedule (:mod:`bnbench.recipe`).

What a run returns, and its summary, are in :mod:`bnbench.outcomes`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnbench import bn, probes, recipe
from bnbench.config import RunConfig
from bnbench.data import Dataset
from bnbench.models import Model, Normalization, make_model, num_params
from bnbench.outcomes import ACTIVATION_STATS, RunOutput


class HParams(NamedTuple):
    """The traced scalar hyperparameters of a run (float32 scalars, or vectors under ``vmap``)."""

    lr: jax.Array  # the effective learning rate (after linear scaling with the batch size)
    weight_decay: jax.Array
    epsilon: jax.Array
    momentum: jax.Array
    optimizer_momentum: jax.Array
    renorm_rmax: jax.Array
    renorm_dmax: jax.Array
    noisy_bn: jax.Array
    warmup_steps: jax.Array
    lr_decay: jax.Array
    dropout: jax.Array

    @classmethod
    def of(cls, config: RunConfig) -> HParams:
        values = {f: getattr(config, f) for f in cls._fields} | {"lr": config.effective_lr}
        return cls(**{f: np.float32(v) for f, v in values.items()})

    @property
    def norm_scalars(self) -> dict[str, jax.Array]:
        """The keyword arguments of the norm layers (``Model.apply``)."""
        return dict(momentum=self.momentum, epsilon=self.epsilon, renorm_rmax=self.renorm_rmax, renorm_dmax=self.renorm_dmax)


class Signature(NamedTuple):
    """What one compiled program is specialised to: runs sharing it share a compilation."""

    model: str
    widths: tuple[int, ...]
    activation: str
    placement: str
    norm: Normalization
    batch_size: int
    eval_stats: tuple[str, ...]
    precise_batches: int
    optimizer: str
    bn_weight_decay: bool
    steps: int
    eval_every: int
    track_activations: bool
    probes: tuple[str, ...]
    noisy_bn: bool  # noise after the norm layers (its strength is traced: HParams.noisy_bn)
    depth: int
    residual_unit: str
    shortcut: str
    init: str
    dropout: bool  # dropout in training (its rate is traced: HParams.dropout)
    dropout_placement: str
    dtype: str
    augment: str
    schedule: recipe.Schedule
    nesterov: bool
    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int

    @classmethod
    def of(cls, config: RunConfig, data: Dataset) -> Signature:
        norm = Normalization(
            config.norm, config.groups, config.ghost_batch_size or None, config.renorm, config.running_var
        )
        return cls(
            config.model,
            config.widths,
            config.activation,
            config.placement,
            norm,
            config.batch_size,
            config.eval_stats,
            config.precise_batches,
            config.optimizer,
            config.bn_weight_decay,
            config.steps,
            config.eval_every,
            config.track_activations,
            config.probes,
            config.noisy_bn > 0,
            config.depth,
            config.residual_unit,
            config.shortcut,
            config.init,
            config.dropout > 0,
            config.dropout_placement,
            config.dtype,
            config.augment,
            recipe.Schedule(config.schedule, config.steps, config.lr_milestones if config.schedule == "step" else (),
                            config.warmup_steps > 0),
            config.nesterov,
            data.input_shape,
            data.num_classes,
            len(data.y_train),
        )

    @property
    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`bnbench.models.make_model` (after the family's name)."""
        return dict(
            input_shape=self.input_shape, widths=self.widths, num_classes=self.num_classes,
            activation=self.activation, placement=self.placement, norm=self.norm, depth=self.depth,
            residual_unit=self.residual_unit, shortcut=self.shortcut, init=self.init,
            dropout_placement=self.dropout_placement, dtype=self.dtype,
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
        """Whether a training step draws random numbers (noise, dropout, augmentation)."""
        return self.noisy_bn or self.dropout or self.augment != "none"

    @property
    def probe_labels(self) -> tuple[tuple[int, str], ...]:
        """``(layer, value name)`` of each probe value (:func:`bnbench.probes.labels`)."""
        model = self.make_model()
        return probes.labels(self.probes, model.hidden_layers, self.norm_layers, model.bn_layers)

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """The step counts after which the test split is evaluated (always including the last)."""
        points = list(range(self.eval_every, self.steps + 1, self.eval_every))
        if points[-1] != self.steps:
            points.append(self.steps)
        return tuple(points)


ACTIVATION_EXAMPLES = 512  # the fixed evaluation batch of activation statistics: the first test examples


def _all_but_norm_layers(params):
    """The weight-decay mask that leaves the norm layers' scale and offset (``params["norm"]``) alone."""
    return {k: jax.tree_util.tree_map(lambda _: k != "norm", v) for k, v in params.items()}


FIXUP_SCALAR_LR = 0.1


def _fixup_scalars(params):
    """The mask of Fixup's scalar multipliers and biases."""
    return {k: jax.tree_util.tree_map(lambda _: k in ("branch", "head_bias"), v) for k, v in params.items()}


def make_optimizer(
    kind: str,
    hp: HParams,
    bn_weight_decay: bool = True,
    schedule: recipe.Schedule = recipe.Schedule(),
    nesterov: bool = False,
    fixup: bool = False,
) -> optax.GradientTransformation:
    """``sgd``: L2 weight decay added to the gradient, then SGD with momentum (Nesterov's with
    ``nesterov``). ``adam``: AdamW. The learning rate follows ``schedule`` (:func:`bnbench.recipe.learning_rate`)
    from ``hp.lr``.

    With ``bn_weight_decay`` false, the norm layers' parameters (``params["norm"]``) get no decay. With
    ``fixup``, the updates of Fixup's scalars (``params["branch"]``, ``params["head_bias"]``) are scaled by
    :data:`FIXUP_SCALAR_LR`.
    """
    mask = None if bn_weight_decay else _all_but_norm_layers
    lr = hp.lr if schedule.constant else functools.partial(
        recipe.learning_rate, schedule, lr=hp.lr, warmup_steps=hp.warmup_steps, lr_decay=hp.lr_decay
    )
    if kind == "sgd":
        base = optax.chain(
            optax.add_decayed_weights(hp.weight_decay, mask=mask),
            optax.sgd(lr, hp.optimizer_momentum, nesterov=nesterov),
        )
    elif kind == "adam":
        base = optax.adamw(lr, weight_decay=hp.weight_decay, mask=mask)
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    # Fixup trains its scalar multipliers and biases at a tenth of the learning rate (Zhang et al. 2019).
    return optax.chain(base, optax.masked(optax.scale(FIXUP_SCALAR_LR), _fixup_scalars)) if fixup else base


def epoch_order(key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The order in which epoch ``epoch`` visits the examples: a permutation drawn from ``fold_in(key, epoch)``."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def batch_indices(key: jax.Array, start_step, num_steps: int, num_examples: int, batch_size: int) -> jax.Array:
    """Indices of the examples of steps ``start_step .. start_step+num_steps-1``, shape ``(num_steps, batch)``.

    Each epoch is a fresh permutation (:func:`epoch_order`); the last partial batch of an epoch is
    dropped, so every step sees ``batch_size`` distinct examples.
    """
    steps_per_epoch = num_examples // batch_size
    first_epoch = start_step // steps_per_epoch
    num_epochs = num_steps // steps_per_epoch + 2
    epochs = first_epoch + jnp.arange(num_epochs)
    perms = jax.vmap(lambda e: epoch_order(key, e, num_examples))(epochs)
    flat = perms[:, : steps_per_epoch * batch_size].reshape(-1)
    offset = (start_step - first_epoch * steps_per_epoch) * batch_size
    return jax.lax.dynamic_slice(flat, (offset,), (num_steps * batch_size,)).reshape(num_steps, batch_size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class TrainState(NamedTuple):
    params: Any
    bn_state: Any
    opt_state: Any
    key: Any = None  # with step_randomness: the key of the next step's draws, split off every step


class Program(NamedTuple):
    """The pure functions of one signature's training program (none of them jitted).

    ``init(seed, hp) -> TrainState``; ``batch_indices(seed, start, length) -> (length, batch)`` (``length``
    static); ``step(state, idx, hp, x_train, y_train) -> (state, loss)``; ``evaluate(state, seed, hp,
    x_train, x_test, y_test) -> (loss, accuracy, activation statistics)``; ``probe(state, seed, hp,
    step, x_train, y_train) -> probe values`` after ``step`` updates (:mod:`bnbench.probes`; empty
    without probes); ``run(seed, hp, x_train, y_train, x_test, y_test) -> RunOutput`` runs every step,
    evaluation and probe with ``lax.scan``. The engines in :mod:`bnbench.engine` drive either ``run``
    (vectorized) or the others from a Python loop (sequential): the same math.
    """

    init: Callable
    batch_indices: Callable
    step: Callable
    evaluate: Callable
    probe: Callable
    precise_bn_state: Callable
    run: Callable


def _keys(seed) -> tuple[jax.Array, jax.Array]:
    """The (initialization, data order) keys of a seed."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, data_key


# Folded into the initialization key: the stream of the training steps' draws (noise, dropout,
# augmentation); then into each step's key, one constant per use (noise takes the step's key itself).
_STEP_STREAM = 0x6E6F6973
_DROPOUT_STREAM = 0x64726F70
_AUGMENT_STREAM = 0x61756720


def make_program(sig: Signature) -> Program:
    """Builds the training program of ``sig``."""
    model = sig.make_model()

    def optimizer(hp: HParams) -> optax.GradientTransformation:
        return make_optimizer(sig.optimizer, hp, sig.bn_weight_decay, sig.schedule, sig.nesterov, sig.init == "fixup")

    def init(seed, hp: HParams) -> TrainState:
        init_key = _keys(seed)[0]
        params, bn_state = model.init(init_key)
        key = jax.random.fold_in(init_key, _STEP_STREAM) if sig.step_randomness else None
        return TrainState(params, bn_state, optimizer(hp).init(params), key)

    def indices(seed, start, length: int):
        return batch_indices(_keys(seed)[1], start, length, sig.num_train, sig.batch_size)

    def step(state: TrainState, idx, hp: HParams, x_train, y_train):
        x, draws, next_key = x_train[idx], {}, None
        if sig.step_randomness:
            next_key, key = jax.random.split(state.key)
            if sig.noisy_bn:
                draws |= dict(noise_key=key, noise_strength=hp.noisy_bn)
            if sig.dropout:
                draws |= dict(dropout_key=jax.random.fold_in(key, _DROPOUT_STREAM), dropout_rate=hp.dropout)
            if sig.augment == "crop_flip":
                x = recipe.crop_flip(jax.random.fold_in(key, _AUGMENT_STREAM), x)

        def loss_fn(params):
            logits, bn_state = model.apply(params, state.bn_state, x, train=True, **hp.norm_scalars, **draws)
            return cross_entropy(logits, y_train[idx]), bn_state

        (loss, bn_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), bn_state, opt_state, next_key), loss

    def activation_stats(state: TrainState, hp: HParams, x_test):
        if not sig.track_activations:
            return jnp.zeros((0, len(ACTIVATION_STATS)), jnp.float32)
        preacts = model.preactivations(state.params, state.bn_state, x_test[:ACTIVATION_EXAMPLES], **hp.norm_scalars)
        return jnp.stack(
            [
                jnp.concatenate([jnp.percentile(a, jnp.array([15.0, 50.0, 85.0])), jnp.stack([a.mean(), a.std()])])
                for a in preacts
            ]
        )

    def precise_bn_state(state: TrainState, seed, hp: HParams, x_train):
        def batch_statistics(idx):
            # With momentum 0 the updated state is exactly the batch's statistics.
            scalars = hp.norm_scalars | {"momentum": jnp.zeros((), jnp.float32)}
            return model.apply(state.params, state.bn_state, x_train[idx], train=True, **scalars)[1]

        per_batch = jax.lax.map(batch_statistics, indices(seed, sig.steps, sig.precise_batches))
        return [
            bn.BNState(mean=s.mean.mean(0), var=s.var.mean(0) + s.mean.var(0), count=old.count)
            for s, old in zip(per_batch, state.bn_state)
        ]

    def batch_stats_logits(state: TrainState, hp: HParams, x_test):
        size = sig.norm.ghost_batch_size or sig.batch_size
        full = x_test.shape[0] // size * size

        def logits_of(x):
            return model.apply(state.params, state.bn_state, x, train=False, eval_stats="batch", **hp.norm_scalars)[0]

        logits = jax.vmap(logits_of)(x_test[:full].reshape(-1, size, *x_test.shape[1:])).reshape(full, -1)
        if full < x_test.shape[0]:
            logits = jnp.concatenate([logits, logits_of(x_test[full:])])
        return logits

    def evaluate(state: TrainState, seed, hp: HParams, x_train, x_test, y_test):
        def logits_for(mode):
            if mode == "batch":
                return batch_stats_logits(state, hp, x_test)
            bn_state = precise_bn_state(state, seed, hp, x_train) if mode == "precise" else state.bn_state
            return model.apply(state.params, bn_state, x_test, train=False, **hp.norm_scalars)[0]

        logits = [logits_for(mode) for mode in sig.eval_stats]
        losses = jnp.stack([cross_entropy(z, y_test) for z in logits])
        accuracies = jnp.stack([jnp.mean(jnp.argmax(z, -1) == y_test) for z in logits])
        return losses, accuracies, activation_stats(state, hp, x_test)

    def probe(state: TrainState, seed, hp: HParams, step, x_train, y_train):
        if not sig.probes:
            return jnp.zeros((0,), jnp.float32)
        # The fixed probe batch: the first batch_size training examples.
        x, y = x_train[: sig.batch_size], y_train[: sig.batch_size]

        def loss(params):
            logits, _ = model.apply(params, state.bn_state, x, train=True, **hp.norm_scalars)
            return cross_entropy(logits, y)

        grads = jax.grad(loss)(state.params)
        updates, _ = optimizer(hp).update(grads, state.opt_state, state.params)
        # The rate of the next update, as the schedule sets it (the peak rate only where it is constant).
        lr = recipe.learning_rate(sig.schedule, step, hp.lr, hp.warmup_steps, hp.lr_decay)
        return probes.values(
            sig.probes, loss, state.params, grads, updates, lr, sig.norm_layers, state.bn_state,
            lambda: precise_bn_state(state, seed, hp, x_train),
        )

    def run(seed, hp: HParams, x_train, y_train, x_test, y_test) -> RunOutput:
        data_key, steps_per_epoch = _keys(seed)[1], sig.num_train // sig.batch_size

        def train_step(carry, step_number):
            # The indices of batch_indices, but each epoch's permutation is drawn once, when the epoch
            # starts, and carried: drawing them per evaluation interval sorted each one up to 3 times,
            # a fifth of the training time of a small MLP (`make bench-sweep`). The step number is the
            # same in every run of a vmapped chunk, so the condition stays a branch, not a select.
            state, order = carry
            epoch, position = jnp.divmod(step_number, steps_per_epoch)
            order = jax.lax.cond(
                position == 0, lambda: epoch_order(data_key, epoch, sig.num_train), lambda: order
            )
            idx = jax.lax.dynamic_slice(order, (position * sig.batch_size,), (sig.batch_size,))
            state, loss = step(state, idx, hp, x_train, y_train)
            return (state, order), loss

        def segment(carry, start, length):
            carry, losses = jax.lax.scan(train_step, carry, start + jnp.arange(length))
            state = carry[0]
            measured = (
                *evaluate(state, seed, hp, x_train, x_test, y_test), probe(state, seed, hp, start + length, x_train, y_train)
            )
            return carry, (losses, *measured)

        first = init(seed, hp)
        num_segments, remainder = divmod(sig.steps, sig.eval_every)
        starts = jnp.arange(num_segments) * sig.eval_every
        no_order = jnp.zeros(sig.num_train, jnp.int32)  # replaced at step 0, where the first epoch begins
        carry, (losses, *evaluations) = jax.lax.scan(
            lambda c, start: segment(c, start, sig.eval_every), (first, no_order), starts
        )
        losses = losses.reshape(-1)
        if remainder:
            _, (last_losses, *last) = segment(carry, num_segments * sig.eval_every, remainder)
            losses = jnp.concatenate([losses, last_losses])
            evaluations = [jnp.concatenate([e, x[None]]) for e, x in zip(evaluations, last)]
        *evaluations, probed = evaluations
        probed = jnp.concatenate([probe(first, seed, hp, 0, x_train, y_train)[None], probed])
        return RunOutput(losses, *evaluations, probed)

    return Program(init, indices, step, evaluate, probe, precise_bn_state, run)


def device_data(data: Dataset, device: jax.Device | None = None) -> tuple[jax.Array, ...]:
    """The data set's four arrays on ``device`` (default: the default device)."""
    return tuple(jax.device_put(a, device) for a in (data.x_train, data.y_train, data.x_test, data.y_test))

"""The training program: init, train step, evaluation, and a whole run as one ``lax.scan``.

A run is ``init -> steps x train step -> evaluate every eval_every steps``. Everything that changes
array shapes or the traced program (the :class:`bnbench.training.signature.Signature`) is static; the seed and
the scalar hyperparameters (:class:`bnbench.training.signature.HParams`) are traced arguments, so every run
that shares a signature can share one XLA compilation. Batches are gathered by index from device-resident data; each epoch is a
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

With ``probes``, :mod:`bnbench.training.probes` measures at step 0 and at every evaluation on a fixed probe batch
(the first ``batch_size`` training examples). With ``noisy_bn``, ``dropout`` or ``augment``, every
training step draws its noise, dropout masks and crops from the run's own stream (its initialization
key folded with a constant, split every step), so that both engines, and a resumed sweep, see the
same draws. The learning rate of each update follows the run's schedule (:mod:`bnbench.training.recipe`).

The program returns a :class:`ProgramOutput` (arrays); :mod:`bnbench.training.outcomes` turns it into a
:class:`bnbench.training.outcomes.RunResult` on the host.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnbench.norm import bn
from bnbench.training import probes
from bnbench.training import recipe
from bnbench.data.registry import Dataset
from bnbench.models import Model
from bnbench.models.convolution import with_kernel
from bnbench.training.optimizers import make_optimizer
from bnbench.training.signature import HParams, Signature

ACTIVATION_STATS = ("p15", "p50", "p85", "mean", "std")


class ProgramOutput(NamedTuple):
    """The arrays one compiled run returns: per-step minibatch losses and per-eval-point test metrics."""

    train_losses: jax.Array  # (steps,)
    test_loss: jax.Array  # (num_evals, eval_stats modes)
    test_acc: jax.Array  # (num_evals, eval_stats modes)
    activations: jax.Array  # (num_evals, hidden layers, 5) if tracked, else (num_evals, 0, 5)
    probes: jax.Array  # (1 + num_evals, probe values): at step 0, then at each evaluation


ACTIVATION_EXAMPLES = 512  # the fixed evaluation batch of activation statistics: the first test examples


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


def _keys(seed) -> tuple[jax.Array, jax.Array]:
    """The (initialization, data order) keys of a seed."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, data_key


# Folded into the initialization key: the stream of the training steps' draws (noise, dropout,
# augmentation); then into each step's key, one constant per use (noise takes the step's key itself).
_STEP_STREAM = 0x6E6F6973
_DROPOUT_STREAM = 0x64726F70
_AUGMENT_STREAM = 0x61756720
_MODEL_STREAM = 0x6D6F646C


class Program(NamedTuple):
    """The pure functions of one signature's training program (none of them jitted).

    ``init(seed, hp) -> TrainState``; ``batch_indices(seed, start, length) -> (length, batch)`` (``length``
    static); ``step(state, idx, hp, x_train, y_train) -> (state, loss)``; ``evaluate(state, seed, hp,
    x_train, x_test, y_test) -> (loss, accuracy, activation statistics)``; ``probe(state, seed, hp,
    step, x_train, y_train) -> probe values`` after ``step`` updates (:mod:`bnbench.training.probes`; empty
    without probes); ``run(seed, hp, x_train, y_train, x_test, y_test) -> ProgramOutput`` runs every
    step, evaluation and probe with ``lax.scan``. The engines in :mod:`bnbench.engine` drive either
    ``run`` (vmapped) or the others from a Python loop (stepwise): the same math.
    """

    sig: Signature
    model: Model

    def optimizer(self, hp: HParams) -> optax.GradientTransformation:
        sig = self.sig
        return make_optimizer(sig.optimizer, hp, sig.bn_weight_decay, sig.schedule, sig.nesterov, sig.init == "fixup",
                              sig.optimizer_static, sig.optimizer_traced)

    def init(self, seed, hp: HParams) -> TrainState:
        init_key = _keys(seed)[0]
        params, bn_state = self.model.init(init_key)
        key = jax.random.fold_in(init_key, _STEP_STREAM) if self.sig.step_randomness else None
        return TrainState(params, bn_state, self.optimizer(hp).init(params), key)

    def batch_indices(self, seed, start, length: int):
        return batch_indices(_keys(seed)[1], start, length, self.sig.num_train, self.sig.batch_size)

    def _draws(self, state: TrainState, hp: HParams, x):
        """This step's randomness: ``(keyword arguments of apply, augmented x, the next step's key)``; a
        plugin network gets a key of its own (``model_key``)."""
        sig = self.sig
        if not sig.step_randomness:
            return {}, x, None
        next_key, key = jax.random.split(state.key)
        draws = {}
        if sig.noisy_bn:
            draws |= dict(noise_key=key, noise_strength=hp.noisy_bn)
        if sig.dropout:
            draws |= dict(dropout_key=jax.random.fold_in(key, _DROPOUT_STREAM), dropout_rate=hp.dropout)
        if sig.augment == "crop_flip":
            x = recipe.crop_flip(jax.random.fold_in(key, _AUGMENT_STREAM), x)
        if sig.plugin:
            draws |= dict(model_key=jax.random.fold_in(key, _MODEL_STREAM))
        return draws, x, next_key

    def step(self, state: TrainState, idx, hp: HParams, x_train, y_train):
        draws, x, next_key = self._draws(state, hp, x_train[idx])

        def loss_fn(params):
            logits, bn_state = self.model.apply(params, state.bn_state, x, train=True, bn_settings=hp.bn_settings,
                                                **draws)
            return cross_entropy(logits, y_train[idx]), bn_state

        (loss, bn_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer(hp).update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), bn_state, opt_state, next_key), loss

    def activation_stats(self, state: TrainState, hp: HParams, x_test):
        if not self.sig.track_activations:
            return jnp.zeros((0, len(ACTIVATION_STATS)), jnp.float32)
        preacts = self.model.preactivations(state.params, state.bn_state, x_test[:ACTIVATION_EXAMPLES],
                                            bn_settings=hp.bn_settings)
        return jnp.stack(
            [
                jnp.concatenate([jnp.percentile(a, jnp.array([15.0, 50.0, 85.0])), jnp.stack([a.mean(), a.std()])])
                for a in preacts
            ]
        )

    def precise_bn_state(self, state: TrainState, seed, hp: HParams, x_train):
        def batch_statistics(idx):
            # With momentum 0 the updated state is exactly the batch's statistics.
            settings = hp.bn_settings._replace(momentum=jnp.zeros((), jnp.float32))
            return self.model.apply(state.params, state.bn_state, x_train[idx], train=True, bn_settings=settings)[1]

        per_batch = jax.lax.map(batch_statistics, self.batch_indices(seed, self.sig.steps, self.sig.precise_batches))
        return [
            bn.BNState(mean=s.mean.mean(0), var=s.var.mean(0) + s.mean.var(0), count=old.count)
            for s, old in zip(per_batch, state.bn_state)
        ]

    def batch_stats_logits(self, state: TrainState, hp: HParams, x_test):
        size = self.sig.norm.ghost_batch_size or self.sig.batch_size
        full = x_test.shape[0] // size * size

        def logits_of(x):
            return self.model.apply(state.params, state.bn_state, x, train=False, eval_stats="batch",
                                    bn_settings=hp.bn_settings)[0]

        logits = jax.vmap(logits_of)(x_test[:full].reshape(-1, size, *x_test.shape[1:])).reshape(full, -1)
        if full < x_test.shape[0]:
            logits = jnp.concatenate([logits, logits_of(x_test[full:])])
        return logits

    def _logits(self, mode: str, state: TrainState, seed, hp: HParams, x_train, x_test):
        if mode == "batch":
            return self.batch_stats_logits(state, hp, x_test)
        bn_state = self.precise_bn_state(state, seed, hp, x_train) if mode == "precise" else state.bn_state
        return self.model.apply(state.params, bn_state, x_test, train=False, bn_settings=hp.bn_settings)[0]

    def evaluate(self, state: TrainState, seed, hp: HParams, x_train, x_test, y_test):
        logits = [self._logits(mode, state, seed, hp, x_train, x_test) for mode in self.sig.eval_stats]
        losses = jnp.stack([cross_entropy(z, y_test) for z in logits])
        accuracies = jnp.stack([jnp.mean(jnp.argmax(z, -1) == y_test) for z in logits])
        return losses, accuracies, self.activation_stats(state, hp, x_test)

    def probe(self, state: TrainState, seed, hp: HParams, step, x_train, y_train):
        sig = self.sig
        if not sig.probes:
            return jnp.zeros((0,), jnp.float32)
        # The fixed probe batch: the first batch_size training examples.
        x, y = x_train[: sig.batch_size], y_train[: sig.batch_size]

        def loss(params):
            logits, _ = self.model.apply(params, state.bn_state, x, train=True, bn_settings=hp.bn_settings)
            return cross_entropy(logits, y)

        grads = jax.grad(loss)(state.params)
        updates, _ = self.optimizer(hp).update(grads, state.opt_state, state.params)
        # The rate of the next update, as the schedule sets it (the peak rate only where it is constant).
        lr = recipe.learning_rate(sig.schedule, step, hp.lr, hp.warmup_steps, hp.lr_decay)
        return probes.values(
            sig.probes, loss, state.params, grads, updates, lr, sig.norm_layers, state.bn_state,
            lambda: self.precise_bn_state(state, seed, hp, x_train), self.model.weights,
        )

    def _scan_step(self, carry, step_number, data_key, hp: HParams, x_train, y_train):
        # The indices of batch_indices, but each epoch's permutation is drawn once, when the epoch
        # starts, and carried: drawing them per evaluation interval sorted each one several times, a
        # sizeable part of a small MLP's training (`make bench-sweep`). The step number is the same in
        # every run of a vmapped block, so the condition stays a branch, not a select.
        state, order = carry
        epoch, position = jnp.divmod(step_number, self.sig.num_train // self.sig.batch_size)
        order = jax.lax.cond(position == 0, lambda: epoch_order(data_key, epoch, self.sig.num_train), lambda: order)
        idx = jax.lax.dynamic_slice(order, (position * self.sig.batch_size,), (self.sig.batch_size,))
        state, loss = self.step(state, idx, hp, x_train, y_train)
        return (state, order), loss

    def _segment(self, carry, start, length: int, keys, hp: HParams, x_train, y_train, x_test, y_test):
        """``length`` training steps from step ``start``, then an evaluation and a probe; ``keys`` is
        ``(seed, data order key)``."""
        seed, data_key = keys
        scan_step = functools.partial(self._scan_step, data_key=data_key, hp=hp, x_train=x_train, y_train=y_train)
        carry, losses = jax.lax.scan(scan_step, carry, start + jnp.arange(length))
        state = carry[0]
        measured = (
            *self.evaluate(state, seed, hp, x_train, x_test, y_test),
            self.probe(state, seed, hp, start + length, x_train, y_train),
        )
        return carry, (losses, *measured)

    def run(self, seed, hp: HParams, x_train, y_train, x_test, y_test) -> ProgramOutput:
        data, keys = (x_train, y_train, x_test, y_test), (seed, _keys(seed)[1])
        first = self.init(seed, hp)
        num_segments, remainder = divmod(self.sig.steps, self.sig.eval_every)
        starts = jnp.arange(num_segments) * self.sig.eval_every
        no_order = jnp.zeros(self.sig.num_train, jnp.int32)  # replaced at step 0, where the first epoch begins
        carry, (losses, *evaluations) = jax.lax.scan(
            lambda c, start: self._segment(c, start, self.sig.eval_every, keys, hp, *data), (first, no_order), starts
        )
        losses = losses.reshape(-1)
        if remainder:
            _, (last_losses, *last) = self._segment(carry, num_segments * self.sig.eval_every, remainder, keys, hp, *data)
            losses = jnp.concatenate([losses, last_losses])
            evaluations = [jnp.concatenate([e, x[None]]) for e, x in zip(evaluations, last)]
        *evaluations, probed = evaluations
        probed = jnp.concatenate([self.probe(first, seed, hp, 0, x_train, y_train)[None], probed])
        return ProgramOutput(losses, *evaluations, probed)


def make_program(sig: Signature, conv: str = "xla") -> Program:
    """Builds the training program of ``sig``, its convolutions XLA's (``conv`` ``"xla"``, or ``"none"``
    for a network without any) or rewritten to another kernel (``"patches"``, ``"onednn"``:
    :func:`bnbench.models.convolution.with_kernel`)."""
    model = sig.make_model()
    if conv not in ("xla", "none"):
        model = model._replace(apply=with_kernel(model.apply, conv), preactivations=with_kernel(model.preactivations, conv))
    return Program(sig, model)


def device_data(data: Dataset, device: jax.Device | None = None) -> tuple[jax.Array, ...]:
    """The data set's four arrays on ``device`` (default: the default device)."""
    return tuple(jax.device_put(a, device) for a in (data.x_train, data.y_train, data.x_test, data.y_test))

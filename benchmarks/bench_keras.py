"""A Keras tutorial CNN on MNIST: bnbench's placement sweep over it against Keras's own ``model.fit``.

The network is the Sequential CNN of the Keras tutorials, as written there: ``Conv2D(32, (3, 3),
activation="relu")``, ``BatchNormalization()``, ``MaxPooling2D``, the same with 64 channels,
``Flatten`` and ``Dense(10, activation="softmax")``. bnbench runs it through ``bnbench.adapters.keras``
on real MNIST (the IDX files in ``--data-dir``, by default ``../shared/data`` beside the repository;
the benchmark says so and stops where they are missing) with ``placement`` pre, post and none over 3
seeds; ``post`` is the model as written. The same runs are then trained by Keras itself, one after
another (``pre`` and ``none`` written as Keras models of their own), each as a tutorial does: ``model.compile`` with ``keras.optimizers.SGD`` and
``sparse_categorical_crossentropy`` on the probabilities, ``model.fit``, ``model.evaluate``, and
Keras's own BatchNormalization (momentum 0.99, epsilon 1e-3, which the bnbench runs are given too). Each
starts from the weights bnbench's run of that seed starts from and sees the batches in bnbench's
order (the same arrays, standardized as bnbench loads them), so the two differ only in who trains.

Printed: per placement, the mean test accuracy under bnbench and under ``model.fit`` and their
difference (for ``post`` within 0.01 is the claim), every run's accuracy, and the wall time of the
bnbench sweep (9 runs, in this process through ``bnbench.engine.run_all``, as ``bnbench sweep`` trains)
against that of the same 9 runs trained by ``model.fit``, compilation included on both sides.

Usage: ``make bench-keras`` or ``python benchmarks/bench_keras.py [--steps N] [--data-dir DIR]``
(needs Keras: ``pip install 'bnbench[keras]'``).
"""

import argparse
import tempfile
import time
from pathlib import Path

from bnbench import adapters, plugin  # before keras: bnbench selects Keras's JAX backend

import jax
import keras
import numpy as np
from keras import layers

from bnbench import engine
from bnbench.data import registry
from bnbench.sweeping import plan
from bnbench.training.program import batch_indices

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
NUM_SAMPLES, BATCH, LR, SGD_MOMENTUM, SEEDS = 14000, 64, 0.01, 0.9, 3
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3  # Keras's BatchNormalization defaults


def tutorial_cnn(input_shape: tuple[int, ...], classes: int, placement: str = "post") -> keras.Model:
    """The tutorial's CNN (``placement="post"``), or, written for Keras itself to train, the same with
    BatchNormalization before the ReLU (``"pre"``) or without it (``"none"``)."""

    def block(channels: int) -> list:
        if placement == "post":
            return [layers.Conv2D(channels, (3, 3), activation="relu"), layers.BatchNormalization()]
        norm = [layers.BatchNormalization()] if placement == "pre" else []
        return [layers.Conv2D(channels, (3, 3)), *norm, layers.Activation("relu")]

    return keras.Sequential([
        keras.Input(input_shape),
        *block(32),
        layers.MaxPooling2D((2, 2)),
        *block(64),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ])


def tutorial_net(ctx: plugin.Context) -> plugin.Network:
    """The tutorial CNN as a bnbench plugin."""
    return adapters.keras(lambda: tutorial_cnn(ctx.input_shape, ctx.num_classes))


SPEC = f"""name = "keras_tutorial"
model = "{Path(__file__).resolve()}:tutorial_net"
dataset = "mnist"
num_samples = {NUM_SAMPLES}
batch_size = {BATCH}
steps = {{steps}}
eval_every = {{steps}}
seeds = {SEEDS}
optimizer = "sgd"
lr = {LR}
optimizer_momentum = {SGD_MOMENTUM}
momentum = {BN_MOMENTUM}
epsilon = {BN_EPSILON}

[grid]
placement = ["pre", "post", "none"]
"""


def bnbench_sweep(steps: int, data_dir: Path) -> tuple[list, float]:
    """The sweep's ``(config, result)`` pairs and its wall time in seconds."""
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "keras_tutorial.toml"
        spec.write_text(SPEC.format(steps=steps))
        configs = plan.load_checked(spec).expand()
        start = time.perf_counter()
        runs = list(engine.run_all(configs, data_dir=data_dir))
        return runs, time.perf_counter() - start


def keras_fit(seed: int, placement: str, steps: int, data: registry.Dataset) -> float:
    """The test accuracy of one run trained by ``model.fit`` from bnbench's initial weights and batches of ``seed``."""
    init_key, order_key = jax.random.split(jax.random.PRNGKey(seed))  # as bnbench.training.program splits a seed
    ctx = plugin.Context(data.input_shape, data.num_classes, np.float32)
    model = tutorial_cnn(data.input_shape, data.num_classes, placement)
    norms = {id(v) for layer in model.layers if isinstance(layer, layers.BatchNormalization) for v in layer.weights}
    trained = [v for v in model.trainable_variables if id(v) not in norms]  # the adapted network's parameters
    for variable, value in zip(trained, tutorial_net(ctx).init(init_key), strict=True):
        variable.assign(np.asarray(value))  # a copy: model.fit donates its variables' buffers
    order = np.asarray(batch_indices(order_key, 0, steps, len(data.x_train), BATCH)).reshape(-1)
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=SGD_MOMENTUM), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.x_train[order], data.y_train[order], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return float(model.evaluate(data.x_test, data.y_test, batch_size=1000, verbose=0)[1])


def _listed(accuracies) -> str:
    return ", ".join(f"{a:.4f}" for a in accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    if not (args.data_dir / "mnist" / "train-images-idx3-ubyte.gz").exists():
        print(f"skipped: no MNIST under {args.data_dir / 'mnist'} (its four IDX .gz files; --data-dir DIR)")
        return
    runs, sweep_s = bnbench_sweep(args.steps, args.data_dir)
    assert all(result.status == "ok" for _, result in runs), [result.status for _, result in runs]
    data = registry.load("mnist", NUM_SAMPLES, args.data_dir)
    start = time.perf_counter()
    fitted = {(config.placement, config.seed): keras_fit(config.seed, config.placement, args.steps, data)
              for config, _ in runs}
    fit_s = time.perf_counter() - start

    print(f"MNIST, {len(data.x_train)} training and {len(data.x_test)} test images, {args.steps} SGD steps of "
          f"{BATCH}, {SEEDS} seeds; jax {jax.__version__}, keras {keras.__version__}, {jax.devices()[0].device_kind}")
    for placement in ("pre", "post", "none"):
        ours = [result.test_acc for config, result in runs if config.placement == placement]
        theirs = [fitted[placement, config.seed] for config, _ in runs if config.placement == placement]
        gap = np.mean(ours) - np.mean(theirs)
        print(f"  placement={placement:<4}  bnbench {np.mean(ours):.4f} ({_listed(ours)})  model.fit {np.mean(theirs):.4f} "
              f"({_listed(theirs)})  difference {gap:+.4f}{'  <- the model as written' if placement == 'post' else ''}")
    ours = np.mean([result.test_acc for config, result in runs if config.placement == "post"])
    theirs = np.mean([acc for (placement, _), acc in fitted.items() if placement == "post"])
    print(f"post: bnbench {ours:.4f} vs model.fit {theirs:.4f}, difference {ours - theirs:+.4f} "
          f"({'within' if abs(ours - theirs) <= 0.01 else 'NOT within'} 0.01)")
    print(f"wall time, the same {len(runs)} runs: bnbench sweep {sweep_s:.1f} s, model.fit one after another {fit_s:.1f} s; "
          f"model.fit / bnbench {fit_s / sweep_s:.2f} (compilation included on both sides)")


if __name__ == "__main__":
    main()

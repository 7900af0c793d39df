"""Writes examples/data/signals.npz: a 4-class data set of noisy 1-D signals (sine, square, saw, chirp),
64 samples each, 3000 for training and 600 for testing. bnbench reads it with dataset = "npz:data/signals.npz".

    python examples/make_data.py
"""

from pathlib import Path

import numpy as np


def signals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 1, 64, dtype=np.float32)
    labels = rng.integers(0, 4, n)
    freq = rng.uniform(2, 6, (n, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1)).astype(np.float32)
    wave = np.stack([
        np.sin(2 * np.pi * freq * t + phase),
        np.sign(np.sin(2 * np.pi * freq * t + phase)),
        2 * ((freq * t + phase / (2 * np.pi)) % 1) - 1,
        np.sin(2 * np.pi * freq * t * t * 2 + phase),
    ])[labels, np.arange(n)]
    return (wave + rng.normal(0, 0.6, wave.shape)).astype(np.float32), labels.astype(np.int32)


def main() -> None:
    rng = np.random.default_rng(7)
    x_train, y_train = signals(3000, rng)
    x_test, y_test = signals(600, rng)
    out = Path(__file__).resolve().parent / "data" / "signals.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=4)
    print(out)


if __name__ == "__main__":
    main()

"""The cost of portable numerics: sweep processes with ``--portable`` and ``--native``, in one run.

Jobs: ``make sweep``'s spec (experiments/quickstart.toml, 96 MLP runs), the 24-run grid of ``make
bench-sweep``, a CNN and a ResNet-20 on MNIST-1D (conv nets: the CNN vmapped with its convolutions as
patches, the ResNet stepwise). Each job's spec is swept once per numerics to fill a compilation cache of
this run's own, then ``--repeats`` times more each, the two numerics alternating; printed: each one's
median seconds (whole processes) and the ratio portable / native.

Usage: ``make bench-numerics`` or ``python benchmarks/bench_numerics.py [--repeats N] [--jobs NAME,...]``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnbench import options
from bnbench.training import host

ROOT = Path(__file__).resolve().parent.parent
CONV = """name = "{model}"
dataset = "mnist1d"
model = "{model}"
widths = {widths}
batch_size = 128
optimizer = "sgd"
lr = 0.05
optimizer_momentum = 0.9
steps = {steps}
eval_every = {eval_every}
seeds = 2

[grid]
{axis} = {values}
"""
JOBS = {
    "quickstart": None,
    "bench-sweep": None,
    "cnn": CONV.format(model="cnn", widths=[64, 64, 64], steps=1000, eval_every=200, axis="placement",
                       values='["pre", "post"]'),
    "resnet": CONV.format(model="resnet", widths=[16, 32, 64], steps=200, eval_every=100, axis="norm",
                          values='["batch", "none"]'),
}


def spec_file(job: str, folder: Path) -> Path:
    if job == "quickstart":
        return ROOT / "experiments" / "quickstart.toml"
    if job == "bench-sweep":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_sweep import SPEC

        text = SPEC.format(steps=2000, eval_every=200)
    else:
        text = JOBS[job]
    path = folder / f"{job}.toml"
    path.write_text(text)
    return path


def sweep_seconds(spec: Path, numerics_flag: str, folder: Path) -> float:
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env[options.COMPILE_CACHE_ENV] = str(folder / "cache")
    command = [sys.executable, "-m", "bnbench", "sweep", str(spec), "--out", str(folder / "out"), "--no-plots",
               "--no-resume", numerics_flag]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", default=",".join(JOBS))
    args = parser.parse_args()
    print(f"CPU: {host.host_processor()}; best instruction set {host.host_isa()}; "
          f"{len(os.sched_getaffinity(0))} CPUs")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for job in args.jobs.split(","):
            spec = spec_file(job, folder)
            times = {"--portable": [], "--native": []}
            for flag in times:
                sweep_seconds(spec, flag, folder)  # fills the compilation cache
            for _ in range(args.repeats):
                for flag in times:
                    times[flag].append(sweep_seconds(spec, flag, folder))
            portable, native = (statistics.median(times[flag]) for flag in times)
            print(f"{job:>12}: portable {portable:6.1f} s, native {native:6.1f} s (medians of {args.repeats}); "
                  f"portable / native {portable / native:.2f}x")


if __name__ == "__main__":
    main()

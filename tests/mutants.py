"""Mutation check: deliberate bugs that the test suite must catch.

Each mutant below is one small bug (a flipped sign, an off-by-one, a dropped seed) written as data: a
source snippet, found by searching every ``bnbench/**/*.py`` so that an entry survives a module moving,
its replacement, and the tests that should notice. For each mutant the script copies the tree to a
temporary folder, plants the bug there, and runs its tests with the copy's ``bnbench`` first on the
path. A mutant is *caught* when pytest reports a test failure (exit 1), *survived* when every selected
test still holds (exit 0), *broken* on any other end (collection error, timeout, snippet not found
exactly once). Before any mutant, each selection runs once on an unmutated copy: one that fails there
would catch its mutants for the wrong reason, so they count as broken.

    python tests/mutants.py                   # every mutant (`make mutants`)
    python tests/mutants.py --list            # the mutants and where each snippet is
    python tests/mutants.py --only bn-gradient-sign,merge-drops-a-seed
    python tests/mutants.py --tree /other/checkout --python /other/checkout/.venv/bin/python

Exits 0 only if every mutant was caught. Mutants run one at a time: each selection's tests already use
the machine's cores. Named so that pytest's ``test_*.py`` pattern does not collect it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

# A selection still running after this long has hung: each is chosen to take a minute or two.
TIMEOUT_S = 600
# Folders at the top of the tree that a copy leaves out: the environment, history, and sweep outputs.
SKIPPED_AT_TOP = {".venv", ".git", "results", ".hypothesis", ".pytest_cache"}


class Mutant(NamedTuple):
    """One deliberate bug: replace ``find`` (exactly one occurrence in ``bnbench/**/*.py``) with
    ``replace``; ``tests`` (paths from the tree's root) and the ``-k`` expression ``select`` (empty:
    every test of those files) must then fail."""

    name: str
    bug: str
    find: str
    replace: str
    tests: tuple[str, ...]
    select: str = ""


MUTANTS = (
    Mutant("bn-unbiased-variance", "BN normalizes with the unbiased batch variance (divides by m - 1)",
           "var = jnp.mean(jnp.square(_centered(xf, (shift, mean_offset))), axis=reduce_axes)",
           "var = jnp.mean(jnp.square(_centered(xf, (shift, mean_offset))), axis=reduce_axes)"
           " * (xf.size / xf.shape[-1]) / (xf.size / xf.shape[-1] - 1)",
           ("tests/test_bn.py",), "momentum_zero or train_forward"),
    Mutant("bn-epsilon-outside-sqrt", "BN divides by sqrt(var) + epsilon instead of sqrt(var + epsilon)",
           "inv = jax.lax.rsqrt(var + epsilon)", "inv = 1 / (jnp.sqrt(var) + epsilon)",
           ("tests/test_bn.py",), "train_forward"),
    Mutant("bn-mean-over-batch-axis-only", "BN takes the mean over the first axis only, not every axis but the channel",
           "mean_offset = jnp.mean(xf - shift, axis=reduce_axes)", "mean_offset = jnp.mean(xf - shift, axis=reduce_axes[:1])",
           ("tests/test_bn.py",), "train_forward"),
    Mutant("bn-gradient-sign", "BN's written-out derivative adds the mean's term instead of subtracting it",
           "dy = dxf * multiplier - dmean * multiplier", "dy = dxf * multiplier + dmean * multiplier",
           ("tests/test_bn.py",), "gradients_match_float64_autodiff"),
    Mutant("bn-momentum-flipped", "running mean uses PyTorch's momentum convention (momentum weighs the batch)",
           "momentum * state.mean + (1 - momentum) * batch_mean", "(1 - momentum) * state.mean + momentum * batch_mean",
           ("tests/test_bn.py",), "train_forward"),
    Mutant("bn-eval-uses-batch-statistics", "evaluation-mode BN normalizes with the batch's statistics",
           "mean, var = state.mean.astype(stat_dtype), state.var.astype(stat_dtype)",
           "mean, var = (jnp.mean(x.astype(stat_dtype), axis=tuple(range(x.ndim - 1))),"
           " jnp.var(x.astype(stat_dtype), axis=tuple(range(x.ndim - 1))))",
           ("tests/test_bn.py",), "eval_uses_running"),
    Mutant("renorm-d-sign", "Batch Renormalization's shift d has its sign flipped",
           "d = jnp.clip((mean - running_mean) * inv_running, -dmax, dmax)",
           "d = jnp.clip((running_mean - mean) * inv_running, -dmax, dmax)",
           ("tests/test_variants.py",), "renorm_forward"),
    Mutant("ghost-ema-first-ghost-only", "ghost BN's running statistics follow the first sub-batch, not their average",
           "means.mean(axis=0), variances.mean(axis=0)", "means[0], variances[0]",
           ("tests/test_variants.py",), "ghost_batches_are_normalized"),
    Mutant("placement-swapped", "an MLP with placement 'pre' applies its norm after the activation",
           'if self.placement == "post" and self.active:', 'if self.placement == "pre" and self.active:',
           ("tests/test_models.py",), "mlp_matches_numpy"),
    Mutant("warmup-off-by-one", "learning-rate warmup starts one step ahead (lr * (t + 1) / W)",
           "lr * t / jnp.maximum(warmup_steps, 1.0)", "lr * (t + 1) / jnp.maximum(warmup_steps, 1.0)",
           ("tests/test_recipe.py",), "learning_rate_of_every_step"),
    Mutant("block-size-zero", "a block holds 0 runs when one run does not fit the device's memory",
           "return max(1, min(most, fits))", "return min(most, fits)",
           ("tests/test_backends.py",), "block_size_follows"),
    Mutant("data-checksum-of-gzip-bytes", "a content-checked data file's MD5 is taken of the gzip bytes",
           'hashlib.md5(data if file.checks == "content" else raw)', "hashlib.md5(raw)",
           ("tests/test_datasets.py",), "regzipped"),
    Mutant("run-id-ignores-momentum", "the run id hash leaves out the momentum field",
           "fields = dataclasses.asdict(self)",
           'fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "momentum"}',
           ("tests/test_spec.py",), "run_id_is_stable"),
    Mutant("spec-one-seed-too-many", "a spec's seed count n expands to seeds 0..n",
           "return tuple(range(seeds))", "return tuple(range(seeds + 1))",
           ("tests/test_spec.py",), "expansion_is_the_grid"),
    Mutant("spec-last-grid-axis-dropped", "expanding a spec ignores its last grid axis",
           "axes = list(self.grid)", "axes = list(self.grid)[:-1]",
           ("tests/test_spec.py",), "expansion_is_the_grid"),
    Mutant("csv-test-acc-holds-test-loss", "runs.csv's test_acc column holds the test loss",
           "test_acc=result.test_acc,", "test_acc=result.test_loss,",
           ("tests/test_sweep.py",), "sweep_writes_csvs"),
    Mutant("resume-forgets-first-run", "resume forgets the grid's first finished run and trains it again",
           "r.run_id for r in plan.runs if r.run_id in done", "r.run_id for r in plan.runs[1:] if r.run_id in done",
           ("tests/test_sweep.py",), "rerun_skips"),
    Mutant("merge-drops-a-seed", "merge leaves out every run of seed 1",
           "ranked = sorted(chosen, key=lambda run_id: order[run_id])",
           'ranked = sorted((r for r in chosen if chosen[r][1]["seed"] != "1"), key=lambda run_id: order[run_id])',
           ("tests/test_evidence.py",), "merge_names_the_folders"),
    Mutant("lock-shared", "the results folder's lock is shared, so two sweeps write one folder",
           "fcntl.LOCK_EX | fcntl.LOCK_NB", "fcntl.LOCK_SH | fcntl.LOCK_NB",
           ("tests/test_reproducibility.py",), "second_sweep_into"),
    Mutant("paired-t-degrees-of-freedom", "t intervals use n degrees of freedom instead of n - 1",
           "t_quantile(1 - alpha / 2, int(n) - 1)", "t_quantile(1 - alpha / 2, int(n))",
           ("tests/test_evidence.py",), "compare_at_two_pairs"),
    Mutant("paired-difference-sign", "the paired difference is b - a instead of a - b",
           'return pairs.assign(_diff=pairs[f"{metric}_a"] - pairs[f"{metric}_b"])',
           'return pairs.assign(_diff=pairs[f"{metric}_b"] - pairs[f"{metric}_a"])',
           ("tests/test_evidence.py",), "names_a_direction"),
    Mutant("verdict-direction-flipped", "a positive mean difference is called 'lower'",
           '"higher" if row["mean_diff"] > 0 else "lower"', '"lower" if row["mean_diff"] > 0 else "higher"',
           ("tests/test_evidence.py",), "names_a_direction"),
    Mutant("alpha-spending-cumulative", "each sequential look spends the cumulative alpha, not its own share",
           "alpha * (n - previous) / maximum", "alpha * n / maximum",
           ("tests/test_sequential.py",), "spends_its_alpha"),
    Mutant("onednn-padding-swapped", "oneDNN's convolutions take the high padding for the low one",
           "lo, hi = (np.asarray([p[i] for p in padding], np.int64) for i in (0, 1))",
           "lo, hi = (np.asarray([p[i] for p in padding], np.int64) for i in (1, 0))",
           ("tests/test_convolution.py",), "onednn and float64_definition"),
    Mutant("onednn-in-portable-numerics", "portable runs convolve with oneDNN, whose bits follow the CPU",
           'usable = _onednn_usable(sig, platform, numerics)', 'usable = _onednn_usable(sig, platform, "native")',
           ("tests/test_deep_runs.py",), "onednns_convolutions"),
)


def locate(tree: Path, snippet: str) -> list[tuple[Path, int]]:
    """Each ``bnbench/**/*.py`` file of ``tree`` holding ``snippet``, with how many times it does."""
    found = []
    for path in sorted((tree / "bnbench").rglob("*.py")):
        count = path.read_text(encoding="utf-8").count(snippet)
        if count:
            found.append((path.relative_to(tree), count))
    return found


def where(tree: Path, mutant: Mutant) -> tuple[Path | None, str]:
    """The one file holding the mutant's snippet, or None and why not."""
    found = locate(tree, mutant.find)
    total = sum(count for _, count in found)
    if total == 1:
        return found[0][0], ""
    if not found:
        return None, "snippet not found"
    return None, f"snippet found {total} times ({', '.join(str(path) for path, _ in found)})"


def copy_tree(tree: Path, destination: Path) -> None:
    """Copies ``tree`` to ``destination``, leaving out :data:`SKIPPED_AT_TOP` and bytecode caches."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        skipped = {"__pycache__"}
        if Path(folder) == tree:
            skipped |= SKIPPED_AT_TOP
        return skipped & set(names)

    shutil.copytree(tree, destination, ignore=ignored, symlinks=True)


def plant(copy: Path, relative: Path, mutant: Mutant) -> None:
    """Replaces the mutant's snippet in ``copy``'s file ``relative``."""
    path = copy / relative
    path.write_text(path.read_text(encoding="utf-8").replace(mutant.find, mutant.replace), encoding="utf-8")


def run_tests(python: str, copy: Path, tests: tuple[str, ...], select: str) -> int | None:
    """pytest's exit status for ``tests`` (``-k select``) in ``copy`` with the copy's ``bnbench`` first
    on the path, or None if it ran past :data:`TIMEOUT_S` (its whole process group is then killed)."""
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests, *(["-k", select] if select else [])]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        return process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def outcome(status: int | None) -> str:
    """A pytest exit status as the mutant's outcome: 1 (a test failed) caught, 0 survived."""
    if status is None:
        return f"broken (ran past {TIMEOUT_S} s)"
    return {0: "survived", 1: "caught"}.get(status, f"broken (pytest exit {status})")


def unmutated_problems(tree: Path, python: str, mutants: list[Mutant]) -> dict[tuple, str]:
    """Runs each distinct selection of ``mutants`` on one unmutated copy of ``tree``; returns why each
    selection that does not hold there fails, by ``(tests, select)``."""
    problems = {}
    with tempfile.TemporaryDirectory(prefix="bnbench-mutants-") as folder:
        copy = Path(folder) / "tree"
        copy_tree(tree, copy)
        for selection in dict.fromkeys((m.tests, m.select) for m in mutants):
            status = run_tests(python, copy, *selection)
            if status == 1:
                problems[selection] = "broken (a selected test fails unmutated)"
            elif status != 0:
                problems[selection] = outcome(status)
    return problems


def try_mutant(tree: Path, python: str, mutant: Mutant) -> str:
    """Plants ``mutant`` in a fresh copy of ``tree`` and returns its outcome."""
    relative, problem = where(tree, mutant)
    if relative is None:
        return f"broken ({problem})"
    with tempfile.TemporaryDirectory(prefix="bnbench-mutant-") as folder:
        copy = Path(folder) / "tree"
        copy_tree(tree, copy)
        plant(copy, relative, mutant)
        return outcome(run_tests(python, copy, mutant.tests, mutant.select))


def list_mutants(tree: Path, mutants: list[Mutant]) -> None:
    """Prints each mutant's name, the file holding its snippet (or why none does), bug and selection."""
    for mutant in mutants:
        relative, problem = where(tree, mutant)
        selection = " ".join(mutant.tests) + (f" -k {mutant.select!r}" if mutant.select else "")
        print(f"{mutant.name:<30} {str(relative or problem):<36} {mutant.bug}  [{selection}]")


def chosen(only: str | None) -> list[Mutant]:
    """The mutants named in ``only`` (comma-separated), or all; exits 2 naming an unknown one."""
    if not only:
        return list(MUTANTS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    by_name = {m.name: m for m in MUTANTS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        sys.exit(f"--only: no mutant named {', '.join(unknown)} (see --list)")
    return [by_name[name] for name in names]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Plants deliberate bugs in copies of the tree and checks that the "
                                                 "tests catch each one.")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository to copy and mutate (default: the one holding this script)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs pytest (one with bnbench's test dependencies)")
    parser.add_argument("--only", help="comma-separated mutant names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the mutants and where each snippet is, run nothing")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="skip running the selections on the unmutated tree first (when known to hold)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    tree, mutants = args.tree.resolve(), chosen(args.only)
    if args.list:
        list_mutants(tree, mutants)
        return 0
    started = time.monotonic()
    problems = {}
    if not args.skip_baseline:
        print(f"running the {len({(m.tests, m.select) for m in mutants})} selections on the unmutated tree first",
              flush=True)
        problems = unmutated_problems(tree, args.python, mutants)
    counts = {"caught": 0, "survived": 0, "broken": 0}
    for mutant in mutants:
        begin = time.monotonic()
        result = problems.get((mutant.tests, mutant.select)) or try_mutant(tree, args.python, mutant)
        counts[result.split()[0]] += 1
        print(f"{result:<10} {mutant.name:<30} {time.monotonic() - begin:6.1f} s  {mutant.bug}", flush=True)
    print(f"took {time.monotonic() - started:.0f} s")
    broken = f", {counts['broken']} broken" if counts["broken"] else ""
    print(f"{counts['caught']} caught, {counts['survived']} survived{broken}")
    return 0 if counts["caught"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())

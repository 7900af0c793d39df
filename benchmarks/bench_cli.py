"""Start-up of the ``bnbench`` command: the median wall time of 5 runs of each command, against its target.

``bnbench --help`` (target 0.3 s), ``bnbench sweep experiments/quickstart.toml --dry-run`` (1.0 s) and
``bnbench report results/quickstart --no-plots`` (1.5 s); the last needs the quickstart's results, which
``make sweep`` writes (this script runs it first if they are missing). Usage: ``make bench-cli``.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [
    (["--help"], 0.3),
    (["sweep", "experiments/quickstart.toml", "--dry-run"], 1.0),
    (["report", "results/quickstart", "--no-plots"], 1.5),
]
REPEATS = 5


def seconds(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bnbench", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    if not Path("results/quickstart/runs.csv").is_file():
        print("results/quickstart is missing: running the quickstart sweep first")
        subprocess.run([sys.executable, "-m", "bnbench", "sweep", "experiments/quickstart.toml", "--no-plots"], check=True)
    for args, target in COMMANDS:
        times = [seconds(args) for _ in range(REPEATS)]
        median = statistics.median(times)
        verdict = "met" if median <= target else "MISSED"
        print(f"bnbench {' '.join(args):<52} median {median:.2f} s of {REPEATS} (min {min(times):.2f}, "
              f"max {max(times):.2f}); target {target} s: {verdict}")


if __name__ == "__main__":
    main()

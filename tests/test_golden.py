"""Golden results: the portable spec's runs, reproduced bitwise by whichever machine tests a change.

``tests/golden/portable-runs.csv`` is ``runs.csv`` of ``tests/golden/portable.toml`` swept with
``--portable`` (``tests/golden/README.md`` says on which CPU, and how to make it again). CI runs on
whatever machine tests the change, and those machines differ, so every CI run is a cross-machine check of
portable numerics (:mod:`bnbench.training.numerics`).
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bnbench.results.metrics import RUN_METRICS
from bnbench.training import context, host

GOLDEN = Path(__file__).parent / "golden"
COMPARED = ("status", "diverged_step", *RUN_METRICS)
CONTEXT = ("execution", "runs_per_device", *context.MACHINE_FIELDS, "data_source")


def rows_by_run(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as file:
        return {row["run_id"]: row for row in csv.DictReader(file)}


def differences(golden: dict[str, dict], here: dict[str, dict]) -> str:
    """Where ``here`` is not ``golden``: the runs missing, the metric columns that differ (in how many
    runs, by how much at most) and the context fields that differ; "" where the metrics are equal."""
    missing = sorted(golden.keys() - here.keys())
    if missing:
        return f"runs missing here: {missing}"
    columns = {}
    for run_id, row in golden.items():
        for column in COMPARED:
            if row[column] != here[run_id][column]:
                count, gaps = columns.get(column, (0, []))
                columns[column] = (count + 1, [*gaps, _gap(row[column], here[run_id][column])])
    if not columns:
        return ""
    contexts = []
    for name in CONTEXT:
        there, now = (sorted({row[name] for row in rows.values()}) for rows in (golden, here))
        if there != now:
            contexts.append(f"{name} {' | '.join(there)!r} there, {' | '.join(now)!r} here")
    return ("metrics differ from the golden runs in " + "; ".join(
        f"{column} ({count} runs{_most(gaps)})" for column, (count, gaps) in columns.items())
        + f". Context fields that differ: {'; '.join(contexts) or 'none'}. This machine: {host.host_processor()}")


def _most(gaps: list[float]) -> str:
    numbers = [gap for gap in gaps if gap == gap]  # NaN: a cell that is not a number (a status, a diverged run)
    return f", at most {max(numbers):.3g}" if numbers else ""


def _gap(there: str, here: str) -> float:
    """How far apart two cells are: their numbers' distance, NaN where one is not a number (a status)."""
    try:
        return abs(float(there or "nan") - float(here or "nan"))
    except ValueError:
        return float("nan")


@pytest.mark.unit
def test_differences_name_the_columns_and_the_context_fields_that_differ():
    golden = rows_by_run(GOLDEN / "portable-runs.csv")
    assert differences(golden, golden) == ""
    run_id = next(iter(golden))
    moved = {**golden, run_id: {**golden[run_id], "test_loss": "0.5", "cpu_isa": "AVX512"}}
    text = differences(golden, moved)
    assert "test_loss (1 runs" in text and "test_acc" not in text
    assert "cpu_isa 'AVX2' there, 'AVX2 | AVX512' here" in text
    moved = {r: {**row, "test_acc": "0", "xla_flags": "--xla_cpu_max_isa=AVX"} for r, row in golden.items()}
    assert "xla_flags '--xla_cpu_max_isa=AVX2' there, '--xla_cpu_max_isa=AVX' here" in differences(golden, moved)
    assert differences(golden, {}).startswith("runs missing here")
    diverged = {**golden, run_id: {**golden[run_id], "status": "diverged", "test_acc": ""}}
    assert "status (1 runs); test_acc (1 runs)." in differences(golden, diverged)


@pytest.mark.system
@pytest.mark.skipif(not host.portable_possible(), reason="portable numerics need an x86-64 CPU with AVX2")
def test_the_golden_spec_swept_portably_gives_the_golden_runs_bitwise(tmp_path):
    sweep = subprocess.run([sys.executable, "-m", "bnbench", "sweep", str(GOLDEN / "portable.toml"), "--portable",
                            "--out", str(tmp_path / "portable"), "--no-plots"], capture_output=True, text=True)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    golden, here = rows_by_run(GOLDEN / "portable-runs.csv"), rows_by_run(tmp_path / "portable" / "runs.csv")
    assert len(golden) == 16
    assert not (found := differences(golden, here)), found

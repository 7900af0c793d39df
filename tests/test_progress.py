"""A sweep's progress: on an 80-column terminal the bar keeps its count and times whole and cuts the
last run's text instead; piped, each run's line carries the time left."""

import io
import itertools
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from bnbench.cli import progress
from bnbench.experiment.fields import RunConfig
from bnbench.reporting.progress import track

pytestmark = pytest.mark.unit

# Long enough swept fields that the last run's text alone fills an 80-column line.
AXES = ["placement", "batch_size", "activation", "momentum", "epsilon", "optimizer", "weight_decay"]


def records(count: int) -> list:
    """Finished runs as :func:`bnbench.sweeping.session.execute` yields them (config and result)."""
    return [SimpleNamespace(config=RunConfig(placement="pre", batch_size=32, seed=seed),
                            result=SimpleNamespace(status="ok", test_acc=0.66, wall_s=1.25)) for seed in range(count)]


def test_the_bar_keeps_count_and_eta_whole_at_80_columns():
    terminal = Console(width=80, record=True, file=io.StringIO(), force_terminal=True, color_system=None)
    progress.show(records(3), 3, AXES, terminal)
    last_frame = terminal.export_text().rstrip("\n").split("last: ")[-1]  # each refresh draws the bar again
    assert re.search(r" 3/3 \d+:\d\d:\d\d ETA \d+:\d\d:\d\d$", last_frame), last_frame
    assert "…" in last_frame and len("last: " + last_frame) <= 80


def test_piped_output_gets_one_line_per_run_with_its_eta():
    piped = Console(width=80, file=io.StringIO())
    assert not piped.is_terminal
    progress.show(records(3), 3, AXES, piped)
    lines = piped.file.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("run 1/3 placement=pre batch_size=32 activation=relu ")
    for line in lines:
        assert re.search(r" ok test_acc=0\.6600 wall=1\.25s eta=\d+:\d\d:\d\d \(id [0-9a-f]{12}\)$", line), line


def test_the_eta_is_the_mean_time_per_run_times_the_runs_left():
    clock = itertools.count(0, 10).__next__  # training starts at 0; the runs finish at 10, 20, 30 s
    steps = list(track(records(3), 3, ["placement"], clock=clock))
    assert [(s.index, s.total, s.elapsed_s, s.eta_s) for s in steps] == [(1, 3, 10, 20), (2, 3, 20, 10), (3, 3, 30, 0)]
    assert " eta=0:00:20 " in str(steps[0]) and " eta=0:00:00 " in str(steps[-1])
    assert steps[0].label == "placement=pre seed=0"

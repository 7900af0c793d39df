"""Training an assignment's blocks side by side: one worker thread per slot, results in block order."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Iterator

import jax

from bnbench.engine.blocks import Block, Assignment, pending_blocks
from bnbench.engine.run_block import train_block
from bnbench.experiment.fields import RunConfig
from bnbench.training.outcomes import RunResult


def train_blocks(
    assignment: Assignment,
    *,
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    program_cache: Path | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains the assignment's runs not in ``done``; yields ``(config, result)`` in block order as blocks
    finish, ``result.context`` set. Each slot trains one block at a time (a thread per slot: JAX
    releases the GIL while a device computes; see :func:`bnbench.engine.devices.slots`). Once ``stop``
    is set no new block starts; the blocks in progress finish and are yielded. If a block fails, the
    blocks that finished are yielded, then its error is raised. With ``program_cache`` (a folder)
    traced programs are kept there for later processes."""
    stop = stop or threading.Event()
    for path, segment in itertools.groupby(pending_blocks(assignment, done), key=lambda b: b.context.execution):
        # Stepwise runs drive their device from Python, a call per step: two of them at once contend for
        # the interpreter and ran slower side by side than one after another.
        devices = assignment.devices if path == "vmapped" else assignment.devices[:1]
        yield from _SlotWorkers(list(segment), devices, stop, program_cache).results()
        if stop.is_set():
            return


class _SlotWorkers:
    """Hands blocks to one worker thread per slot, in order, and collects their outcomes."""

    def __init__(self, todo: list[Block], devices, stop: threading.Event, program_cache: Path | None):
        self.todo, self.stop, self.program_cache = todo, stop, program_cache
        self.halt = threading.Event()  # a block failed, or the consumer left
        self.outcomes: dict[int, list | BaseException] = {}
        self.next_index = 0
        self.condition = threading.Condition()
        self.workers = [threading.Thread(target=self._work, args=(d,), daemon=True) for d in devices[: len(todo)]]
        self.running = len(self.workers)

    def _take(self) -> int | None:
        with self.condition:
            if self.stop.is_set() or self.halt.is_set() or self.next_index == len(self.todo):
                return None
            self.next_index += 1
            return self.next_index - 1

    def _work(self, device: jax.Device) -> None:
        arrays: dict[int, tuple] = {}  # the data sets on this device, by id
        try:
            while (index := self._take()) is not None:
                try:
                    outcome = train_block(self.todo[index], device, arrays, self.program_cache)
                except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
                    outcome = err
                with self.condition:
                    self.outcomes[index] = outcome
                    self.condition.notify_all()
        finally:
            with self.condition:
                self.running -= 1
                self.condition.notify_all()

    def results(self) -> Iterator[tuple[RunConfig, RunResult]]:
        """Starts the workers and yields the blocks' runs in block order; once the workers are joined,
        raises the first failed block's error."""
        for worker in self.workers:
            worker.start()
        error = None
        try:
            for index in range(len(self.todo)):
                with self.condition:
                    self.condition.wait_for(lambda: index in self.outcomes or not self.running)
                    outcome = self.outcomes.pop(index, None)
                if outcome is None:  # never started: stopped, or halted by an earlier failure
                    break
                if isinstance(outcome, BaseException):
                    error = error or outcome
                    self.halt.set()
                    continue
                yield from outcome
        finally:
            self.halt.set()  # on a second Ctrl-C too, which leaves at once: the process is ending
        # Workers end once they find no block to take; joined, none is left inside JAX at exit.
        for worker in self.workers:
            worker.join()
        if error is not None:
            raise error

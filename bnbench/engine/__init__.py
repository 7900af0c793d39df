"""The engines that train runs: ``vectorized`` (default) and ``sequential`` (the plain reference path).

Both drive the same :class:`bnbench.training.program.Program`, so they compute the same math.

* ``vectorized``: runs are grouped by compiled signature (:class:`bnbench.training.signature.Signature`
  plus the data set) and each group is cut into fixed-size blocks; a block trains all its runs at once
  on one device (the ``vmapped`` path), and the slots train blocks side by side. Models that
  :func:`bnbench.engine.policy.choose_path` says run faster one at a time take the ``stepwise`` path instead,
  one run per block.
* ``sequential``: one run after another on the first device, stepwise, for debugging and as the
  reference the vectorized engine is tested against.

On CPU the blocks train side by side on the one host device, as many at a time as the process may use
CPUs (:func:`bnbench.engine.devices.slots`).

Modules, lowest first:

* :mod:`bnbench.engine.errors`: what the engine raises.
* :mod:`bnbench.engine.compile_cache`: the persistent compilation cache;
  :mod:`bnbench.engine.trace_cache`: traced programs on disk.
* :mod:`bnbench.engine.devices`: the slots blocks train in.
* :mod:`bnbench.engine.policy`: per platform, which models vmap, the most runs a block holds, the form of
  convolutions and the XLA options.
* :mod:`bnbench.engine.memory`: a run's memory estimate and a device's memory.
* :mod:`bnbench.engine.blocks`: groups, the :class:`Assignment` of runs to blocks and slots (each group's execution context) and its
  blocks (why blocks have a fixed size).
* :mod:`bnbench.engine.programs`: the programs this process compiled or read back, and releasing them.
* :mod:`bnbench.engine.run_block`: one block on one device, vmapped or stepwise.
* :mod:`bnbench.engine.workers`: an assignment's blocks, a worker thread per slot.
* :mod:`bnbench.engine.convenience`: ``run_all`` and ``train_run``, assigning and training in one call.
"""

from bnbench.engine.blocks import Assignment, Group, assign_groups, assign_runs, block_size, group_runs
from bnbench.engine.compile_cache import caches
from bnbench.engine.convenience import run_all, train_run
from bnbench.engine.devices import slots
from bnbench.engine.errors import EngineError, OutOfMemory
from bnbench.engine.memory import device_memory, run_memory
from bnbench.engine.policy import MAX_RUNS_PER_DEVICE, YNN_ELEMENTWISE, choose_path, compiler_options, conv_form
from bnbench.engine.programs import release_programs
from bnbench.engine.workers import train_blocks

__all__ = [
    "MAX_RUNS_PER_DEVICE", "YNN_ELEMENTWISE", "Assignment", "EngineError", "Group", "OutOfMemory", "assign_groups",
    "assign_runs", "block_size", "caches", "choose_path", "compiler_options", "conv_form", "device_memory", "group_runs",
    "release_programs", "run_all", "run_memory", "slots", "train_blocks", "train_run",
]

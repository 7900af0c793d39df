"""`make test-cluster`: docs/cluster.md's SLURM recipe, run as written on a real one-node SLURM.

Starts munged, slurmctld and slurmd on this machine (installing Debian's ``slurm-wlm`` and ``munge``
with apt when ``sbatch`` is missing and this runs as root), then in a scratch project that has this
checkout's ``.venv`` and a small ``experiments/batch_size.toml``:

1. runs the recipe's sweep outside a job array, as the reference, in a SLURM task of one CPU;
2. submits the recipe (4 tasks of 1 CPU instead of 8 of 8), requeues task 1 after its first run (as a
   pre-emption would), cancels task 2 after its first run, checks that SLURM cancelled the merge,
   re-submits task 2 alone as the docs say and merges; each resumed task trained only its missing run;
3. in a second scratch project, cancels tasks 2 and 3 (3 before it starts), checks that the merge
   names them, re-submits ``--array=2,3`` and merges;

and checks that each merge equals the reference bitwise (``runs.csv`` but for ``wall_s``, and
``curves.csv``). Every daemon it started is stopped by its PID at the end. It fails loudly, never
skips: a scheduler that cannot start is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "cluster.md"
TASKS = 4
SPEC = """name = "batch_size"
dataset = "synthetic"
model = "mlp"
widths = [64]
steps = 40000
eval_every = 10000
seeds = 2

[grid]
placement = ["pre", "post"]
batch_size = [16, 64]
"""
# docs/cluster.md's recipe for 8 tasks of 8 CPUs, made one for TASKS tasks of 1 CPU; each must be there.
SMALLER = {"--array=0-7": f"--array=0-{TASKS - 1}", "--cpus-per-task=2": "--cpus-per-task=1",
           "--shard auto/8": f"--shard auto/{TASKS}", "of8": f"of{TASKS}"}


def main() -> int:
    if os.environ.get("BNBENCH_CLUSTER_WORK"):
        work = Path(os.environ["BNBENCH_CLUSTER_WORK"])
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bnbench-slurm-"))
    ensure_installed()
    began = time.monotonic()
    daemons = Daemons(work)
    try:
        daemons.start()
        recipe = Recipe.from_docs(DOCS)
        reference = reference_sweep(work / "reference")
        one_task_cancelled(work / "one", recipe, reference)
        two_tasks_cancelled(work / "two", recipe, reference)
    finally:
        daemons.stop()
    print(f"test-cluster: passed in {time.monotonic() - began:.0f} s (daemons started and stopped; work in {work})")
    return 0


def ensure_installed() -> None:
    """Installs slurm-wlm and munge with apt when sbatch is missing; fails if that is not possible."""
    if shutil.which("sbatch") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("test-cluster: sbatch is not installed and this is not root on a Debian-like system: "
                         "install slurm-wlm and munge")
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=environ, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], check=True, env=environ,
                   stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemons:
    """munged (unless one already answers), slurmctld and slurmd in the foreground, by PID."""

    def __init__(self, work: Path):
        self.work, self.processes = work, []
        self.conf = work / "slurm.conf"
        os.environ["SLURM_CONF"] = str(self.conf)

    def start(self) -> None:
        self._write_conf()
        if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
                Path(folder).mkdir(parents=True, exist_ok=True)
                shutil.chown(folder, "munge", "munge")
            self._spawn("munged", ["runuser", "-u", "munge", "--", "munged", "--foreground"])
            wait_for(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, 20, "munged to answer")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        time.sleep(1)
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        wait_for(lambda: sh("sinfo -h -o %T", check=False).strip() == "idle", 60, "the node to be idle")

    def _write_conf(self) -> None:
        host, cpus = socket.gethostname(), os.cpu_count()
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 2
        for sub in ("state", "spool", "log"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""ClusterName=bnbench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={self.work}/state
SlurmdSpoolDir={self.work}/spool
SlurmctldPidFile={self.work}/slurmctld.pid
SlurmdPidFile={self.work}/slurmd.pid
SlurmctldLogFile={self.work}/log/slurmctld.log
SlurmdLogFile={self.work}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={memory // cpus}
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.work / "log" / f"{name}.out", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))
        time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"test-cluster: {name} exited at once ({(self.work / 'log' / f'{name}.out').read_text()})")

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            print(f"test-cluster: stopped {name} (pid {process.pid})")


class Recipe:
    """docs/cluster.md's SLURM blocks: the batch script, the submission, the re-submission."""

    def __init__(self, script: str, submit: str, resubmit: str):
        self.script, self.submit, self.resubmit = script, submit, resubmit

    @classmethod
    def from_docs(cls, path: Path) -> Recipe:
        blocks = re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
        script = next(b for b in blocks if b.startswith("#!/bin/sh\n#SBATCH"))
        submit = next(b for b in blocks if b.startswith("mkdir -p logs"))
        resubmit = next(b for b in blocks if b.startswith("jobid=$(sbatch --parsable --array="))
        return cls(*(smaller(b) for b in (script, submit, resubmit)))

    def project(self, folder: Path) -> Path:
        """A scratch project: this checkout's .venv, the small spec, sweep.sbatch."""
        (folder / "experiments").mkdir(parents=True)
        (folder / "experiments" / "batch_size.toml").write_text(SPEC)
        (folder / ".venv").symlink_to(ROOT / ".venv")
        (folder / "sweep.sbatch").write_text(self.script)
        return folder


def smaller(block: str) -> str:
    for old, new in SMALLER.items():
        block = block.replace(old, new)
    return block


def sh(command: str, cwd: Path | None = None, check: bool = True) -> str:
    """Runs ``command`` with /bin/sh, as a user pasting the docs' block would; returns its stdout."""
    done = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"test-cluster: `{command}` exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"test-cluster: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def job_states() -> dict[str, str]:
    """The state of each job SLURM still knows, by id (``12``, ``12_3``)."""
    lines = sh("scontrol show job -o", check=False).splitlines()
    states = {}
    for line in lines:
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" not in fields:
            continue
        job = fields["ArrayJobId"] + "_" + fields["ArrayTaskId"] if "ArrayTaskId" in fields else fields["JobId"]
        states[job] = fields["JobState"]
    return states


def queue_empty() -> bool:
    return not sh("squeue -h -o %i", check=False).strip()


def runs_in(folder: Path) -> int:
    path = folder / "runs.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def reference_sweep(folder: Path) -> Path:
    """The spec swept whole, in one SLURM task of one CPU like the array's tasks."""
    folder.mkdir(parents=True)
    (folder / "batch_size.toml").write_text(SPEC)
    sh(f"sbatch --wait --cpus-per-task=1 --output=sweep.out --wrap "
       f"'{ROOT}/.venv/bin/bnbench sweep batch_size.toml --no-plots --out whole'", cwd=folder)
    print(f"test-cluster: reference sweep done ({runs_in(folder / 'whole')} runs)")
    return folder / "whole"


def submit(project: Path, recipe: Recipe) -> tuple[str, str]:
    """Runs the submission block; returns the array's job id and the merge's."""
    out = sh(recipe.submit + "\necho \"array=$jobid\"\n", cwd=project)
    array = re.search(r"array=(\d+)", out).group(1)
    merge = re.search(r"Submitted batch job (\d+)", out).group(1)
    return array, merge


def resubmit(project: Path, recipe: Recipe, tasks: str) -> None:
    """Runs the re-submission block for ``tasks`` (the docs' block re-submits task 3)."""
    assert "--array=3 " in recipe.resubmit, "docs/cluster.md's re-submission block changed"
    sh(recipe.resubmit.replace("--array=3 ", f"--array={tasks} ", 1), cwd=project)


def check_resumed(project: Path, task: int) -> None:
    """The re-submitted task's log says it found its shard's first run done and trained the other."""
    logs = [path.read_text() for path in (project / "logs").glob(f"bnbench-*_{task}.out")]
    assert any(f"2 runs, 1 already in results/batch_size-shard{task}of{TASKS}, 1 to run" in log for log in logs), logs


def requeue_after_first_run(array: str, task: int, project: Path) -> None:
    """Requeues a running task as a pre-emption would, and lets it start again at once (SLURM would
    hold it for a while): same task id, same folder."""
    shard = project / "results" / f"batch_size-shard{task}of{TASKS}"
    wait_for(lambda: runs_in(shard) >= 1, 300, f"task {task}'s first run")
    sh(f"scontrol requeue {array}_{task}")
    assert runs_in(shard) == 1, f"task {task} was requeued with {runs_in(shard)} runs, not mid-run"
    wait_for(lambda: job_states().get(f"{array}_{task}") == "PENDING", 60, f"task {task} to be requeued")
    sh(f"scontrol update jobid={array}_{task} StartTime=now")


def cancel_after_first_run(array: str, task: int, project: Path) -> None:
    shard = project / "results" / f"batch_size-shard{task}of{TASKS}"
    wait_for(lambda: runs_in(shard) >= 1, 300, f"task {task}'s first run")
    sh(f"scancel {array}_{task}")
    wait_for(lambda: job_states().get(f"{array}_{task}", "CANCELLED") not in ("RUNNING", "PENDING", "COMPLETING"),
             60, f"task {task} to end")
    assert 1 <= runs_in(shard) < 2, f"task {task} was cancelled with {runs_in(shard)} runs, not mid-run"


def check_merge_cancelled(merge: str) -> None:
    wait_for(lambda: job_states().get(merge, "CANCELLED") != "PENDING", 60, "SLURM to cancel the merge")
    assert job_states().get(merge, "CANCELLED") == "CANCELLED", f"the merge is {job_states().get(merge)}"


def check_equal(merged: Path, reference: Path) -> None:
    for name in ("runs.csv", "curves.csv"):
        ours, theirs = (csv_without_timing(folder / name) for folder in (merged, reference))
        assert ours == theirs, f"{merged / name} differs from the unsharded sweep's"
    print(f"test-cluster: {merged} equals the unsharded sweep bitwise ({runs_in(merged)} runs)")


def csv_without_timing(path: Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, column in enumerate(rows[0]) if column != "wall_s"]
    return [[row[i] for i in keep] for row in rows]


def one_task_cancelled(project: Path, recipe: Recipe, reference: Path) -> None:
    recipe.project(project)
    array, merge = submit(project, recipe)
    requeue_after_first_run(array, 1, project)
    cancel_after_first_run(array, 2, project)
    check_merge_cancelled(merge)
    wait_for(queue_empty, 300, "the other tasks")
    check_resumed(project, 1)
    resubmit(project, recipe, "2")
    wait_for(queue_empty, 300, "the re-submitted task and the merge")
    check_resumed(project, 2)
    check_equal(project / "results" / "batch_size", reference)


def two_tasks_cancelled(project: Path, recipe: Recipe, reference: Path) -> None:
    recipe.project(project)
    array, merge = submit(project, recipe)
    sh(f"scancel {array}_3")  # before it starts: with fewer CPUs than tasks it is still pending
    cancel_after_first_run(array, 2, project)
    check_merge_cancelled(merge)
    wait_for(queue_empty, 300, "the other tasks")
    merged = sh(f".venv/bin/bnbench merge results/batch_size-shard*of{TASKS} --out results/batch_size "
                "2>&1; echo exit=$?", cwd=project)
    assert "exit=1" in merged and "shards 2, 3" in merged, f"merge with shards 2 and 3 missing: {merged}"
    resubmit(project, recipe, "2,3")
    wait_for(queue_empty, 300, "the re-submitted tasks and the merge")
    check_resumed(project, 2)
    check_equal(project / "results" / "batch_size", reference)


if __name__ == "__main__":
    sys.exit(main())

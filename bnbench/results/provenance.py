"""What a result needs to be reproduced besides its spec: package versions, Python, the git commit."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path

PACKAGES = ("bnbench", "jax", "jaxlib", "optax", "numpy")


def _git_commit() -> str | None:
    """The commit of the bnbench source checkout (``+dirty`` if modified), or None outside git."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=source, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def software() -> dict:
    """Versions of bnbench and its numerical stack, Python, the platform and bnbench's git commit."""
    return {
        "versions": {p: importlib.metadata.version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "platform": platform.platform(),
    }


def now() -> str:
    """The current time in UTC, ISO 8601 to the second, as ``meta.json`` records start and end times."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command() -> str:
    """The command line of this process, as a shell would take it (``bnbench sweep ...``)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])

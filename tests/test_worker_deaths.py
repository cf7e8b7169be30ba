"""A killed runner, workers that die under their jobs and stop signals on the embedded queue: no job
runs twice, none is lost, no engine is left behind and the queue is freed last."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_runs import ROOT, cli_env, ilflows, ilflows_read
from toy_queue import engines_left, engines_of, queue, runs_per_job, states, toy_env


@pytest.fixture(scope="module")
def six_naps(tmp_path_factory) -> Path:
    """A queue of naps of 0, 0, 3, 3, 0 and 0 s that workers take in that order (their priorities).

    Queued once: a test copies the file (the whole queue; it names no folder).
    """
    home = tmp_path_factory.mktemp("six_naps")
    queue(
        home,
        "from jobflow import Flow; from toy_jobs import _queue\n"
        "naps = [nap(i, s) for i, s in enumerate([0.0, 0.0, 3.0, 3.0, 0.0, 0.0])]\n"
        "for i, n in enumerate(naps): n.config.manager_config = {'_priority': len(naps) - i}\n"
        "_queue(Flow(naps, name='naps'), 'naps')",
    )
    return home / "launchpad.json"


def _runner_mid_campaign(queue_file: Path, home: Path, **popen) -> subprocess.Popen:
    """Start a two-worker runner on a copy of ``queue_file`` (six_naps) in ``home``; return it once
    the first two naps are done and the engines of the 3-s ones run."""
    shutil.copy(queue_file, home)
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker", "--workers", "2"],
        env=cli_env(home, **toy_env(home)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )
    for line in runner.stdout:
        if re.search(r"\s2/6\s+jobs done", line):
            break
    deadline = time.time() + 30
    while sum(cmd.startswith("sleep ") for cmd in engines_of(home)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return runner


def test_killed_runner_takes_its_workers_along_and_loses_nothing(six_naps, tmp_path):
    runner = _runner_mid_campaign(six_naps, tmp_path)
    try:  # kill -9 the runner alone while two more jobs run
        assert states(tmp_path) == Counter({"COMPLETED": 2, "RUNNING": 2, "READY": 2})  # on disk
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.wait()
    engines_left(tmp_path, 1.0)
    # its workers (they carry its TOY_LOG too) and their `sleep`s died with it, before the sleeps
    # could end: no orphans on the node, no worker finishes a job later, and the queue is free
    assert engines_of(tmp_path) == []
    assert sum(runs_per_job(tmp_path).values()) == 2
    # completed jobs' run folders went as each completed (the runner never reached its end)
    killed = sorted((tmp_path / "runs").glob("launcher_*"))
    assert [json.loads((f / "FW.json").read_text())["name"] for f in killed] == ["nap", "nap"]
    status = ilflows_read(["status"], tmp_path, ILFLOWS_EMBEDDED_JOB_LIMIT="5")
    assert "note: the embedded queue holds 6 jobs (limit 5)" in status.stdout
    assert status.stdout.count("  lost     nap: its worker stopped") == 2  # nobody holds the queue
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "put back 2 jobs a killed worker left running: nap, nap" in proc.stdout
    assert runs_per_job(tmp_path) == Counter({str(i): 1 for i in range(6)})
    assert states(tmp_path) == Counter({"COMPLETED": 6})
    assert sorted((tmp_path / "runs").glob("launcher_*")) == killed  # the killed attempts stay for a look


def test_a_job_whose_worker_died_runs_again_in_the_same_run(tmp_path):
    queue(tmp_path, "queue_killer(1)")
    proc = ilflows(["worker"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "put back 1 jobs a killed worker left running: kill_worker" in proc.stdout
    assert "queue: 2/2 jobs completed, 0 fizzled" in proc.stdout
    assert runs_per_job(tmp_path) == Counter({"1": 1})  # the nap ran after it, on its output
    launches = json.loads((tmp_path / "launchpad.json").read_text())["ilflows"]["launches"]["documents"]
    assert Counter(launch["state"] for _, launch in launches) == Counter({"COMPLETED": 2, "FIZZLED": 1})


def test_a_job_that_kills_its_worker_twice_fizzles_and_its_children_wait(tmp_path):
    queue(tmp_path, "queue_killer(5)")
    proc = ilflows(["worker"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 1
    assert "queue: 0/2 jobs completed, 1 fizzled" in proc.stdout, proc.stdout
    assert (tmp_path / "kills").read_text().split() == ["killed", "killed"]  # no third try
    status = ilflows_read(["status"], tmp_path).stdout
    assert "fizzled  kill_worker: WorkerDied: its worker died again while running it" in status
    assert "1 jobs wait on them" in status
    assert runs_per_job(tmp_path) == Counter()


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, True)],
)
def test_a_stop_signal_puts_running_jobs_back_and_frees_the_queue_last(six_naps, tmp_path, signum, group):
    """Ctrl-C (the whole group, or the runner alone), walltime's SIGTERM, a closed terminal."""
    # a group of its own, as a shell's foreground job
    runner = _runner_mid_campaign(six_naps, tmp_path, stderr=subprocess.PIPE, start_new_session=True)
    try:
        (os.killpg if group else os.kill)(runner.pid, signum)
        start = time.time()
        out, err = runner.communicate(timeout=30)
        stopped_in = time.time() - start
    finally:
        runner.kill()
    assert runner.returncode == 0, err[-2000:]
    assert stopped_in < 10
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert f"stopped by {name}: 2 interrupted jobs are back in the queue, ready (nap, nap)" in out
    engines_left(tmp_path, 1.0)
    assert engines_of(tmp_path) == []  # the workers' engines went with them
    assert states(tmp_path) == Counter({"COMPLETED": 2, "READY": 4})  # none fizzled, none lost
    status = ilflows_read(["status"], tmp_path)
    assert "lost" not in status.stdout and "fizzled  nap" not in status.stdout
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert runs_per_job(tmp_path) == Counter({str(i): 1 for i in range(6)})  # each job finished once


def test_status_counts_the_jobs_that_wait_on_a_lost_one(tmp_path):
    queue(tmp_path, "queue_chain(30.0)")
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker"],
        env=cli_env(tmp_path, **toy_env(tmp_path)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while states(tmp_path)["RUNNING"] < 1 and time.time() < deadline:
            time.sleep(0.1)
        runner.send_signal(signal.SIGKILL)  # the first nap is lost; the second waits on it
    finally:
        runner.wait()
    engines_left(tmp_path, 5.0)  # its worker, which held the queue with it, dies a moment later
    status = ilflows_read(["status"], tmp_path).stdout
    assert "  lost     nap: its worker stopped" in status
    assert "1 jobs wait on them; `ilflows rerun chain` puts them back in the queue" in status

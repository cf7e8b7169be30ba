"""Workers on the embedded queue: each job runs once, two at a time, on scratch when asked; nothing
else writes the queue while they run; a damaged queue or results store and a full disk are one line.

What a killed runner, a dying worker and a stop signal leave behind is ``test_worker_deaths.py``.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from cli_runs import ROOT, cli_env, ilflows, ilflows_read, left_after
from toy_queue import queue, queue_and_run, queue_naps, runs_per_job, states, toy_env, toy_log


def test_two_workers_run_each_job_once(tmp_path):
    queue_naps(tmp_path, 4, 1.0)
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "queue: 4/4 jobs completed, 0 fizzled" in proc.stdout
    # a line per job: [time since the start] ... (its run time)
    done = [
        tuple(map(float, m))
        for m in re.findall(r"\[\s*([\d.]+) s\].*nap\s+COMPLETED \(([\d.]+) s\)", proc.stdout)
    ]
    assert len(done) == 4
    assert runs_per_job(tmp_path) == Counter({str(i): 1 for i in range(4)})
    assert states(tmp_path) == Counter({"COMPLETED": 4})
    assert len({pid for _, pid in toy_log(tmp_path)}) == 2
    # two at a time, whatever the start-up took: the jobs' run time over their span is about 2 (1: one by one)
    span = max(end for end, _ in done) - min(end - took for end, took in done)
    assert sum(took for _, took in done) / span > 1.3, proc.stdout


def test_run_folders_on_scratch_and_failed_ones_on_the_shared_disk(tmp_path):
    scratch = tmp_path / "node-local"
    queue(tmp_path, "queue_naps(2, 0.0, trips=1)")
    proc = ilflows(["worker"], tmp_path, **toy_env(tmp_path), ILFLOWS_SCRATCH=str(scratch))
    assert "queue: 2/3 jobs completed, 1 fizzled" in proc.stdout, proc.stdout
    assert list(scratch.iterdir()) == []  # the runner's scratch folder is gone
    (failed,) = (tmp_path / "runs").glob("launcher_*")
    assert json.loads((failed / "FW.json").read_text())["name"] == "trip"


class _Queue:
    """The shared LaunchPad as a worker sees it: nothing ready; a sibling's job in flight."""

    def __init__(self, in_flight: dict[int, float]):
        self.in_flight = in_flight
        self.looks = 0

    def launches_in_flight(self) -> dict[int, float]:
        return dict(self.in_flight)

    def run_exists(self, fworker) -> bool:
        return False


@pytest.mark.parametrize(
    ("in_flight", "worker", "looks"),
    [
        ({7: 0.5}, None, 2),  # a sibling completing its job (running mark cleared): look again
        ({7: 900.0}, "live", 2),  # a sibling in a long job: look again
        ({7: 900.0}, None, 1),  # silent for long, no worker marks it: its worker died; stop
        ({7: 900.0}, "zombie", 1),  # its worker was killed alone and not yet reaped: stop
        ({}, None, 1),  # nothing in flight, nothing ready: stop
    ],
)
def test_a_worker_stops_only_when_no_sibling_may_add_jobs(monkeypatch, in_flight, worker, looks):
    from fireworks.features import multi_launcher
    from fireworks.fw_config import FWData

    from ilflows import worker_processes

    queue = _Queue(in_flight)
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    time.sleep(0.2)  # dead, and a zombie until waited for
    pid = {"live": os.getpid(), "zombie": killed.pid}.get(worker)
    running = {} if pid is None else {pid: 7}

    def rapidfire(launchpad, fworker, *args, **kwargs):  # finds nothing to run, as FireWorks' does
        launchpad.looks += 1
        if launchpad.looks == 2:
            launchpad.in_flight.clear()  # the sibling is done by the second look

    monkeypatch.setattr(multi_launcher, "rapidfire", rapidfire)
    monkeypatch.setattr(FWData(), "Running_IDs", running, raising=False)
    monkeypatch.setattr(worker_processes.time, "sleep", lambda s: None)
    with worker_processes.workers_wait_for_siblings(idle_poll=1.0):
        multi_launcher.rapidfire(queue, fworker=None, sleep_time=1.0, timeout=60.0)
    killed.wait()
    assert queue.looks == looks
    # a dead worker's mark is cleared, so that FireWorks' own loop does not wait for it either
    assert running == ({} if pid is None else {pid: 7 if worker == "live" else None})


def test_nothing_else_writes_the_queue_while_workers_run(tmp_path):
    queue_naps(tmp_path, 1, 30.0)  # a runner busy until stopped
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker", "--quiet"],
        env=cli_env(tmp_path, **toy_env(tmp_path)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while states(tmp_path)["RUNNING"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        spec = tmp_path / "peer_pyr14bf4.yaml"
        spec.write_text((ROOT / "workflows/peer_pyr14bf4.yaml").read_text())
        submit = ilflows(["submit", str(spec)], tmp_path)
        assert submit.returncode == 2
        assert submit.stderr.startswith("ilflows: error: the embedded queue")
        assert "is held by pid" in submit.stderr and len(submit.stderr.strip().splitlines()) == 1
        reader = (
            "from ilflows.store import get_launchpad\n"
            "from ilflows.store.launchpad import ReadOnlyQueueError\n"
            "lp = get_launchpad()\n"
            "try:\n    lp.rerun_fw(1)\nexcept ReadOnlyQueueError as err:\n    print(err)\n"
        )
        read = subprocess.run(
            [sys.executable, "-c", reader], env=cli_env(tmp_path), capture_output=True, text=True, cwd=ROOT
        )
        assert "rerun_fw: " in read.stdout and "open for reading only" in read.stdout
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    assert runner.returncode == 0
    assert states(tmp_path) == Counter({"READY": 1})  # the runner's last save: its job put back


def test_no_job_starts_after_the_timeout(tmp_path):
    queue_naps(tmp_path, 4, 2.0)
    proc = ilflows(["worker", "--timeout", "1"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "queue: 1/4 jobs completed" in proc.stdout  # the one started before the time was up
    assert states(tmp_path) == Counter({"COMPLETED": 1, "READY": 3})


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_workers_must_be_a_positive_whole_number(tmp_path, bad):
    proc = ilflows(["worker", "--workers", bad], tmp_path)
    assert proc.returncode == 2 and "--workers" in proc.stderr and "at least 1" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_a_finished_campaign_moves_out_of_the_live_queue(tmp_path):
    queue_naps(tmp_path, 3, 0.0)
    early = ilflows(["archive", "naps"], tmp_path)
    assert early.returncode == 2
    assert "ilflows: error: campaign: 'naps' still has 3 jobs to run (e.g. nap)" in early.stderr
    assert ilflows(["worker", "--quiet"], tmp_path, **toy_env(tmp_path)).returncode == 0
    size = (tmp_path / "launchpad.json").stat().st_size

    proc = ilflows(["archive", "naps"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    kept = json.loads((tmp_path / "archive/naps.json").read_text())
    assert [fw["state"] for fw in kept["fireworks"]] == ["COMPLETED"] * 3 and len(kept["launches"]) == 3
    assert states(tmp_path) == Counter()
    assert (tmp_path / "launchpad.json").stat().st_size < size / 3
    assert ilflows(["archive", "naps"], tmp_path).returncode == 2  # gone from the queue
    spec = tmp_path / "naps.yaml"  # a campaign of that name again would redo its work
    spec.write_text(
        (ROOT / "workflows/peer_pyr14bf4.yaml").read_text().replace("name: peer-pyr14bf4", "name: naps")
    )
    again = ilflows(["submit", str(spec)], tmp_path)
    assert again.returncode == 2 and "campaign 'naps' has finished and was archived" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-queued", "2"], "max_queued: 2 batch jobs cannot share the embedded queue"),
        ([], "missing.yaml not found; copy launchpad_configs/my_qadapter_slurm.yaml"),
    ],
)
def test_qlaunch_refuses_what_cannot_work(tmp_path, args, message):
    proc = ilflows(["qlaunch", str(tmp_path / "missing.yaml"), *args], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_engine_past_its_time_limit_is_killed_with_what_it_started(tmp_path):
    from ilflows.execute import EngineTimeoutError, run_command, time_limit

    mark = f"TOY_LIMIT={tmp_path}"
    start = time.time()
    with pytest.raises(EngineTimeoutError, match=r"env timed out after 1.5 s in"), time_limit(1.5):
        run_command(["env", mark, "sh", "-c", "sleep 60 & sleep 61; wait"], tmp_path, "hang.log")
    assert time.time() - start < 5
    assert "engine_guard: timed out after 1.5 s" in (tmp_path / "hang.log").read_text()
    assert left_after(mark, 2.0) == []  # the wrapper's children went with it
    with time_limit(30):
        assert run_command(["sh", "-c", "exit 0"], tmp_path, "quick.log") < 5


def test_a_damaged_queue_file_is_one_line_and_the_previous_state_is_kept(tmp_path):
    queue_and_run(tmp_path, 2)
    queue, previous = tmp_path / "launchpad.json", tmp_path / "launchpad.json.previous"
    assert json.loads(previous.read_text())["ilflows"]["fireworks"][
        "documents"
    ]  # a whole queue, one save older
    queue.write_text(queue.read_text()[:100])  # truncated, as by a full disk
    for args in (["status"], ["worker"], ["rerun", "naps"]):
        proc = ilflows(args, tmp_path, **toy_env(tmp_path))
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"{queue} is not a readable queue (JSONDecodeError" in proc.stderr
        assert f"the queue before its last change is {previous}, copy it over it" in proc.stderr
    queue.write_text(previous.read_text())
    status = ilflows_read(["status"], tmp_path)
    assert status.returncode == 0 and re.search(r"campaign naps: [12]/2 jobs completed", status.stdout)


def test_an_engine_killed_alone_runs_once_more(tmp_path):
    from ilflows.execute import EngineKilledError, run_command

    once = f"if [ ! -e {tmp_path}/tried ]; then touch {tmp_path}/tried; kill -9 $$; fi; echo done"
    run_command(["sh", "-c", once], tmp_path, "once.log")  # the out-of-memory killer, once
    assert (tmp_path / "once.log").read_text() == "done\n" and (tmp_path / "once.log.killed").exists()
    with pytest.raises(EngineKilledError, match="sh was killed by SIGKILL in .* twice; rerun the job"):
        run_command(["sh", "-c", "kill -9 $$"], tmp_path, "always.log")


def test_a_deleted_or_damaged_results_store_is_refused_in_one_line(tmp_path):
    queue_and_run(tmp_path, 2)
    store = tmp_path / "jobstore"
    kept = tmp_path / "jobstore.kept"
    shutil.copytree(store, kept)
    shutil.rmtree(store)  # deleted: the queue says two jobs finished, their results are gone
    for args in (["status"], ["worker"], ["query", "labels"]):
        proc = ilflows(args, tmp_path, **toy_env(tmp_path))
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"results store ({store}) holds no results, but the queue has 2 finished jobs" in proc.stderr
    shutil.rmtree(store)  # the refused commands left an empty folder at most
    shutil.copytree(kept, store)
    for table in (f for f in store.rglob("*") if f.is_file()):  # damaged: sqlite files overwritten
        table.write_bytes(b"not a database" * 100)
    proc = ilflows(["status"], tmp_path, **toy_env(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"the results store {store} is damaged (file is not a database)" in proc.stderr
    shutil.rmtree(store)
    shutil.copytree(kept, store)
    assert ilflows_read(["status"], tmp_path).returncode == 0


def test_the_runner_stops_with_the_first_full_disk_a_worker_met(tmp_path):
    from ilflows.settings import IlflowsSettings
    from ilflows.store import disk_full_message
    from ilflows.worker_processes import DiskFull

    settings = IlflowsSettings(home=tmp_path)
    seen = DiskFull()
    assert seen.error() is None
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "/scratch/u/ilflows-7/launcher_1")
    worker = multiprocessing.get_context("fork").Process(target=seen.record, args=(quota,))
    worker.start()
    worker.join()
    seen.record(sqlite3.OperationalError("disk I/O error"))  # a sibling's, later: the first one stays
    err = seen.error()
    assert (err.errno, err.filename) == (errno.EDQUOT, "/scratch/u/ilflows-7/launcher_1")
    assert disk_full_message(err, settings).startswith("quota exceeded on the disk of /scratch/u/ilflows-7:")
    sqlite_only = DiskFull()
    sqlite_only.record(sqlite3.OperationalError("database or disk is full"))  # names no file
    message = disk_full_message(sqlite_only.error(), settings)
    assert message.startswith(f"no space left on the disk of {tmp_path}:")


@pytest.fixture
def small_disk(tmp_path):
    """A 220 kB tmpfs as ILFLOWS_HOME (root only), unmounted afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=220k", "tmpfs", str(home)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    yield home
    subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_the_next_run_goes_on(small_disk):
    home = small_disk
    # each completion grows the queue file (about 5 kB with its copies and the results), which
    # fills the disk after about 13 of them
    queue_naps(home, 30, 0.0)
    full = ilflows(["worker", "--workers", "2"], home, **toy_env(home))
    assert full.returncode == 2, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"ilflows: error: no space left on the disk of {home}: ") and "run the same" in last
    )
    assert not list(home.glob(".*.tmp"))  # the part of a failed save is removed
    done = len(toy_log(home))
    assert 0 < done < 30, full.stdout[-2000:]
    json.loads((home / "launchpad.json").read_text())  # the queue file is whole
    status = ilflows(["status"], home)  # reads it; sqlite may need a byte of disk to read the results
    full_line = "ilflows: error: no space left on the disk of"  # never "damaged, put back a backup"
    assert status.returncode == 0 or full_line in status.stderr, status.stderr

    subprocess.run(["mount", "-o", "remount,size=4m", str(home)], check=True)  # space freed
    proc = ilflows(["worker", "--workers", "2"], home, **toy_env(home))
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = runs_per_job(home)
    assert set(runs) == {str(i) for i in range(30)}  # nothing lost
    # a nap whose completion the full disk kept from the queue (left running, or fizzled by
    # FireWorks) was put back and ran again (a real job returns its stored result unrun instead)
    back = sum(int(n) for n in re.findall(r"put back (\d+) jobs", proc.stdout))
    assert sum(runs.values()) - 30 <= back <= 4, (runs, proc.stdout[-2000:], full.stderr[-3000:])
    assert "0 fizzled" in proc.stdout

"""Several workers on the embedded queue: each job runs once, the file is the queue after every
change, a killed runner loses nothing, and nothing else writes the queue while it runs."""

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
from cli_runs import ROOT, cli_env, ilflows, processes_with_env

TESTS = str(ROOT / "tests")


def _env(home: Path) -> dict[str, str]:
    return {"PYTHONPATH": TESTS, "TOY_LOG": str(home / "log")}


def _queue_naps(home: Path, n: int, seconds: float) -> None:
    _queue(home, f"queue_naps({n}, {seconds})")


def _queue(home: Path, call: str) -> None:
    cmd = [sys.executable, "-c", f"from toy_jobs import *; {call}"]
    subprocess.run(cmd, env=cli_env(home, **_env(home)), check=True, cwd=ROOT)


def _queue_and_run(home: Path, n: int) -> None:
    """Queue ``n`` naps of no time and run them with ``ilflows worker``, in one process: a set-up."""
    _queue(
        home, f"queue_naps({n}, 0.0); from ilflows.cli import main; assert main(['worker', '--quiet']) == 0"
    )


def _log(home: Path) -> list[tuple[str, str]]:
    """(job, worker pid) per finished nap."""
    log = home / "log"
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def _runs(home: Path) -> Counter:
    return Counter(job for job, _ in _log(home))


def _engines_of(home: Path) -> list[str]:
    """Command lines of the live processes started for the queue in ``home`` (their TOY_LOG)."""
    return processes_with_env(f"TOY_LOG={home / 'log'}")


def _states(home: Path) -> Counter:
    queue = json.loads((home / "launchpad.json").read_text())  # plain JSON: readable at any time
    return Counter(fw["state"] for _, fw in queue["ilflows"]["fireworks"]["documents"])  # (_id, doc)


def test_two_workers_run_each_job_once(tmp_path):
    _queue_naps(tmp_path, 4, 1.0)
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "queue: 4/4 jobs completed, 0 fizzled" in proc.stdout
    # a line per job: [time since the start] ... (its run time)
    done = [
        tuple(map(float, m))
        for m in re.findall(r"\[\s*([\d.]+) s\].*nap\s+COMPLETED \(([\d.]+) s\)", proc.stdout)
    ]
    assert len(done) == 4
    assert _runs(tmp_path) == Counter({str(i): 1 for i in range(4)})
    assert _states(tmp_path) == Counter({"COMPLETED": 4})
    assert len({pid for _, pid in _log(tmp_path)}) == 2
    # two at a time, whatever the start-up took: the jobs' run time over their span is about 2 (1: one by one)
    span = max(end for end, _ in done) - min(end - took for end, took in done)
    assert sum(took for _, took in done) / span > 1.3, proc.stdout


def test_run_folders_on_scratch_and_failed_ones_on_the_shared_disk(tmp_path):
    scratch = tmp_path / "node-local"
    _queue(tmp_path, "queue_naps(2, 0.0, trips=1)")
    proc = ilflows(["worker"], tmp_path, **_env(tmp_path), ILFLOWS_SCRATCH=str(scratch))
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


@pytest.fixture(scope="module")
def six_naps(tmp_path_factory) -> Path:
    """A queue of naps of 0, 0, 3, 3, 0 and 0 s that workers take in that order (their priorities).

    Queued once: a test copies the file (the whole queue; it names no folder).
    """
    home = tmp_path_factory.mktemp("six_naps")
    _queue(
        home,
        "from jobflow import Flow; from toy_jobs import _queue\n"
        "naps = [nap(i, s) for i, s in enumerate([0.0, 0.0, 3.0, 3.0, 0.0, 0.0])]\n"
        "for i, n in enumerate(naps): n.config.manager_config = {'_priority': len(naps) - i}\n"
        "_queue(Flow(naps, name='naps'), 'naps')",
    )
    return home / "launchpad.json"


def _runner_mid_campaign(queue: Path, home: Path, **popen) -> subprocess.Popen:
    """Start a two-worker runner on a copy of ``queue`` (six_naps) in ``home``; return it once
    the first two naps are done and the engines of the 3-s ones run."""
    shutil.copy(queue, home)
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker", "--workers", "2"],
        env=cli_env(home, **_env(home)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )
    for line in runner.stdout:
        if re.search(r"\s2/6\s+jobs done", line):
            break
    deadline = time.time() + 30
    while sum(cmd.startswith("sleep ") for cmd in _engines_of(home)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return runner


def test_killed_runner_takes_its_workers_along_and_loses_nothing(six_naps, tmp_path):
    runner = _runner_mid_campaign(six_naps, tmp_path)
    try:  # kill -9 the runner alone while two more jobs run
        assert _states(tmp_path) == Counter({"COMPLETED": 2, "RUNNING": 2, "READY": 2})  # on disk
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.wait()
    deadline = time.time() + 1.0
    while _engines_of(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    # its workers (they carry its TOY_LOG too) and their `sleep`s died with it, before the sleeps
    # could end: no orphans on the node, no worker finishes a job later, and the queue is free
    assert _engines_of(tmp_path) == []
    assert sum(_runs(tmp_path).values()) == 2
    # completed jobs' run folders went as each completed (the runner never reached its end)
    killed = sorted((tmp_path / "runs").glob("launcher_*"))
    assert [json.loads((f / "FW.json").read_text())["name"] for f in killed] == ["nap", "nap"]
    status = ilflows(["status"], tmp_path, ILFLOWS_EMBEDDED_JOB_LIMIT="5")
    assert "note: the embedded queue holds 6 jobs (limit 5)" in status.stdout
    assert status.stdout.count("  lost     nap: its worker stopped") == 2  # nobody holds the queue
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "put back 2 jobs a killed worker left running: nap, nap" in proc.stdout
    assert _runs(tmp_path) == Counter({str(i): 1 for i in range(6)})
    assert _states(tmp_path) == Counter({"COMPLETED": 6})
    assert sorted((tmp_path / "runs").glob("launcher_*")) == killed  # the killed attempts stay for a look


def test_a_job_whose_worker_died_runs_again_in_the_same_run(tmp_path):
    _queue(tmp_path, "queue_killer(1)")
    proc = ilflows(["worker"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "put back 1 jobs a killed worker left running: kill_worker" in proc.stdout
    assert "queue: 2/2 jobs completed, 0 fizzled" in proc.stdout
    assert _runs(tmp_path) == Counter({"1": 1})  # the nap ran after it, on its output
    launches = json.loads((tmp_path / "launchpad.json").read_text())["ilflows"]["launches"]["documents"]
    assert Counter(launch["state"] for _, launch in launches) == Counter({"COMPLETED": 2, "FIZZLED": 1})


def test_a_job_that_kills_its_worker_twice_fizzles_and_its_children_wait(tmp_path):
    _queue(tmp_path, "queue_killer(5)")
    proc = ilflows(["worker"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 1
    assert "queue: 0/2 jobs completed, 1 fizzled" in proc.stdout, proc.stdout
    assert (tmp_path / "kills").read_text().split() == ["killed", "killed"]  # no third try
    status = ilflows(["status"], tmp_path).stdout
    assert "fizzled  kill_worker: WorkerDied: its worker died again while running it" in status
    assert "1 jobs wait on them" in status
    assert _runs(tmp_path) == Counter()


def test_nothing_else_writes_the_queue_while_workers_run(tmp_path):
    _queue_naps(tmp_path, 1, 30.0)  # a runner busy until stopped
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker", "--quiet"],
        env=cli_env(tmp_path, **_env(tmp_path)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while _states(tmp_path)["RUNNING"] == 0 and time.time() < deadline:
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
    assert _states(tmp_path) == Counter({"READY": 1})  # the runner's last save: its job put back


def test_no_job_starts_after_the_timeout(tmp_path):
    _queue_naps(tmp_path, 4, 2.0)
    proc = ilflows(["worker", "--timeout", "1"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "queue: 1/4 jobs completed" in proc.stdout  # the one started before the time was up
    assert _states(tmp_path) == Counter({"COMPLETED": 1, "READY": 3})


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_workers_must_be_a_positive_whole_number(tmp_path, bad):
    proc = ilflows(["worker", "--workers", bad], tmp_path)
    assert proc.returncode == 2 and "--workers" in proc.stderr and "at least 1" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_a_finished_campaign_moves_out_of_the_live_queue(tmp_path):
    _queue_naps(tmp_path, 3, 0.0)
    early = ilflows(["archive", "naps"], tmp_path)
    assert early.returncode == 2
    assert "ilflows: error: campaign: 'naps' still has 3 jobs to run (e.g. nap)" in early.stderr
    assert ilflows(["worker", "--quiet"], tmp_path, **_env(tmp_path)).returncode == 0
    size = (tmp_path / "launchpad.json").stat().st_size

    proc = ilflows(["archive", "naps"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    kept = json.loads((tmp_path / "archive/naps.json").read_text())
    assert [fw["state"] for fw in kept["fireworks"]] == ["COMPLETED"] * 3 and len(kept["launches"]) == 3
    assert _states(tmp_path) == Counter()
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
    deadline = time.time() + 1.0  # killed processes take a moment to leave the process table
    while _engines_of(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert _engines_of(tmp_path) == []  # the workers' engines went with them
    assert _states(tmp_path) == Counter({"COMPLETED": 2, "READY": 4})  # none fizzled, none lost
    status = ilflows(["status"], tmp_path)
    assert "lost" not in status.stdout and "fizzled  nap" not in status.stdout
    proc = ilflows(["worker", "--workers", "2"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _runs(tmp_path) == Counter({str(i): 1 for i in range(6)})  # each job finished once


def test_an_engine_past_its_time_limit_is_killed_with_what_it_started(tmp_path):
    from ilflows.execute import EngineTimeoutError, run_command, time_limit

    mark = f"TOY_LIMIT={tmp_path}"
    start = time.time()
    with pytest.raises(EngineTimeoutError, match=r"env timed out after 1.5 s in"), time_limit(1.5):
        run_command(["env", mark, "sh", "-c", "sleep 60 & sleep 61; wait"], tmp_path, "hang.log")
    assert time.time() - start < 5
    assert "engine_guard: timed out after 1.5 s" in (tmp_path / "hang.log").read_text()
    deadline = time.time() + 2.0  # killed processes take a moment to leave the process table
    while (left := processes_with_env(mark)) and time.time() < deadline:
        time.sleep(0.05)
    assert left == []  # the wrapper's children went with it
    with time_limit(30):
        assert run_command(["sh", "-c", "exit 0"], tmp_path, "quick.log") < 5


def test_a_damaged_queue_file_is_one_line_and_the_previous_state_is_kept(tmp_path):
    _queue_and_run(tmp_path, 2)
    queue, previous = tmp_path / "launchpad.json", tmp_path / "launchpad.json.previous"
    assert json.loads(previous.read_text())["ilflows"]["fireworks"][
        "documents"
    ]  # a whole queue, one save older
    queue.write_text(queue.read_text()[:100])  # truncated, as by a full disk
    for args in (["status"], ["worker"], ["rerun", "naps"]):
        proc = ilflows(args, tmp_path, **_env(tmp_path))
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"{queue} is not a readable queue (JSONDecodeError" in proc.stderr
        assert f"the queue before its last change is {previous}, copy it over it" in proc.stderr
    queue.write_text(previous.read_text())
    status = ilflows(["status"], tmp_path)
    assert status.returncode == 0 and re.search(r"campaign naps: [12]/2 jobs completed", status.stdout)


def test_status_counts_the_jobs_that_wait_on_a_lost_one(tmp_path):
    _queue(tmp_path, "queue_chain(30.0)")
    runner = subprocess.Popen(
        [sys.executable, "-m", "ilflows.cli", "worker"],
        env=cli_env(tmp_path, **_env(tmp_path)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while _states(tmp_path)["RUNNING"] < 1 and time.time() < deadline:
            time.sleep(0.1)
        runner.send_signal(signal.SIGKILL)  # the first nap is lost; the second waits on it
    finally:
        runner.wait()
    status = ilflows(["status"], tmp_path).stdout
    assert "  lost     nap: its worker stopped" in status
    assert "1 jobs wait on them; `ilflows rerun chain` puts them back in the queue" in status


def test_an_engine_killed_alone_runs_once_more(tmp_path):
    from ilflows.execute import EngineKilledError, run_command

    once = f"if [ ! -e {tmp_path}/tried ]; then touch {tmp_path}/tried; kill -9 $$; fi; echo done"
    run_command(["sh", "-c", once], tmp_path, "once.log")  # the out-of-memory killer, once
    assert (tmp_path / "once.log").read_text() == "done\n" and (tmp_path / "once.log.killed").exists()
    with pytest.raises(EngineKilledError, match="sh was killed by SIGKILL in .* twice; rerun the job"):
        run_command(["sh", "-c", "kill -9 $$"], tmp_path, "always.log")


def test_a_deleted_or_damaged_results_store_is_refused_in_one_line(tmp_path):
    _queue_and_run(tmp_path, 2)
    store = tmp_path / "jobstore"
    kept = tmp_path / "jobstore.kept"
    shutil.copytree(store, kept)
    shutil.rmtree(store)  # deleted: the queue says two jobs finished, their results are gone
    for args in (["status"], ["worker"], ["query", "labels"]):
        proc = ilflows(args, tmp_path, **_env(tmp_path))
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert f"results store ({store}) holds no results, but the queue has 2 finished jobs" in proc.stderr
    shutil.rmtree(store)  # the refused commands left an empty folder at most
    shutil.copytree(kept, store)
    for table in (f for f in store.rglob("*") if f.is_file()):  # damaged: sqlite files overwritten
        table.write_bytes(b"not a database" * 100)
    proc = ilflows(["status"], tmp_path, **_env(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"the results store {store} is damaged (file is not a database)" in proc.stderr
    shutil.rmtree(store)
    shutil.copytree(kept, store)
    assert ilflows(["status"], tmp_path).returncode == 0


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
    _queue_naps(home, 30, 0.0)
    full = ilflows(["worker", "--workers", "2"], home, **_env(home))
    assert full.returncode == 2, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"ilflows: error: no space left on the disk of {home}: ") and "run the same" in last
    )
    assert not list(home.glob(".*.tmp"))  # the part of a failed save is removed
    done = len(_log(home))
    assert 0 < done < 30, full.stdout[-2000:]
    json.loads((home / "launchpad.json").read_text())  # the queue file is whole
    status = ilflows(["status"], home)  # reads it; sqlite may need a byte of disk to read the results
    full_line = "ilflows: error: no space left on the disk of"  # never "damaged, put back a backup"
    assert status.returncode == 0 or full_line in status.stderr, status.stderr

    subprocess.run(["mount", "-o", "remount,size=4m", str(home)], check=True)  # space freed
    proc = ilflows(["worker", "--workers", "2"], home, **_env(home))
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = _runs(home)
    assert set(runs) == {str(i) for i in range(30)}  # nothing lost
    # a nap whose completion the full disk kept from the queue (left running, or fizzled by
    # FireWorks) was put back and ran again (a real job returns its stored result unrun instead)
    back = sum(int(n) for n in re.findall(r"put back (\d+) jobs", proc.stdout))
    assert sum(runs.values()) - 30 <= back <= 4, (runs, proc.stdout[-2000:], full.stderr[-3000:])
    assert "0 fizzled" in proc.stdout

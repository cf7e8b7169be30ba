"""The runner's worker processes (FireWorks' multi-process launcher): how they wait, die and stop.

* A worker looks for work until no sibling may still add jobs (:func:`workers_wait_for_siblings`).
* Workers die with the runner (Linux: the kernel kills them when it dies), so an orphaned worker
  never keeps the queue's lock or saves a queue nobody watches.
* A stop signal (SIGINT from Ctrl-C, SIGTERM from SLURM or PBS at walltime, SIGHUP when the
  terminal goes) is the runner's alone: workers ignore it, and the runner kills its workers
  (their engines die with them, :mod:`ilflows.engine_guard`) and returns while it still holds
  the queue, so that it can put their jobs back and no second runner starts beside them
  (:func:`stop_on_signals`).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ilflows.engine_guard import die_with_parent

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# A job in flight that no live worker marks as its own still counts this long after its checkout
# or the start of its completion: a worker clears its mark before it completes its job (when
# jobflow adds the next jobs).  A job whose worker died counts no longer: then it is put back.
SILENT_JOB_S = 60.0


@dataclass
class Stop:
    """A stop signal the runner received, and the workers it ends."""

    signum: int | None = None
    since: float = 0.0  # time.time() of the signal
    workers: list = field(default_factory=list)  # multiprocessing.Process of the current launch
    launches: list[int] = field(default_factory=list)  # launch ids the workers were running

    @property
    def name(self) -> str:
        """The signal's name, e.g. "SIGINT"."""
        return signal.Signals(self.signum).name if self.signum else ""

    def end_workers(self) -> None:
        """Kill the workers now (a worker that lived on could record its job as failed).

        First note the launches they run, from FireWorks' table that its workers keep.
        """
        from fireworks.fw_config import FWData

        if self.workers and not self.launches:
            self.launches = [i for i in FWData().Running_IDs.values() if i is not None]
        for process in self.workers:
            if process.is_alive():
                process.kill()


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """Catch the stop signals in this process while the block runs, and end the workers on one.

    Yields the :class:`Stop` that records the signal; launches made in the block register
    their workers there.  Later signals do nothing more: the first one is already being acted on.
    """
    from fireworks.features import multi_launcher

    stop = Stop()

    def on_signal(signum, _frame) -> None:
        if stop.signum is None:
            stop.signum, stop.since = signum, time.time()
        stop.end_workers()

    start_rockets = multi_launcher.start_rockets

    def start_registered_rockets(*args, **kwargs):
        stop.workers = start_rockets(*args, **kwargs)
        if stop.signum is not None:  # the signal came while they started
            stop.end_workers()
        return stop.workers

    before = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    multi_launcher.start_rockets = start_registered_rockets
    try:
        yield stop
    finally:
        multi_launcher.start_rockets = start_rockets
        for signum, handler in before.items():
            signal.signal(signum, handler)


# launch_multiprocess's nlaunches under workers_wait_for_siblings: FireWorks' worker process then
# returns when this module's loop does (its own loop runs on nlaunches 0 only); each pass uses 0.
RUN_UNTIL_SIBLINGS_IDLE = -1


class DiskFull:
    """The first full-disk error a worker met, shared with the runner (made before the workers fork)."""

    def __init__(self):
        self._errno = multiprocessing.Value("i", 0)  # 0: none yet
        self._filename = multiprocessing.Array("c", 4096)

    def record(self, err: BaseException) -> None:
        """Keep ``err``'s errno and file name, unless a sibling's came first."""
        with self._errno.get_lock():
            if not self._errno.value:
                self._errno.value = getattr(err, "errno", None) or errno.ENOSPC  # sqlite's has none
                self._filename.value = os.fsencode(getattr(err, "filename", None) or "")[:4095]

    def error(self) -> OSError | None:
        """Return the error for the runner to stop with (its file names the full disk), or None."""
        if not self._errno.value:
            return None
        where = os.fsdecode(self._filename.value) or None
        return OSError(self._errno.value, os.strerror(self._errno.value), where)


@contextmanager
def workers_wait_for_siblings(idle_poll: float) -> Iterator[DiskFull]:
    """Make FireWorks' multi-process workers wait while a sibling is in a job.

    FireWorks' worker stops when it finds no ready or waiting job and sees no sibling running
    one; but a sibling clears its running mark before it completes its job, and a jobflow job
    adds the next jobs (its Response) only when it completes.  So a worker that looked in that
    gap stopped for good, and a campaign ran on one worker.  Here a worker stops only when no
    job checked out through the shared LaunchPad is still in flight (:func:`siblings_busy`);
    it looks every ``idle_poll`` s meanwhile.  FireWorks' own loop would wait as long as any
    RUNNING job has waiting children, a dead sibling's too: it gets one pass per look.  The runner
    gives ``launch_multiprocess`` ``nlaunches=-1`` (:data:`RUN_UNTIL_SIBLINGS_IDLE`): with 0, FireWorks'
    worker process would sleep 1.5 s after this loop before it sees what this loop already saw.

    Yields a :class:`DiskFull` that a worker fills when it stops because a save found the disk
    full: the runner then stops too, whether or not its own next save would fit.
    """
    from fireworks.features import multi_launcher

    from ilflows.store import disk_full

    rapidfire = multi_launcher.rapidfire
    disk_full_seen = DiskFull()

    # FireWorks' sleep_time is taken and replaced by idle_poll
    def rapidfire_while_siblings_work(launchpad, fworker, *args, sleep_time, timeout, **kwargs):
        start = time.monotonic()
        while True:
            began = time.monotonic()
            left = timeout - (began - start)
            try:
                # one pass: run what is ready, then pause idle_poll if a running job may add more
                once = {**kwargs, "nlaunches": 0, "max_loops": 1}
                rapidfire(launchpad, fworker, *args, sleep_time=idle_poll, timeout=left, **once)
            except (OSError, sqlite3.OperationalError) as err:
                if not disk_full(err):
                    raise
                disk_full_seen.record(err)  # the queue, a result or a run folder could not be written
                return
            if left <= 0 or not (siblings_busy(launchpad) or launchpad.run_exists(fworker)):
                return
            time.sleep(max(0.0, idle_poll - (time.monotonic() - began)))  # FireWorks' pass did not pause

    multi_launcher.rapidfire = rapidfire_while_siblings_work
    try:
        yield disk_full_seen
    finally:
        multi_launcher.rapidfire = rapidfire


def siblings_busy(launchpad) -> bool:
    """Whether a job checked out through ``launchpad`` may still add jobs.

    A job counts while a live worker runs it.  A worker killed alone (the out-of-memory killer)
    keeps its mark in FireWorks' table until FireWorks' hourly ping, and stays a zombie until
    the runner reaps it, so its siblings would wait for it that long: its mark is cleared here,
    and its siblings stop, so that the runner puts its job back and starts them again.
    """
    from fireworks.fw_config import FWData

    marks = FWData().Running_IDs
    running = set()
    for pid, launch_id in marks.items():
        if launch_id is not None and not _alive(pid):
            marks[pid] = None
        elif launch_id is not None:
            running.add(launch_id)
    return any(
        launch_id in running or seconds < SILENT_JOB_S
        for launch_id, seconds in launchpad.launches_in_flight().items()
    )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (dead, not yet reaped by its parent) does not."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    try:
        os.kill(pid, 0)  # no /proc: a zombie counts as alive here
    except OSError:
        return False
    return True


def end_helpers() -> None:
    """Kill and reap the processes this one forked through multiprocessing that still live.

    Called with the workers gone, before the queue is let go: FireWorks' manager of the workers'
    running marks would otherwise live on until this process exits.
    """
    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=5)


_runner_pid: int | None = None


def _follow_runner() -> None:
    """In a process forked by the runner: die with it (Linux), and leave stop signals to it.

    Orphaned workers would keep the queue's lock and save a queue nobody watches; a worker that
    took a Ctrl-C itself would record its job as failed (KeyboardInterrupt) instead of leaving it
    to be put back.
    """
    if _runner_pid is None or os.getppid() != _runner_pid:
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if die_with_parent(signal.SIGKILL) and os.getppid() != _runner_pid:  # the runner died before that
        os._exit(1)


os.register_at_fork(after_in_child=_follow_runner)


@contextmanager
def workers_follow_this_process() -> Iterator[None]:
    """Make processes forked in the block die with this one and ignore stop signals."""
    global _runner_pid
    _runner_pid = os.getpid()
    try:
        yield
    finally:
        _runner_pid = None

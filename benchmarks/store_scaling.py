"""How the embedded queue scales with the number of jobs it holds, printed as measured figures.

The embedded queue (FireWorks' mongomock file) is rewritten whole after every state change, so
its cost grows with the queue.  For queues of 10^2, 10^3 and 10^4 DFT label jobs (as a selection
queues them) this prints: file size, time to queue the jobs, time of one save, per-job overhead
of 10 no-op jobs run on top (three saves each), and time of ``ilflows status``'s queue reads
(load the file, progress and health of a campaign).  The limit ilflows prints in ``ilflows status``
(setting ``embedded_job_limit``) comes from these figures.

Then the results store (the JobStore: sqlite MontyStores) with as many paper-scale labels
(350 atoms) plus one exploration per 10 labels: time to insert them, and time of the common
queries (labels of one iteration, explored frames in a deviation window).

MongoDB, on paper from the code path: the MongoDB LaunchPad class (``IlflowsLaunchPad``) runs
the same steps against an in-memory mongomock server with FireWorks' indexes, and every
pymongo call is counted with the bytes of the documents it returns; so are the JobStore
queries.  With R per round trip and B of bandwidth (printed for 0.5 ms and 100 MB/s, a cluster
LAN), a step costs about ``calls x R + bytes / B`` plus the server's work, which stays small when
each filter hits an index; filters that no index covers are listed.

Run: ``.venv/bin/python benchmarks/store_scaling.py [--sizes 100 1000 10000] [--paper-sizes 100 1000]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import bson
import numpy as np

warnings.filterwarnings("ignore", message="Some jobs are not connected")  # the label jobs are independent

os.environ["ILFLOWS_HOME"] = tempfile.mkdtemp(prefix="ilflows-scaling-")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import noop from here

from jobflow import Flow, job  # noqa: E402

import ilflows  # noqa: E402,F401  (selects FireWorks' mongomock mode before fireworks is imported)
from ilflows.farm import run_worker  # noqa: E402
from ilflows.queue_admin import campaign_progress, queue_health  # noqa: E402
from ilflows.settings import get_settings  # noqa: E402
from ilflows.store import get_launchpad, initialize_queue, open_queue  # noqa: E402


@job
def noop(i: int) -> int:
    """The work of one job: nothing."""
    return i


def label_workflow(n: int, first: int):
    """A workflow of ``n`` DFT label jobs, as one selection queues them."""
    from jobflow.managers.fireworks import flow_to_workflow

    from ilflows.loop.jobs import label_jobs
    from ilflows.schemas import FrameOrigin
    from ilflows.schemas.campaign import CampaignSpec

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


ROUND_TRIP_S, BANDWIDTH_B_S = 0.5e-3, 100e6  # a MongoDB server on the cluster's LAN
CALLS = (
    "find",
    "find_one",
    "find_one_and_update",
    "find_one_and_replace",
    "update_one",
    "update_many",
    "replace_one",
    "insert_one",
    "insert_many",
    "delete_one",
    "delete_many",
    "count_documents",
    "distinct",
    "aggregate",
)


class Calls:
    """pymongo-style calls made by a code path: counts, bytes returned, filters no index covers.

    ``indexes`` maps a collection name to its indexed fields (MongoDB's ``_id`` always is).
    """

    def __init__(self, indexes: dict[str, set[str]]):
        self.indexes = indexes
        self.count: Counter[str] = Counter()
        self.bytes = 0
        self.unindexed: set[str] = set()

    @contextmanager
    def watching(self):
        import mongomock.collection
        import montydb.collection
        import montydb.cursor

        saved = []

        def patch(cls, name, wrapper):
            saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, wrapper(cls.__dict__[name]))

        for cls in (mongomock.collection.Collection, montydb.collection.MontyCollection):
            for name in CALLS:
                if name in cls.__dict__:
                    patch(cls, name, self._call)
        for cls in (mongomock.collection.Cursor, montydb.cursor.MontyCursor):
            patch(cls, "__next__", self._next)
        try:
            yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)

    def _call(self, method):
        calls = self

        def counted(collection, *args, **kwargs):
            calls.count[method.__name__] += 1
            query = kwargs.get("filter", args[0] if args else None)
            if isinstance(query, dict):
                fields = {key for key in query if not key.startswith("$")} - {"_id"}
                scanned = not query or fields and not fields & calls.indexes.get(collection.name, set())
                if scanned and collection.name != "fw_id_assigner":  # FireWorks' one-document id counter
                    calls.unindexed.add(f"{collection.name} {sorted(fields) or 'whole collection'}")
            result = method(collection, *args, **kwargs)
            if isinstance(result, dict):
                calls.bytes += len(bson.encode(result))
            return result

        return counted

    def _next(self, method):
        calls = self

        def counted(cursor):
            doc = method(cursor)
            calls.bytes += len(bson.encode(doc))
            return doc

        return counted

    def estimate(self) -> float:
        """Seconds on a MongoDB server ``ROUND_TRIP_S`` and ``BANDWIDTH_B_S`` away."""
        return sum(self.count.values()) * ROUND_TRIP_S + self.bytes / BANDWIDTH_B_S

    def line(self, label: str) -> str:
        calls = sum(self.count.values())
        top = ", ".join(f"{name} {n}" for name, n in self.count.most_common(3))
        return (
            f"  {label:34s}{calls:8d} calls {self.bytes / 1e6:9.2f} MB  ~{self.estimate():7.3f} s   ({top})"
        )


def label_documents(n: int, first: int, iteration: int) -> list[dict]:
    """Job documents of ``n`` paper-scale DFT labels (350 atoms), as jobs write them."""
    from document_sizes import CELL, SPECIES, N

    from ilflows.schemas import DFTLabel, Frame, FrameOrigin

    rng = np.random.default_rng(first)
    origin = FrameOrigin(campaign="bench", stage="explored", method="md", iteration=iteration, walker=0)
    template = DFTLabel(
        engine="vasp",
        parameters={"ENCUT": 450},
        converged=True,
        energy=-2000.0,
        forces=[],
        wall_time=600.0,
        campaign="bench",
        iteration=iteration,
        frame_id="",
        frame=Frame(species=SPECIES, positions=[], cell=CELL),
        frame_hash="-",  # each document's below; the template has no positions to hash
        origin=origin,
    ).model_dump(mode="json")
    docs = []
    for i in range(first, first + n):  # the template's fields, each label's own numbers and ids
        out = {**template, "forces": rng.normal(size=(N, 3)).tolist()}
        out["origin"] = {**template["origin"], "walker": i // 100, "frame_index": i % 100}
        out["frame_id"] = f"bench/it{iteration}/w{i // 100}/f{i % 100}"
        out["frame"] = {**template["frame"], "positions": rng.uniform(0, 16.1, (N, 3)).tolist()}
        out["frame_hash"] = Frame(**out["frame"]).fingerprint()
        docs.append({"uuid": f"label-{i}", "index": 1, "output": out})
    return docs


def exploration_documents(n: int, first: int, iteration: int) -> list[dict]:
    """Job documents of ``n`` paper-scale explorations (101 frames; the trajectory in the data store)."""
    from document_sizes import md_fields

    from ilflows.schemas.records import Exploration

    run = Exploration(**md_fields(101), campaign="bench", iteration=iteration, walker=0, start_frame_id="s")
    template = run.model_dump(mode="json")
    template["trajectory"] = {
        "@class": "Trajectory",
        "blob_uuid": "",
        "store": "data",
    }  # as jobflow leaves it
    rng = np.random.default_rng(first)
    return [
        {
            "uuid": f"explore-{i}",
            "index": 1,
            "output": {**template, "walker": i, "deviations": rng.uniform(0, 0.3, 101).tolist()},
        }
        for i in range(first, first + n)
    ]


def results_store(sizes: list[int]) -> None:
    """Fill the embedded JobStore with labels and explorations; time one job's write and the queries."""
    from ilflows.schemas import BIG_FIELDS
    from ilflows.store import connect_jobstore
    from ilflows.store.backends import JOBSTORE_INDEXES
    from ilflows.store.queries import frames_by_deviation, labels

    store = connect_jobstore()
    indexes = {store.docs_store.collection_name: set(JOBSTORE_INDEXES) | {"uuid"}}
    print("\nresults store (JobStore on sqlite): paper-scale labels (350 atoms), one exploration per 10")
    columns = f"{'write one label s':>18s} {'labels of it0 s':>16s} {'frames 0.05-1.5 s':>18s}"
    print(f"{'labels':>7s} {'MB':>7s} {columns}")
    stored, paper = 0, []
    for size in sorted(sizes):
        while stored < size:  # filled directly; jobs write one document at a time, timed below
            n = min(500, size - stored)
            iteration = stored * 10 // max(sizes)  # ten iterations over the largest size
            store.docs_store._collection.insert_many(
                label_documents(n, stored, iteration)
                + exploration_documents(n // 10, stored // 10, iteration)
            )
            stored += n
        one = label_documents(1, 10**9 + size, 0)
        t = time.perf_counter()
        store.update(one, key=["uuid", "index"], save={"data": BIG_FIELDS})  # as a job's end does
        write = time.perf_counter() - t
        t = time.perf_counter()
        found = labels(store, "bench", 0)
        by_iteration = time.perf_counter() - t
        t = time.perf_counter()
        frames = frames_by_deviation(store, "bench", 0.05, 1.5)
        by_deviation = time.perf_counter() - t
        megabytes = sum(f.stat().st_size for f in get_settings().home.joinpath("jobstore").rglob("*")) / 1e6
        print(f"{size:7d} {megabytes:7.0f} {write:18.2f} {by_iteration:16.2f} {by_deviation:18.2f}")
        calls = [Calls(indexes) for _ in range(3)]
        with calls[0].watching():
            store.update(
                label_documents(1, 2 * 10**9 + size, 0), key=["uuid", "index"], save={"data": BIG_FIELDS}
            )
        with calls[1].watching():
            labels(store, "bench", 0)
        with calls[2].watching():
            frames_by_deviation(store, "bench", 0.05, 1.5)
        paper.append((size, len(found), len(frames), calls))
    print("  MongoDB, the same calls (indexes: ilflows' JobStore indexes):")
    for size, n_labels, n_frames, (write, by_iteration, by_deviation) in paper:
        print(f"  at {size} labels:")
        print(write.line("write one label"))
        print(by_iteration.line(f"labels of it0 ({n_labels} rows)"))
        print(by_deviation.line(f"frames in window ({n_frames} rows)"))
    unindexed = set().union(*(c.unindexed for *_, cs in paper for c in cs))
    print(f"  filters no index covers: {', '.join(sorted(unindexed)) or 'none'}")


def queue_on_mongodb(sizes: list[int]) -> None:
    """Count the calls of submit, one job's state changes and ``status`` on the MongoDB LaunchPad."""
    from fireworks import Firework, FWorker, ScriptTask, Workflow
    from fireworks.core.rocket_launcher import launch_rocket

    from ilflows.settings import IlflowsSettings
    from ilflows.store.launchpad import IlflowsLaunchPad

    lp = IlflowsLaunchPad("localhost", name="paper", strm_lvl="ERROR")  # mongomock: in memory
    initialize_queue(lp)  # FireWorks' indexes and ilflows' own, as on a new MongoDB database
    indexes = {
        name: {key for info in getattr(lp, name).index_information().values() for key, _ in info["key"]}
        for name in ("fireworks", "launches", "workflows")
    }
    mongodb = IlflowsSettings(backend="mongodb")
    root = Firework(ScriptTask.from_str("true"), name="root")
    first = Firework(ScriptTask.from_str("true"), name="noop 0")
    lp.add_wf(Workflow([root, first], name="bench"))
    root_id, parent = lp.get_fw_ids({"name": "root"})[0], lp.get_fw_ids({"name": "noop 0"})[0]
    lp.pause_fw(root_id)
    os.chdir(tempfile.mkdtemp(prefix="ilflows-rockets-"))  # FireWorks writes FW.json where it runs
    launch_rocket(lp, FWorker(), strm_lvl="ERROR")
    for name in ("launchpad", "rocket.launcher"):  # their handlers were made at INFO by an earlier pad
        for handler in logging.getLogger(name).handlers:
            handler.setLevel(logging.ERROR)
    print(
        "\nqueue on the MongoDB LaunchPad (calls, bytes on the code path; time ~ calls x 0.5 ms + MB / 100)"
    )
    queued, unindexed = 0, set()
    for size in sorted(sizes):
        submit, job, status = Calls(indexes), Calls(indexes), Calls(indexes)
        with submit.watching():
            while queued < size:
                n = min(1000, size - queued)
                lp.append_wf(label_workflow(n, queued), [root_id])
                queued += n
        lp.append_wf(Workflow([Firework(ScriptTask.from_str("true"), name=f"noop {size}")]), [parent])
        parent = lp.get_fw_ids({"name": f"noop {size}"})[0]
        with job.watching():
            launch_rocket(lp, FWorker(), strm_lvl="ERROR")
        with status.watching():
            campaign_progress(lp, "bench")
            queue_health(lp, "bench", settings=mongodb)
        print(f"  {size} jobs queued:")
        print(submit.line(f"submit {size} label jobs"))
        print(job.line("one job, all its state changes"))
        print(status.line("ilflows status (progress, health)"))
        unindexed |= submit.unindexed | job.unindexed | status.unindexed
    print(f"  filters no index covers: {', '.join(sorted(unindexed)) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--noop", type=int, default=10, help="no-op jobs run at each size")
    parser.add_argument(
        "--labels", type=int, nargs="+", default=[100, 1000, 10000], help="results store sizes"
    )
    parser.add_argument(
        "--paper-sizes", type=int, nargs="+", default=[100, 1000], help="MongoDB queue sizes to count"
    )
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

    results_store(args.labels)
    queue_on_mongodb(args.paper_sizes)


if __name__ == "__main__":
    main()

"""Making jobs: each placed in its campaign with name, identity, category and metadata at once."""

from __future__ import annotations

import uuid
from pathlib import Path

from jobflow import Job, OnMissing, job

from ilflows.loop.steps import LabelMaker
from ilflows.schemas import DFTLabel, Frame, FrameOrigin
from ilflows.schemas.campaign import CampaignSpec
from ilflows.store import WORKER_NAME

# a failed parent (crashed label, blown-up walker) leaves a gap instead of stopping the campaign
TOLERANT = {"on_missing_references": OnMissing.NONE}


def type_map_of(spec: CampaignSpec) -> list[str]:
    """Model atom types of the campaign: its elements in order of atomic number."""
    from ase.data import atomic_numbers

    from ilflows.systems import elements

    found = {el for system in spec.system for el in elements(system)}
    return sorted(found, key=atomic_numbers.__getitem__)


def place(
    job: Job,
    spec: CampaignSpec,
    name: str,
    kind: str,
    *,
    iteration: int | None = None,
    tolerant: bool = False,
    record: str | None = None,
    first: bool = False,
) -> Job:
    """Give ``job`` its place in the campaign in one step: name, identity, category, tolerance, metadata.

    The uuid comes from the campaign and ``name`` (unique in a campaign: the frame it labels,
    the iteration and member it trains, ...), set together so that they cannot drift apart: a
    job added again by a rerun is known and not queued twice
    (:class:`ilflows.store.launchpad.IlflowsLaunchPad`), and a job whose result is stored
    returns it unrun.  Call it before the job's output is referenced.  The category of ``kind``
    (``spec.workers``) says who may run it; jobflow hands a job's manager config, and config
    updates, on to the jobs its Response adds, which carry categories of their own, so nothing is
    handed on.  Every job is pinned to ilflows' workers (``WORKER_NAME``): a plain ``rlaunch``
    would queue a rerun job's additions a second time.  A ``tolerant`` job runs with a missing
    parent output (None), so a crashed member or walker leaves a gap, not a dead campaign.  A
    job ``first`` is taken before the other ready jobs (FireWorks' ``_priority``).  The metadata
    name the campaign, the ``iteration`` and the ``record`` kind the job stores.
    """
    job.name = name
    job.set_uuid(str(uuid.uuid5(uuid.NAMESPACE_URL, f"ilflows:{spec.name}/{name}")))
    job.update_config({"pass_manager_config": False}, dynamic=False)
    manager = {"_category": getattr(spec.workers, kind), "_priority": 1 if first else None}
    manager = {key: value for key, value in manager.items() if value} | {"_fworker": WORKER_NAME}
    job.update_config({"manager_config": manager}, dynamic=False)
    if tolerant:
        job.update_config(TOLERANT)
    metadata = {"campaign": spec.name, "iteration": iteration, "kind": record}
    job.update_metadata({key: value for key, value in metadata.items() if value is not None})
    return job


def label_jobs(
    spec: CampaignSpec, frames: list[tuple[Frame | None, FrameOrigin]], iteration: int
) -> list[Job]:
    """One DFT job per frame (None: an explored frame the job reads from the store)."""
    maker = LabelMaker(campaign=spec.name, spec=spec.dft, time_limit=spec.time_limits.label)
    jobs = []
    for frame, origin in frames:
        name = f"label it{iteration} {origin.frame_id.split('/', 1)[1]}"
        jobs.append(
            place(
                maker.make(origin, iteration, frame),
                spec,
                name,
                "dft",
                iteration=iteration,
                record="dft_label",
            )
        )
    return jobs


@job(output_schema=DFTLabel)
def record_label(label: DFTLabel) -> DFTLabel:
    """Keep an imported label as a record of its own, like a computed one."""
    return label


def run_folder(name: str) -> Path:
    """Return the folder ``name`` in the job's run folder, made if missing."""
    path = Path.cwd() / name
    path.mkdir(exist_ok=True)
    return path

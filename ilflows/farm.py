"""Submit campaigns to the LaunchPad and run a local worker on the embedded queue."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ilflows.schemas import CampaignSpec
from ilflows.settings import IlflowsSettings, get_settings
from ilflows.store import (
    check_connection,
    connect_jobstore,
    get_launchpad,
    hold_embedded_queue,
    initialize_queue,
    save_queue,
)


def preflight(spec: CampaignSpec) -> list[str]:
    """Refuse a campaign that cannot run here, before anything is queued; return notes to show.

    Checks the executables of its engines and reads every imported data set (its elements must
    be the campaign's).  The notes are the import reports: oddities a chemist should see.

    Raises
    ------
    EngineError
        An executable is missing.
    SpecError
        An import cannot be read or holds elements the campaign's models do not have.
    """
    from ilflows.dft import get_engine
    from ilflows.execute import require_executable
    from ilflows.explore import get_explorer
    from ilflows.external import read_import
    from ilflows.loop import type_map_of
    from ilflows.schemas import SpecError
    from ilflows.train import get_trainer

    needs = [(get_settings().packmol_cmd, "packmol_cmd")]
    trainers = [get_trainer(family.engine) for family in spec.train]
    for engine in (get_engine(spec.dft.engine), *trainers, get_explorer(spec.explore.engine)):
        needs += engine.executables()
    for command, setting in needs:
        require_executable(command, setting)
    notes, elements = [], set(type_map_of(spec))
    for k, entry in enumerate(spec.initial.imports):
        field = f"initial.imports.{k}"
        try:
            imported = read_import(entry, spec.name, f"import{k}")
        except OSError as err:
            raise SpecError(
                f"{field}.path: cannot read {entry.path} ({err.strerror}); give a path relative to the "
                "spec's folder, on a file system the workers share"
            ) from err
        except ValueError as err:
            raise SpecError(f"{field}: {str(err).splitlines()[0]}") from err
        foreign = sorted(set(imported.report.species) - elements)
        if foreign:
            raise SpecError(
                f"{field}: elements {', '.join(foreign)} are not in the campaign's system "
                f"({', '.join(sorted(elements))}); import data of the same liquid"
            )
        notes.append(f"{field} ({entry.path.name}):\n{imported.report.summary()}")
    return notes


class CampaignError(ValueError):
    """A campaign name that cannot be used: queued from another spec, or not in the queue."""


def _campaign_wf(lp, name: str) -> dict | None:
    return lp.workflows.find_one({"name": name}, {"nodes": 1, "state": 1, "metadata": 1})


def _spec_digest(spec: CampaignSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def _queue(lp, spec: CampaignSpec) -> bool:
    """Add the campaign unless the queue already has it; return True when added.

    Raises
    ------
    CampaignError
        When a campaign of that name is queued from a different spec.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from ilflows.loop import CampaignMaker

    initialize_queue(lp)
    digest = _spec_digest(spec)
    queued = _campaign_wf(lp, spec.name)
    if queued is not None:
        if queued.get("metadata", {}).get("spec_sha256") != digest:
            raise CampaignError(
                f"name: campaign '{spec.name}' is already queued from a different spec; "
                "give this spec a new name"
            )
        return False
    # store=None: each worker uses its own JobStore config, so no credentials enter the queue
    flow = CampaignMaker(spec=spec).make()
    lp.add_wf(flow_to_workflow(flow, store=None, metadata={"campaign": spec.name, "spec_sha256": digest}))
    return True


def submit(spec: CampaignSpec, settings: IlflowsSettings | None = None) -> bool:
    """Queue a campaign on the configured LaunchPad; return False if it was already there.

    Run :func:`preflight` first: this only queues.
    """
    settings = settings or get_settings()
    with hold_embedded_queue(settings):
        lp = get_launchpad(settings)
        if settings.backend == "mongodb":
            check_connection(lp)
        added = _queue(lp, spec)
        save_queue(lp, settings)
    return added


@dataclass
class Progress:
    """State of a campaign's jobs after one job finished."""

    job: str
    state: str
    seconds: float
    done: int
    total: int


def campaign_progress(lp, name: str) -> tuple[int, int, int]:
    """(completed, fizzled, total) jobs of a campaign's workflow."""
    return _workflow_progress(lp, _campaign_wf(lp, name))


def _workflow_progress(lp, wf: dict | None) -> tuple[int, int, int]:
    if wf is None:
        return 0, 0, 0
    states = [fw["state"] for fw in lp.fireworks.find({"fw_id": {"$in": wf["nodes"]}}, {"state": 1})]
    return states.count("COMPLETED"), states.count("FIZZLED"), len(states)


@dataclass
class QueueHealth:
    """Jobs of a campaign that need a person: failed ones, those waiting on them, lost ones."""

    fizzled: list[tuple[str, str]]  # (job name, the last line of its error)
    blocked: int  # WAITING jobs below a fizzled one: they run only after a rerun
    lost: list[str]  # RUNNING jobs whose worker stopped pinging (MongoDB; none on the embedded queue)


def queue_health(lp, name: str, settings: IlflowsSettings | None = None) -> QueueHealth:
    """Report the fizzled, blocked and lost jobs of campaign ``name``.

    Lost runs exist only on MongoDB: the embedded queue is saved between jobs, so a killed
    worker's job is READY again on disk.
    """
    settings = settings or get_settings()
    wf = lp.workflows.find_one({"name": name}, {"nodes": 1, "links": 1})
    if wf is None:
        return QueueHealth([], 0, [])
    nodes = wf["nodes"]
    fws = {fw["fw_id"]: fw for fw in lp.fireworks.find({"fw_id": {"$in": nodes}}, {"spec._tasks": 0})}
    links = wf["links"]
    fizzled, below = [], set()
    for fw_id, fw in fws.items():
        if fw["state"] != "FIZZLED":
            continue
        launch = (
            lp.launches.find_one({"launch_id": fw["launches"][-1]}, {"action": 1}) if fw["launches"] else None
        )
        trace = (((launch or {}).get("action") or {}).get("stored_data") or {}).get("_exception", {})
        lines = [line for line in str(trace.get("_stacktrace", "")).splitlines() if line.strip()]
        fizzled.append((fw["name"], lines[-1].strip() if lines else "no error recorded"))
        todo = list(links.get(str(fw_id), []))
        while todo:
            child = todo.pop()
            if child not in below and fws.get(child, {}).get("state") == "WAITING":
                below.add(child)
                todo.extend(links.get(str(child), []))
    lost = []
    if settings.backend == "mongodb":
        _, lost_ids, _ = lp.detect_lostruns(query={"fw_id": {"$in": nodes}})
        lost = [fws[fw_id]["name"] for fw_id in lost_ids if fw_id in fws]
    return QueueHealth(sorted(fizzled), len(below), sorted(lost))


def rerun(name: str, settings: IlflowsSettings | None = None) -> list[str]:
    """Put the fizzled and lost jobs of campaign ``name`` back in the queue; return their names.

    Their children wait for them again; finished jobs and their records are kept.  On MongoDB a
    lost run is one whose worker stopped pinging for FireWorks' expiration time (4 hours).
    """
    settings = settings or get_settings()
    with hold_embedded_queue(settings):
        lp = get_launchpad(settings)
        wf = _campaign_wf(lp, name)
        if wf is None:
            raise CampaignError(f"campaign: no campaign named '{name}' in the queue; see ilflows status")
        query = {"fw_id": {"$in": wf["nodes"]}, "state": "FIZZLED"}
        again = [(fw["fw_id"], fw["name"]) for fw in lp.fireworks.find(query, {"fw_id": 1, "name": 1})]
        for fw_id, _ in again:
            lp.rerun_fw(fw_id)
        names = [job for _, job in again]
        if settings.backend == "mongodb":
            _, lost, _ = lp.detect_lostruns(query={"fw_id": {"$in": wf["nodes"]}}, rerun=True)
            names += [lp.fireworks.find_one({"fw_id": fw_id}, {"name": 1})["name"] for fw_id in lost]
        save_queue(lp, settings)
    return sorted(names)


# FireWorks and jobflow log every job start and end at INFO to stdout; ilflows prints its own
# progress lines (or none with --quiet).  Warnings and errors still show.
CHATTY_LOGGERS = ["rocket.launcher", "launchpad", "jobflow.core.job"]


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@dataclass
class WorkerResult:
    """What a local worker did."""

    queued: bool  # the campaign was new (False: resumed)
    completed: int
    fizzled: int
    total: int


def run_worker(
    spec: CampaignSpec | None = None,
    settings: IlflowsSettings | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    category: str | None = None,
) -> WorkerResult:
    """Queue ``spec`` (if given and new) and run jobs until the queue has none ready.

    Holds the embedded queue for the whole run and saves it after every job, never during one:
    a killed worker leaves the job it was running READY in the file, and the next worker runs it
    again (its JobStore record, if any, is replaced, not duplicated).
    Counts are the campaign's jobs, or the whole queue's when no spec is given.  With a
    ``category`` the worker runs only jobs of that category (``spec.workers``), e.g. "cpu".
    """
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import launch_rocket
    from jobflow import SETTINGS

    settings = settings or get_settings()
    with hold_embedded_queue(settings):
        lp = get_launchpad(settings)
        if settings.backend == "mongodb":
            check_connection(lp)
        queued = spec is not None and _queue(lp, spec)
        save_queue(lp, settings)
        SETTINGS.JOB_STORE = connect_jobstore(settings)
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        here = Path.cwd()
        quiet = [logging.getLogger(name) for name in CHATTY_LOGGERS]
        for logger in quiet:
            logger.addFilter(_warnings_only)
        try:
            while True:
                launch_dir = Path(
                    os.path.abspath(
                        settings.runs_dir / f"launcher_{time.strftime('%Y%m%d-%H%M%S')}_{time.time_ns()}"
                    )
                )
                launch_dir.mkdir()
                os.chdir(launch_dir)
                t0 = time.perf_counter()
                launched = launch_rocket(lp, FWorker(category=category or ""), strm_lvl="ERROR")
                os.chdir(here)
                save_queue(lp, settings)
                if not launched:
                    shutil.rmtree(launch_dir, ignore_errors=True)
                    break
                launch = lp.launches.find_one({"launch_dir": str(launch_dir)}, {"fw_id": 1, "state": 1})
                fw = lp.fireworks.find_one({"fw_id": launch["fw_id"]}, {"name": 1, "state": 1})
                if fw["state"] == "COMPLETED" and not settings.keep_workdirs:
                    shutil.rmtree(launch_dir, ignore_errors=True)
                if on_progress is not None:
                    wf = lp.workflows.find_one({"nodes": launch["fw_id"]}, {"nodes": 1})
                    done, _, total = _workflow_progress(lp, wf)
                    on_progress(Progress(fw["name"], fw["state"], time.perf_counter() - t0, done, total))
        finally:
            os.chdir(here)
            for logger in quiet:
                logger.removeFilter(_warnings_only)
        if spec is not None:
            counts = campaign_progress(lp, spec.name)
        else:
            states = [fw["state"] for fw in lp.fireworks.find({}, {"state": 1})]
            counts = states.count("COMPLETED"), states.count("FIZZLED"), len(states)
        return WorkerResult(queued, *counts)

"""Queue administration: submit a campaign once, its progress and health, rerun, archive.

The same calls serve the embedded queue and MongoDB; the worker runner is :mod:`ilflows.farm`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ilflows.schemas.campaign import CampaignSpec
from ilflows.settings import IlflowsSettings, get_settings
from ilflows.store import check_connection, initialize_queue, open_queue, queue_holder


class CampaignError(ValueError):
    """A campaign name that cannot be used: queued from another spec, or not in the queue."""


def _campaign_wf(lp, name: str) -> dict | None:
    return lp.workflows.find_one({"name": name}, {"nodes": 1, "state": 1, "metadata": 1})


def spec_digest(spec: CampaignSpec) -> str:
    """SHA-256 of what the spec sets apart from the defaults.

    A new ilflows adds fields with defaults; they must not make a running campaign's own spec
    look like a different one when it is run again (and a value written out equal to its default
    is the same campaign as one left out).
    """
    return hashlib.sha256(spec.model_dump_json(exclude_defaults=True).encode()).hexdigest()


def queue_campaign(lp, spec: CampaignSpec) -> bool:
    """Add the campaign unless the queue already has it; return True when added.

    Raises
    ------
    CampaignError
        When a campaign of that name is queued from a different spec.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from ilflows.loop import CampaignMaker

    initialize_queue(lp)
    digest = spec_digest(spec)
    if archive_file(spec.name).exists():
        raise CampaignError(
            f"name: campaign '{spec.name}' has finished and was archived to {archive_file(spec.name)}; "
            "give this spec a new name to run it again"
        )
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
    with open_queue(settings) as lp:
        if settings.backend == "mongodb":
            check_connection(lp)
        return queue_campaign(lp, spec)


def campaign_progress(lp, name: str) -> tuple[int, int, int]:
    """(completed, fizzled, total) jobs of a campaign's workflow."""
    return _workflow_progress(lp, _campaign_wf(lp, name))


def _workflow_progress(lp, wf: dict | None) -> tuple[int, int, int]:
    if wf is None:
        return 0, 0, 0
    states = [fw["state"] for fw in lp.fireworks.find({"fw_id": {"$in": wf["nodes"]}}, {"state": 1})]
    return states.count("COMPLETED"), states.count("FIZZLED"), len(states)


def archive_file(name: str, settings: IlflowsSettings | None = None) -> Path:
    """Where :func:`archive` writes campaign ``name``'s queue records."""
    return (settings or get_settings()).home / "archive" / f"{name}.json"


def archive(name: str, settings: IlflowsSettings | None = None) -> Path:
    """Move a finished campaign's jobs out of the live queue into a file of their own.

    The embedded queue is rewritten whole at each state change, so its cost grows with every
    job it holds (benchmarks/store_scaling.py); results stay in the JobStore, and the archive
    file keeps the workflow, its Fireworks and their launches as the queue had them.

    Raises
    ------
    CampaignError
        No such campaign, or it still has jobs waiting or running.
    """
    import bson.json_util

    settings = settings or get_settings()
    with open_queue(settings) as lp:
        wf = lp.workflows.find_one({"name": name})
        if wf is None:
            raise CampaignError(f"campaign: no campaign named '{name}' in the queue; see ilflows status")
        fws = list(lp.fireworks.find({"fw_id": {"$in": wf["nodes"]}}))
        unfinished = [fw["name"] for fw in fws if fw["state"] not in ("COMPLETED", "FIZZLED", "DEFUSED")]
        if unfinished:
            raise CampaignError(
                f"campaign: '{name}' still has {len(unfinished)} jobs to run (e.g. {unfinished[0]}); "
                "archive it once ilflows status shows none"
            )
        launch_ids = [i for fw in fws for i in fw.get("launches", []) + fw.get("archived_launches", [])]
        launches = list(lp.launches.find({"launch_id": {"$in": launch_ids}}))
        path = archive_file(name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(bson.json_util.dumps({"workflow": wf, "fireworks": fws, "launches": launches}))
        os.replace(tmp, path)  # on disk before the queue forgets it
        lp.delete_wf(wf["nodes"][0], delete_launch_dirs=False)
    return path


@dataclass
class QueueHealth:
    """Jobs of a campaign that need a person: failed ones, those waiting on them, lost ones."""

    fizzled: list[tuple[str, str]]  # (job name, the last line of its error)
    blocked: int  # WAITING jobs below a fizzled or lost one: they run only after a rerun
    lost: list[str]  # RUNNING jobs whose worker is gone


def queue_health(lp, name: str, settings: IlflowsSettings | None = None) -> QueueHealth:
    """Report the fizzled, blocked and lost jobs of campaign ``name``.

    Lost: on MongoDB, RUNNING jobs whose worker stopped pinging for FireWorks' expiration time;
    on the embedded queue, RUNNING jobs while no process holds the queue (their worker was
    killed; the next ``ilflows run`` or ``worker`` puts them back).
    """
    settings = settings or get_settings()
    wf = lp.workflows.find_one({"name": name}, {"nodes": 1, "links": 1})
    if wf is None:
        return QueueHealth([], 0, [])
    nodes = wf["nodes"]
    fws = {fw["fw_id"]: fw for fw in lp.fireworks.find({"fw_id": {"$in": nodes}}, {"spec._tasks": 0})}
    fizzled = []
    for fw in fws.values():
        if fw["state"] != "FIZZLED":
            continue
        launch = (
            lp.launches.find_one({"launch_id": fw["launches"][-1]}, {"action": 1}) if fw["launches"] else None
        )
        trace = (((launch or {}).get("action") or {}).get("stored_data") or {}).get("_exception", {})
        lines = [line for line in str(trace.get("_stacktrace", "")).splitlines() if line.strip()]
        fizzled.append((fw["name"], lines[-1].strip() if lines else "no error recorded"))
    if settings.backend == "mongodb":
        _, lost_ids, _ = lp.detect_lostruns(query={"fw_id": {"$in": nodes}})
    elif queue_holder(settings) is None:
        lost_ids = [fw_id for fw_id, fw in fws.items() if fw["state"] == "RUNNING"]
    else:
        lost_ids = []
    stuck = [fw_id for fw_id, fw in fws.items() if fw["state"] == "FIZZLED"] + list(lost_ids)
    below, todo = set(), [child for fw_id in stuck for child in wf["links"].get(str(fw_id), [])]
    while todo:  # every WAITING job below a failed or lost one
        child = todo.pop()
        if child not in below and fws.get(child, {}).get("state") == "WAITING":
            below.add(child)
            todo.extend(wf["links"].get(str(child), []))
    lost = [fws[fw_id]["name"] for fw_id in lost_ids if fw_id in fws]
    return QueueHealth(sorted(fizzled), len(below), sorted(lost))


def rerun(name: str, settings: IlflowsSettings | None = None) -> list[str]:
    """Put the fizzled and lost jobs of campaign ``name`` back in the queue; return their names.

    Their children wait for them again; finished jobs and their records are kept.  On MongoDB a
    lost run is one whose worker stopped pinging for FireWorks' expiration time (4 hours).
    """
    settings = settings or get_settings()
    with open_queue(settings) as lp:
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
        else:
            names += lp.recover_lost_runs(query={"fw_id": {"$in": wf["nodes"]}})
    return sorted(names)

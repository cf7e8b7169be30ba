"""The concurrent-learning loop as a jobflow Maker with dynamic Responses.

Flow of a campaign::

    initial set ──> label x N (packed boxes), import x I, MD x B (+ detour: its labels) ──────┐
                ──> validation labels (never trained on)                                   │
                                              ┌────────────────────────────────────────────┘
                                              └─> train x M ──> explore x W ──> select (it 0)
                                                                                  │ addition
                 label x (selected) ──> train x M ──> explore x W ──> select (iteration 1) ...

Each ``select`` job classifies the explored frames by ensemble max force deviation, guards the
candidates, records the iteration, and either stops (accurate ratio reached, iteration cap, or
nothing left to label) or adds one DFT job per chosen frame followed by the next iteration.
Every label keeps its frame's origin (iteration, walker, frame index, deviation, MD run).
Training jobs wait for the jobs queued just before them and read every earlier training label
from the JobStore by campaign and iteration.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from jobflow import Flow, Job, JobConfig, Maker, OnMissing, Response, job

from ilflows.dft import md_engine
from ilflows.execute import time_limit
from ilflows.loop.production import analyse, produce
from ilflows.loop.steps import (
    ExploreMaker,
    LabelMaker,
    TrainMaker,
    labelled_fingerprints,
    labelled_frames,
    score_models,
    stage_ratios,
)
from ilflows.schemas import (
    BIG_FIELDS,
    DFTLabel,
    Exploration,
    Frame,
    FrameOrigin,
    InitialSet,
    MDFrames,
    Properties,
    SelectionRecord,
    TrainingRun,
    Trajectory,
    Validation,
)
from ilflows.schemas.campaign import CampaignSpec
from ilflows.schemas.control import ProductionSpec
from ilflows.schemas.inputs import MDFramesSpec
from ilflows.select.iteration import SoFar, frame_reasons, last_accurate, select_frames
from ilflows.store import WORKER_NAME

# a failed parent (crashed label, blown-up walker) leaves a gap instead of stopping the campaign
TOLERANT = {"on_missing_references": OnMissing.NONE}


def type_map_of(spec: CampaignSpec) -> list[str]:
    """Model atom types of the campaign: its elements in order of atomic number."""
    from ase.data import atomic_numbers

    from ilflows.systems import elements

    found = {el for system in spec.system for el in elements(system)}
    return sorted(found, key=atomic_numbers.__getitem__)


@dataclass
class CampaignMaker(Maker):
    """Build the whole DP-GEN-style campaign described by a :class:`CampaignSpec`."""

    name: str = "campaign"
    spec: CampaignSpec | None = None

    def make(self) -> Flow:
        """Return the campaign flow; everything after the initial set is added dynamically."""
        if self.spec is None:
            raise ValueError("CampaignMaker.spec is required")
        initial = place(build_initial_set(self.spec), self.spec, "initial set", "other")
        return Flow([initial], output=initial.output, name=self.spec.name)


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


def observation_jobs(spec: CampaignSpec, iteration: int, type_map: list[str], trains: list[Job]) -> dict:
    """Short runs of ``loop.observables``, each member driving: {run name: [md, props, md, props...]}."""
    if not spec.loop.observables:
        return {}
    out = {}
    for run in spec.loop.observables.runs:
        jobs = []
        for k in range(spec.n_models):
            member_run = run.model_copy(update={"model": k, "name": f"{run.name}-it{iteration}-m{k}"})
            after = [t.output for t in trains]
            jobs += md_and_properties(spec, member_run, iteration, type_map, "observe", "observed", after)
        out[run.name] = jobs
    return out


def md_and_properties(
    spec: CampaignSpec,
    run: ProductionSpec,
    iteration: int,
    type_map: list[str],
    md_label: str,
    props_label: str,
    after: list | None = None,
) -> list[Job]:
    """Make the MD job of ``run`` and the job analysing it, named and placed in the campaign.

    The MD is tolerant of a missing member model: its own failure then leaves the loop going.
    """
    md = produce(spec, run, iteration, type_map, after)
    place(md, spec, f"{md_label} {run.name}", "explore", iteration=iteration, tolerant=True)
    props = analyse(spec, run, md.output, md.uuid)
    return [md, place(props, spec, f"{props_label} {run.name}", "other", iteration=iteration)]


def iteration_flow(
    spec: CampaignSpec,
    iteration: int,
    new_labels: list[Job],
    starts: list[Frame],
    start_ids: list[str],
    type_map: list[str],
    waits_for: list[Job] = (),
    held_out: list[Job] = (),
    stage: int = 0,
    stage_start: int = 0,
    resume: list[tuple[Frame, str] | None] | None = None,
) -> Flow:
    """Label the new frames, train the ensemble on every label so far, score it, explore, then select.

    Training waits for ``new_labels`` and for ``waits_for`` (jobs outside this flow that add
    labels, e.g. initial MD runs).  The trained members are scored beside the exploration;
    iteration 0's scoring waits for ``held_out``, the jobs that label the validation set.  The
    walkers of exploration stage ``stage`` (begun at iteration ``stage_start``) run its
    conditions from their boxes ``starts``, or from the frames ``resume`` names per walker
    (frame and frame id; None: its box).
    """
    from ilflows.systems import system_of

    labels = [j.output for j in [*new_labels, *waits_for]]
    trains = []
    for family in spec.train:  # members are numbered across families, seeds within each
        trainer = TrainMaker(
            campaign=spec.name,
            spec=family,
            type_map=type_map,
            dispersion=spec.dispersion,
            holdout_fraction=spec.validation.holdout_fraction,
            outlier_k=spec.guards.label_outlier_k,
            time_limit=spec.time_limits.train,
        )
        for k in range(family.n_models):
            train = trainer.make(labels, iteration, len(trains), seed=family.seed + k)
            name = f"train it{iteration} m{len(trains)} {family.engine}"
            trains.append(place(train, spec, name, "train", iteration=iteration, tolerant=True))
    models = [t.output.model_file for t in trains]
    split = spec.validation.holdout_fraction, spec.guards.label_outlier_k
    score = score_models(spec.name, iteration, models, *split, spec.dispersion, [j.output for j in held_out])
    # tolerant: a crashed member is left out; first: the selection waits for it, so it runs beside
    # the walkers rather than alone after them
    place(score, spec, f"validate it{iteration}", "train", iteration=iteration, tolerant=True, first=True)
    observed = observation_jobs(spec, iteration, type_map, trains)
    conditions = spec.stages()[stage]
    explorer = ExploreMaker(
        campaign=spec.name,
        spec=spec.explore.at_stage(conditions),
        type_map=type_map,
        dispersion=spec.dispersion,
        energy_deviation=spec.select.energy_window is not None,
        time_limit=spec.time_limits.explore,
    )
    explores = []
    for walker, (start, start_id) in enumerate(zip(starts, start_ids, strict=True)):
        if conditions.systems is not None and system_of(spec, start) not in conditions.systems:
            continue
        if resume and resume[walker] is not None:
            start, start_id = resume[walker]
        explore = explorer.make(models, start, start_id, iteration, walker)
        # tolerant: a crashed member is left out of the committee
        explores.append(
            place(
                explore,
                spec,
                f"explore it{iteration} w{walker}",
                "explore",
                iteration=iteration,
                tolerant=True,
            )
        )
    select = select_and_continue(
        spec,
        iteration,
        [e.output for e in explores],
        trains[0].output,
        score.output,
        starts,
        start_ids,
        type_map,
        {name: [j.output for j in jobs[1::2]] for name, jobs in observed.items()},
        stage,
        stage_start,
    )
    place(select, spec, f"select it{iteration}", "other", iteration=iteration, tolerant=True)
    jobs = [*trains, score, *(j for pair in observed.values() for j in pair), *explores, select]
    return Flow([*new_labels, *waits_for, *jobs], output=select.output, name=f"iteration {iteration}")


@job(output_schema=DFTLabel)
def record_label(label: DFTLabel) -> DFTLabel:
    """Keep an imported label as a record of its own, like a computed one."""
    return label


def import_jobs(spec: CampaignSpec) -> tuple[list[Job], list[Job], list[str]]:
    """One record job per imported frame (training sets, validation sets) and each set's report."""
    from ilflows.external import read_import

    training, held_out, reports = [], [], []
    for k, entry in enumerate(spec.initial.imports):
        imported = read_import(entry, spec.name, f"import{k}")
        reports.append(imported.report.summary())
        for label in imported.labels:
            name = f"import {label.frame_id.split('/', 1)[1]}"
            keep = place(record_label(label), spec, name, "other", iteration=-1, record="dft_label")
            (held_out if entry.stage == "validation" else training).append(keep)
    return training, held_out, reports


@job(output_schema=InitialSet)
def build_initial_set(spec: CampaignSpec) -> Response:
    """Build the initial set, then queue its labels and iteration 0.

    Packs the nEQ frames, the MD starting boxes and the validation boxes, queues the initial
    MD runs (xTB or AIMD), and imports external labels; validation labels (packed or imported) are stored
    as records and never trained on.
    """
    from ilflows.systems import initial_frames, md_boxes, start_frames, validation_frames

    t0 = time.perf_counter()
    frames = initial_frames(spec, _folder("initial"))
    starts = start_frames(spec, _folder("starts"))
    type_map = type_map_of(spec)
    training, held_out, reports = import_jobs(spec)
    held_out += label_jobs(spec, validation_frames(spec, _folder("validation")), iteration=-1)
    labels = [*label_jobs(spec, frames, iteration=-1), *training]
    runs = []
    for stage in ("initial", "validation"):
        for run, box, origin in md_boxes(spec, _folder("md"), stage):
            # first: the longest jobs of the initial set; started last, one of them ran alone
            md = place(
                md_frames(spec, run, box, origin),
                spec,
                f"md {stage}/{origin.index}",
                "dft",
                iteration=-1,
                first=True,
            )
            (runs if stage == "initial" else held_out).append(md)
    start_ids = [origin.frame_id for _, origin in starts]
    starting = [f for f, _ in starts]
    loop = iteration_flow(spec, 0, labels, starting, start_ids, type_map, waits_for=runs, held_out=held_out)
    record = InitialSet(
        campaign=spec.name,
        frame_ids=[origin.frame_id for _, origin in frames],
        start_frame_ids=start_ids,
        type_map=type_map,
        import_reports=reports,
        spec=spec.model_dump(mode="json"),
        wall_time=time.perf_counter() - t0,
    )
    return Response(output=record, addition=Flow([*held_out, loop], name="iteration 0"))


def guard_md_frames(
    spec: CampaignSpec, frames: list[Frame], equilibrated: bool
) -> tuple[list[int], dict[int, list[str]]]:
    """Return the indices of the MD frames to label, and what the guards found in the others.

    An EQ run skips flagged frames; a hot (nEQ) run stops at its first one, so its frames stay
    "just short of decomposition".
    """
    guard = frame_reasons(spec)
    keep, flagged = [], {}
    for k, frame in enumerate(frames):
        if found := guard(frame):
            flagged[k] = found
            if not equilibrated:
                break
        else:
            keep.append(k)
    return keep, flagged


@job(output_schema=MDFrames, data=BIG_FIELDS)
def md_frames(spec: CampaignSpec, md: MDFramesSpec, box: Frame, origin: FrameOrigin) -> Response:
    """Run one MD box of the initial (or validation) set and send its frames on to labelling.

    The frames are guarded (a nEQ run stops at its first flagged frame, an EQ run skips flagged
    ones).  When the MD ran with the campaign's own DFT engine (AIMD, or xTB campaigns) its
    labels are kept; otherwise each frame gets a DFT job.  Those jobs are a detour, so they run
    before this job's children.  A run cut short keeps the frames it finished.
    """
    engine, settings = md_engine(spec.dft, md.potential)
    t0 = time.perf_counter()
    with time_limit(spec.time_limits.md):  # a run cut at its limit keeps the frames it finished
        run = engine.run_md(
            box,
            settings,
            _folder("md"),
            n_steps=md.n_steps,
            temperature=md.temperature,
            timestep=md.timestep,
            every=md.every,
            seed=origin.seed,
        )
    wall = time.perf_counter() - t0
    written = run.snapshots
    origins = [
        FrameOrigin(
            campaign=spec.name,
            stage=origin.stage,
            method="aimd" if md.potential == "dft" else "md",
            equilibrated=md.equilibrated,
            index=k,
            source=f"md{origin.index}",
            md_step=step,
            density_factor=origin.density_factor,
            system=origin.system,
            temperature=md.temperature,
            timestep=md.timestep,
            seed=origin.seed,
            parent=origin.frame_id,
        )
        for k, (step, _, _) in enumerate(written)
    ]
    keep, flagged = guard_md_frames(spec, [frame for _, frame, _ in written], md.equilibrated)
    jobs = []
    for k in keep:
        _, frame, label = written[k]
        if engine.name != spec.dft.engine:
            jobs.extend(label_jobs(spec, [(frame, origins[k])], iteration=-1))
            continue
        record = DFTLabel(
            **label.model_dump(),
            campaign=spec.name,
            iteration=-1,
            frame_id=origins[k].frame_id,
            frame=frame,
            origin=origins[k],
        )
        name = f"md label {origins[k].frame_id.split('/', 1)[1]}"
        jobs.append(place(record_label(record), spec, name, "other", iteration=-1, record="dft_label"))
    output = MDFrames(
        campaign=spec.name,
        box_frame_id=origin.frame_id,
        engine=engine.name,
        equilibrated=md.equilibrated,
        trajectory=Trajectory(
            species=box.species,
            steps=[step for step, _, _ in written],
            positions=[frame.positions for _, frame, _ in written],
            cells=[frame.cell for _, frame, _ in written],
        ),
        md_labels=[label for _, _, label in written],
        kept=[origins[k].frame_id for k in keep],
        flagged={origins[k].frame_id: reasons for k, reasons in flagged.items()},
        error=run.error,
        wall_time=wall,
    )
    return Response(output=output, detour=Flow(jobs, name=f"md labels {origin.index}") if jobs else None)


def _folder(name: str):
    from pathlib import Path

    path = Path.cwd() / name
    path.mkdir(exist_ok=True)
    return path


def production_flow(spec: CampaignSpec, iteration: int, type_map: list[str]) -> Flow:
    """Production MD and its analysis for every ``production`` entry, with the models of ``iteration``."""
    jobs = []
    for run in spec.production:
        jobs += md_and_properties(spec, run, iteration, type_map, "production", "properties")
    return Flow(jobs, name="production")


@job(output_schema=SelectionRecord, config=JobConfig(expose_store=True))
def select_and_continue(
    spec: CampaignSpec,
    iteration: int,
    explorations: list[Exploration | None],
    training: TrainingRun | None,
    scores: Validation | None,
    starts: list[Frame],
    start_ids: list[str],
    type_map: list[str],
    observed: dict[str, list[Properties | None]] | None = None,
    stage: int = 0,
    stage_start: int = 0,
) -> Response:
    """Select frames for DFT, record the iteration, and queue the next one unless it stops.

    Production runs once the loop stops, when it converged (or ``loop.production_unconverged``).
    """
    from jobflow import CURRENT_JOB

    from ilflows.systems import system_of

    store = CURRENT_JOB.store
    before = SoFar(
        labelled=labelled_fingerprints(store, spec.name),
        labelled_frames=labelled_frames(store, spec.name) if spec.select.choose == "farthest" else [],
        earlier_ratios=stage_ratios(store, spec.name, stage, before=iteration),
    )
    record, chosen = select_frames(
        spec, iteration, explorations, training, observed, scores, stage, stage_start, before
    )
    if record.stop_reason:
        run = spec.production and (record.converged or spec.loop.production_unconverged)
        if spec.production and not run:
            record.notes.append(
                "production not run: the loop stopped without converging; its models are not trusted "
                "(set loop.production_unconverged: true to run it anyway)"
            )
        return Response(output=record, addition=production_flow(spec, iteration, type_map) if run else None)
    frames = []
    for (exploration, index), pick in zip(chosen, record.selected, strict=True):
        origin = FrameOrigin(
            campaign=spec.name,
            stage="explored",
            method="md",
            equilibrated=True,
            iteration=iteration,
            walker=exploration.walker,
            frame_index=index,
            md_step=exploration.trajectory.steps[index],
            deviation=pick.deviation,
            temperature=exploration.temperature,
            timestep=exploration.timestep,
            parent=exploration.start_frame_id,
            system=system_of(spec, starts[exploration.walker]),
        )
        frames.append((None, origin))
    nxt_stage = record.next_stage
    resume = (
        last_accurate(spec, explorations, len(starts))
        if spec.stages()[nxt_stage].start_from == "accurate"
        else None
    )
    nxt = iteration_flow(
        spec,
        iteration + 1,
        label_jobs(spec, frames, iteration),
        starts,
        start_ids,
        type_map,
        stage=nxt_stage,
        stage_start=stage_start if nxt_stage == stage else iteration + 1,
        resume=resume,
    )
    return Response(output=record, addition=nxt)

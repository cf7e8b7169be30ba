"""One iteration (train, score, explore, select) and the choice to go on, stop, or run production."""

from __future__ import annotations

from jobflow import Flow, Job, JobConfig, Response, job

from ilflows.loop.jobs import label_jobs, place
from ilflows.loop.production import analyse, produce
from ilflows.loop.steps import (
    ExploreMaker,
    TrainMaker,
    labelled_fingerprints,
    labelled_frames,
    score_models,
    stage_ratios,
)
from ilflows.schemas import (
    Exploration,
    Frame,
    FrameOrigin,
    Properties,
    SelectionRecord,
    TrainingRun,
    Validation,
)
from ilflows.schemas.campaign import CampaignSpec
from ilflows.schemas.control import ProductionSpec
from ilflows.select.iteration import SoFar, last_accurate, select_frames


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
    # what was labelled before this iteration: run again (a lost queue rebuilt, a worker gone before
    # its completion was recorded), the selection must not take its own picks' labels for repeats
    before = SoFar(
        labelled=labelled_fingerprints(store, spec.name, before=iteration),
        labelled_frames=(
            labelled_frames(store, spec.name, before=iteration) if spec.select.choose == "farthest" else []
        ),
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


def production_flow(spec: CampaignSpec, iteration: int, type_map: list[str]) -> Flow:
    """Production MD and its analysis for every ``production`` entry, with the models of ``iteration``."""
    jobs = []
    for run in spec.production:
        jobs += md_and_properties(spec, run, iteration, type_map, "production", "properties")
    return Flow(jobs, name="production")


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

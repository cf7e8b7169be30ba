"""The initial set: packed and rattled boxes, imported labels, short MD runs, the validation set."""

from __future__ import annotations

import time

from jobflow import Flow, Job, Response, job

from ilflows.dft import md_engine
from ilflows.execute import time_limit
from ilflows.loop.iteration import iteration_flow
from ilflows.loop.jobs import label_jobs, place, record_label, run_folder, type_map_of
from ilflows.schemas import BIG_FIELDS, DFTLabel, Frame, FrameOrigin, InitialSet, MDFrames, Trajectory
from ilflows.schemas.campaign import CampaignSpec
from ilflows.schemas.inputs import MDFramesSpec
from ilflows.select.iteration import frame_reasons


@job(output_schema=InitialSet)
def build_initial_set(spec: CampaignSpec) -> Response:
    """Build the initial set, then queue its labels and iteration 0.

    Packs the nEQ frames, the MD starting boxes and the validation boxes, queues the initial
    MD runs (xTB or AIMD), and imports external labels; validation labels (packed or imported) are stored
    as records and never trained on.
    """
    from ilflows.systems import initial_frames, md_boxes, start_frames, validation_frames

    t0 = time.perf_counter()
    frames = initial_frames(spec, run_folder("initial"))
    starts = start_frames(spec, run_folder("starts"))
    type_map = type_map_of(spec)
    training, held_out, reports = import_jobs(spec)
    held_out += label_jobs(spec, validation_frames(spec, run_folder("validation")), iteration=-1)
    labels = [*label_jobs(spec, frames, iteration=-1), *training]
    runs = []
    for stage in ("initial", "validation"):
        for run, box, origin in md_boxes(spec, run_folder("md"), stage):
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
            run_folder("md"),
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

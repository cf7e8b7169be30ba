"""One iteration's selection: classify the explored frames, filter, choose, record, decide.

Pure functions of the campaign spec and the iteration's records (no store, no engines), after
dpgen2's report and selector: the window (fixed or adaptive), the filters (frames labelled
before, the structure guards), the choice among the candidates, the committee's errors and the
stop rules (:mod:`ilflows.select.stopping`) make one :class:`SelectionRecord`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ilflows.explore import ExploreSpec
from ilflows.schemas import (
    Exploration,
    FlaggedFrame,
    Frame,
    Properties,
    SelectedFrame,
    SelectionRecord,
    TrainingRun,
    Validation,
)
from ilflows.schemas.campaign import CampaignSpec
from ilflows.select import adaptive_trust_lo, choose_candidates, classify, unseen
from ilflows.select.stopping import decide


@dataclass
class SoFar:
    """What the campaign did before this iteration, as its selection needs it (the loop reads it)."""

    labelled: set[str] = field(default_factory=set)  # Frame.fingerprint() of every labelled frame
    labelled_frames: list[Frame] = field(default_factory=list)  # read for select.choose: farthest only
    earlier_ratios: list[float] = field(default_factory=list)  # accurate ratios of the stage so far


def other_criteria(spec: CampaignSpec, explorations: list[Exploration]) -> list[tuple]:
    """Return the energy and virial criteria the spec asks for: (deviations of every frame, lo, hi).

    Raises
    ------
    ValueError
        An exploration lacks the deviation a criterion needs (e.g. a box without a cell has no virial).
    """
    out = []
    for key, window, unit in (
        ("energy_deviations", spec.select.energy_window, "energy"),
        ("virial_deviations", spec.select.virial_window, "virial"),
    ):
        if window is None:
            continue
        missing = [e.walker for e in explorations if getattr(e, key) is None]
        if missing:
            raise ValueError(
                f"select.{unit}_window: walker {missing[0]}'s exploration has no {unit} deviations "
                f"({explorations[0].engine}); drop select.{unit}_window"
            )
        values = np.concatenate([np.asarray(getattr(e, key), dtype=float) for e in explorations])
        out.append((values, *window))
    return out


def walker_system(spec: CampaignSpec, exploration: Exploration) -> int:
    """Index of the composition an exploration ran (from its first frame's species)."""
    from ilflows.systems import system_of

    return system_of(spec, exploration.trajectory.frame(0))


def trust_levels(spec: CampaignSpec, system: int, deviations: np.ndarray) -> tuple[float, float]:
    """(trust_lo used, trust_hi) of composition ``system``: its window, trust_lo adapted if asked."""
    lo, hi, _ = spec.select.window(system)
    if (adapt := spec.select.adaptive_lo) is not None:
        lo = adaptive_trust_lo(deviations, lo, hi, adapt.n_candidates, adapt.percent)
    return lo, hi


def choose(
    spec: CampaignSpec,
    iteration: int,
    deviations: np.ndarray,
    candidate: np.ndarray,
    owner: list[tuple[Exploration, int]],
    labelled_frames: list[Frame],
) -> np.ndarray:
    """Return the indices of at most ``max_candidates`` of one composition's candidates, by ``select.choose``.

    ``spread``: evenly spaced ranks of deviation; ``random``: DP-GEN's uniform pick (seeded by
    ``select.seed`` and the iteration); ``farthest``: farthest-point sampling of the candidates'
    structural descriptors, away from each other and from ``labelled_frames``.
    """
    idx = np.flatnonzero(candidate)
    if idx.size == 0:
        return idx
    from ilflows.systems import elements as elements_of

    return pick(
        spec.select.choose,
        deviations,
        candidate,
        spec.select.window(walker_system(spec, owner[idx[0]][0]))[2],
        frame=lambda i: owner[i][0].trajectory.frame(owner[i][1]),
        labelled=labelled_frames,
        elements=sorted({el for system in spec.system for el in elements_of(system)}),
        seed=[spec.select.seed, iteration],
    )


def pick(
    strategy: str,
    deviations: np.ndarray,
    candidate: np.ndarray,
    n: int,
    frame: Callable[[int], Frame],
    labelled: list[Frame],
    elements: list[str],
    seed: list[int],
) -> np.ndarray:
    """Return the sorted indices of at most ``n`` candidates chosen by ``strategy`` (``select.choose``).

    ``frame(i)`` gives frame ``i`` (read only by ``farthest``), ``labelled`` the frames labelled
    so far, ``seed`` seeds ``random``.  With ``n`` or fewer candidates all are taken.
    """
    idx = np.flatnonzero(candidate)
    if strategy == "spread" or idx.size <= n:
        return choose_candidates(deviations, candidate, n)
    if strategy == "random":
        return np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    from ilflows.select.diversity import descriptor, farthest_points

    points = np.array([descriptor(frame(i), elements) for i in idx])
    known = np.array([descriptor(f, elements) for f in labelled]).reshape(-1, points.shape[1])
    picks = farthest_points(points, known, n, first=int(np.argmax(deviations[idx])))
    return np.sort(idx[picks])


def frame_reasons(spec: CampaignSpec):
    """Return a function giving what the campaign's structure guards find in a frame ([]: none)."""
    from ilflows.systems import system_of, topology
    from ilflows.systems.guards import check_frame

    topologies = [topology(system) for system in spec.system]
    thresholds = spec.guards.model_dump(exclude={"enabled", "label_outlier_k"})

    def reasons(frame: Frame) -> list[str]:
        if not spec.guards.enabled:
            return []
        k = system_of(spec, frame)
        density = spec.system[k].density
        return check_frame(frame, topologies[k], reference_density=density, **thresholds).reasons

    return reasons


def guard_candidates(
    spec: CampaignSpec, owner: list[tuple[Exploration, int]], deviations: np.ndarray, candidate: np.ndarray
) -> tuple[np.ndarray, list[FlaggedFrame]]:
    """Run the structure guards on each candidate; return the candidates left and the flagged ones."""
    guard = frame_reasons(spec)
    kept, flagged = candidate.copy(), []
    for i in np.flatnonzero(candidate):
        exploration, index = owner[i]
        if found := guard(exploration.trajectory.frame(index)):
            kept[i] = False
            flagged.append(
                FlaggedFrame(
                    walker=exploration.walker,
                    frame_index=index,
                    deviation=float(deviations[i]),
                    reasons=found,
                )
            )
    return kept, flagged


def _tolerance(spec: CampaignSpec, observable: str) -> float:
    obs = spec.loop.observables
    return obs.density_tolerance if observable.endswith(" density") else obs.diffusion_tolerance


def select_frames(
    spec: CampaignSpec,
    iteration: int,
    explorations: list[Exploration | None],
    training: TrainingRun | None,
    observed: dict[str, list[Properties | None]] | None = None,
    scores: Validation | None = None,
    stage: int = 0,
    stage_start: int = 0,
    before: SoFar | None = None,
) -> tuple[SelectionRecord, list[tuple[Exploration, int]]]:
    """Classify explored frames, filter and choose the candidates, and decide whether the loop stops.

    Candidates the campaign has labelled already (``before``) are left out and counted, and so
    are repeats within this iteration; the guards flag broken frames; ``select.choose`` picks
    among the rest.  ``scores`` (the committee's errors and deviations on its labels) says
    whether trust_lo is within what it can resolve.

    Whether the stage ``stage`` (begun at ``stage_start``; the accurate ratios of its earlier
    iterations are in ``before``) or the loop stops is :func:`ilflows.select.stopping.decide`'s
    call; with ``loop.observables`` the members' short runs (``observed``) may agree within the
    tolerances.  Returns the iteration record and the chosen (exploration, frame index) pairs.
    """
    done = [e for e in explorations if e is not None]
    deviations = (
        np.concatenate([np.asarray(e.deviations, dtype=float) for e in done]) if done else np.zeros(0)
    )
    owner = [(e, i) for e in done for i in range(len(e.deviations))]
    system = np.repeat([walker_system(spec, e) for e in done], [len(e.deviations) for e in done]).astype(int)
    levels = {k: trust_levels(spec, k, deviations[system == k]) for k in sorted(set(system.tolist()))}
    lo = np.array([levels[k][0] for k in system.tolist()], dtype=float)
    hi = np.array([levels[k][1] for k in system.tolist()], dtype=float)
    window = classify(deviations, lo, hi, other_criteria(spec, done))
    in_window = np.flatnonzero(window.candidate)
    prints = [owner[i][0].trajectory.frame(owner[i][1]).fingerprint() for i in in_window]
    new = window.candidate.copy()
    before = before or SoFar()
    new[in_window] = unseen(prints, before.labelled)
    candidate, flagged = guard_candidates(spec, owner, deviations, new)
    chosen = np.sort(
        np.concatenate(
            [
                choose(spec, iteration, deviations, candidate & (system == k), owner, before.labelled_frames)
                for k in levels
            ]
            or [np.zeros(0, dtype=int)]
        )
    )
    selected = [
        SelectedFrame(walker=owner[i][0].walker, frame_index=owner[i][1], deviation=float(deviations[i]))
        for i in chosen
    ]
    floor, notes = None, []
    if training is not None and training.outliers:
        listed = "; ".join(f"{frame_id}: {why}" for frame_id, why in sorted(training.outliers.items()))
        notes.append(f"{len(training.outliers)} labels held back from training as outliers ({listed})")
    if scores is not None and scores.training_deviation:
        floor = float(np.median(scores.training_deviation))
        if floor > spec.select.trust_lo and spec.select.adaptive_lo is None:
            notes.append(
                f"trust_lo {spec.select.trust_lo} eV/Å is below the committee's deviation on its own "
                f"training frames (median {floor:.3g} eV/Å): few frames can count as accurate; train longer "
                "or larger models, or raise trust_lo (or let select.adaptive_lo raise it)"
            )
    spreads = {}
    if observed:  # analysis imports scipy: 0.8 s of a select job that has no members' runs to compare
        from ilflows.analysis.properties import observable_spreads

        spreads = observable_spreads(observed)
    agree = None
    if spreads and all(value <= _tolerance(spec, key) for key, value in spreads.items()):
        worst = max(spreads, key=spreads.get)
        agree = f"largest spread: {worst} {spreads[worst]:.3g}"
    repeated = int(window.candidate.sum() - new.sum())
    outcome = decide(
        spec,
        iteration,
        stage,
        stage_start,
        [*before.earlier_ratios, window.accurate_ratio],
        explored=bool(done),
        selected=len(selected),
        agree=agree,
        why_empty=f"({len(flagged)} flagged by the guards, {repeated} labelled before)",
    )
    if outcome.stage_note:
        notes.append(outcome.stage_note)
    conditions = spec.stages()[stage]
    record = SelectionRecord(
        campaign=spec.name,
        iteration=iteration,
        trust_lo=levels[min(levels)][0] if levels else spec.select.trust_lo,
        trust_hi=spec.select.trust_hi,
        windows={k: level for k, level in levels.items()} if len(spec.system) > 1 else {},
        n_frames=int(deviations.size),
        n_accurate=int(window.accurate.sum()),
        n_candidate=int(window.candidate.sum()),
        n_failed=int(window.failed.sum()),
        accurate_ratio=window.accurate_ratio,
        n_flagged=len(flagged),
        flagged=flagged,
        n_repeated=repeated,
        selected=selected,
        n_labels=training.n_frames if training else 0,
        n_held_out=training.n_held_out if training else 0,
        deviation_median=float(np.median(deviations)) if deviations.size else None,
        n_failed_labels=training.n_failed_labels if training else 0,
        converged=outcome.converged,
        stop_reason=outcome.stop_reason,
        stage=stage,
        stage_name=conditions.label(stage),
        conditions=describe(spec.explore.at_stage(conditions)),
        stage_converged=outcome.stage_converged,
        next_stage=outcome.next_stage,
        observables=spreads,
        deviation_floor=floor,
        notes=notes,
    )
    return record, [owner[i] for i in chosen]


def last_accurate(
    spec: CampaignSpec, explorations: list[Exploration | None], n_walkers: int
) -> list[tuple[Frame, str] | None]:
    """Per walker, its last recorded frame below trust_lo that the guards pass, with its frame id."""
    guard = frame_reasons(spec)
    out: list[tuple[Frame, str] | None] = [None] * n_walkers
    for e in explorations:
        if e is None:
            continue
        for index in reversed(np.flatnonzero(np.asarray(e.deviations, dtype=float) < spec.select.trust_lo)):
            frame = e.trajectory.frame(int(index))
            if not guard(frame):
                out[e.walker] = (frame, f"{spec.name}/it{e.iteration}/w{e.walker}/f{index}")
                break
    return out


def describe(explore: ExploreSpec) -> str:
    """One line of MD conditions, e.g. 'nvt 300 K, 200 x 0.5 fs, frames every 20'."""
    temperature = (
        f"{explore.temperature_ramp.start:g}-{explore.temperature_ramp.end:g} K"
        if explore.temperature_ramp
        else f"{explore.temperature:g} K"
    )
    pressure = f" {explore.pressure:g} bar" if explore.ensemble == "npt" else ""
    return (
        f"{explore.ensemble} {temperature}{pressure}, {explore.n_steps} x {explore.timestep:g} fs, "
        f"frames every {explore.frame_every}"
    )

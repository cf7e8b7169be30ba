"""What a campaign would cost at most, estimated from its spec alone, before anything is queued.

A box of 10^9 ions, 10^12 MD steps or a committee of 10^6 models is a typo, not a request: the
estimate is checked against the ``max_*`` settings by ``check``, ``submit`` and ``run`` (``--force``
queues it anyway), from the spec's numbers only, so that an absurd spec is refused in one line
before it packs a box or grows a workflow in memory.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ilflows.schemas.campaign import CampaignSpec, SpecError
from ilflows.schemas.inputs import MDFramesSpec, SystemSpec

WHAT = {
    "box_atoms": "atoms in a box",
    "labels": "DFT labels",
    "md_steps": "MD steps",
    "trainings": "trainings",
}


class CampaignCost(BaseModel):
    """Upper bounds of one campaign's work: every iteration run, every cap filled.

    Each total comes with its contributions, keyed by the spec field that sets them, so that a
    refusal can name the field to lower.
    """

    box_atoms: int = Field(description="Atoms of the largest composition's box (what one DFT label holds).")
    labels: int = Field(
        description="DFT labels at most: initial and validation boxes, MD frames, and max_candidates per "
        "composition in every iteration of every stage (imported frames not counted)."
    )
    md_steps: int = Field(
        description="MD steps at most: initial and validation MD, exploration walkers in every iteration, "
        "production and observables runs (one per member)."
    )
    trainings: int = Field(description="Model trainings at most: every member in every iteration.")
    parts: dict[str, dict[str, int]] = Field(
        description="Per total (labels, md_steps, trainings): the spec field -> its share."
    )


def ion_atoms(name: str) -> int:
    """Atoms of one library ion, counted from its formula (no geometry is read)."""
    from ase.formula import Formula

    from ilflows.systems.ions import get_ion

    return len(Formula(get_ion(name).formula))


def box_atoms(system: SystemSpec) -> int:
    """Atoms of one packed box of ``system``."""
    return sum(count * ion_atoms(name) for name, count in system.ions.items())


def _md_frames(runs: list[MDFramesSpec]) -> tuple[int, int]:
    """Frames kept and MD steps of ``runs`` for one composition."""
    frames = sum(run.n_boxes * (run.n_steps // run.every + 1) for run in runs)
    return frames, sum(run.n_boxes * run.n_steps for run in runs)


def estimate(spec: CampaignSpec) -> CampaignCost:
    """Return the most work ``spec`` can ask for (pure: reads the spec's numbers only)."""
    n_systems = len(spec.system)
    initial, validation = spec.initial, spec.validation
    md_frames, md_steps = _md_frames(initial.md)
    held_frames, held_steps = _md_frames(validation.md)
    stages = spec.stages()
    iterations = sum(stage.max_iterations for stage in stages)
    explored_labels = explored_steps = 0
    for stage in stages:
        conditions = spec.explore.at_stage(stage)
        systems = stage.systems or range(n_systems)
        caps = sum(spec.select.window(k)[2] for k in systems)
        explored_labels += stage.max_iterations * caps
        explored_steps += stage.max_iterations * len(systems) * conditions.n_walkers * conditions.n_steps
    observables = spec.loop.observables
    labels = {
        "initial.boxes_per_density": n_systems
        * len(initial.density_factors)
        * initial.boxes_per_density
        * (1 + initial.rattled_copies),
        "initial.md": n_systems * md_frames,
        "validation.boxes_per_density": n_systems
        * len(validation.density_factors)
        * validation.boxes_per_density,
        "validation.md": n_systems * held_frames,
        "select.max_candidates": explored_labels,
    }
    steps = {
        "initial.md": n_systems * md_steps,
        "validation.md": n_systems * held_steps,
        "explore.n_steps": explored_steps,
        "production": sum(run.n_steps for run in spec.production),
        "loop.observables": iterations * spec.n_models * sum(r.n_steps for r in observables.runs)
        if observables
        else 0,
    }
    trainings = {"train.n_models": spec.n_models * (iterations + 1)}
    return CampaignCost(
        box_atoms=max(box_atoms(system) for system in spec.system),
        labels=sum(labels.values()),
        md_steps=sum(steps.values()),
        trainings=sum(trainings.values()),
        parts={"labels": labels, "md_steps": steps, "trainings": trainings},
    )


def check_cost(spec: CampaignSpec, limits: dict[str, int]) -> CampaignCost:
    """Return the estimate, or raise :class:`SpecError` naming the first total above its limit.

    ``limits``: total name (box_atoms, labels, md_steps, trainings) -> most allowed.
    """
    cost = estimate(spec)
    for total, limit in limits.items():
        value = getattr(cost, total)
        if value <= limit:
            continue
        if total == "box_atoms":
            field = "system.ions"
        else:
            field = max(cost.parts[total].items(), key=lambda part: part[1])[0]
        raise SpecError(
            f"{field}: the campaign would need up to {value:.3g} {WHAT[total]}, above the limit of "
            f"{limit:.3g} (setting max_{total}); lower {field}, or pass --force if it is meant"
        )
    return cost

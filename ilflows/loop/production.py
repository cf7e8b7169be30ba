"""Production MD with a campaign's final models, and the analysis of each run.

Queued once the loop stops (:func:`ilflows.loop.iteration.production_flow`), and per iteration
for ``loop.observables``: one ``produce`` job per run (MD with the committee of the iteration,
the chosen member driving, the others recording the deviation), then one ``analyse`` job that
turns its trajectory into a :class:`Properties` record.  The two are apart so that a failing
analysis never costs the MD.
"""

from __future__ import annotations

from jobflow import CURRENT_JOB

from ilflows.explore import EXPLORERS
from ilflows.loop.steps import _workdir, ilflows_job, previous_model
from ilflows.schemas import Frame, Production, Properties
from ilflows.schemas.campaign import CampaignSpec
from ilflows.schemas.control import ProductionSpec


def start_box(spec: CampaignSpec, run: ProductionSpec) -> Frame:
    """Pack the liquid at its reference density, or centre the single ion in its vacuum box."""
    from ilflows.systems import load_ion, pack_box

    system = spec.system[run.system]
    if run.molecule is None:
        return pack_box(system, system.density, run.seed, _workdir("packmol"))
    ion = load_ion(run.molecule)
    ion.set_cell([run.vacuum_box] * 3)
    ion.center()
    return Frame.from_ase(ion)


def run_molecules(spec: CampaignSpec, run: ProductionSpec) -> list[tuple[str, range]]:
    """Ion name and atom indices of each molecule of ``run``'s box."""
    from ilflows.systems import load_ion, topology

    if run.molecule is None:
        return topology(spec.system[run.system])
    return [(run.molecule, range(len(load_ion(run.molecule))))]


@ilflows_job(output_schema=Production)
def produce(
    spec: CampaignSpec, run: ProductionSpec, iteration: int, type_map: list[str], after: list | None = None
) -> Production:
    """Run production MD ``run`` with the committee trained in ``iteration``.

    ``after``: outputs of the training jobs, when they run in the same flow, so that this waits for them.
    """
    from ilflows.explore import get_explorer

    order = [run.model, *(k for k in range(spec.n_models) if k != run.model)]  # the chosen member drives
    found = [(k, previous_model(CURRENT_JOB.store, spec.name, iteration, k)) for k in order]
    members = [(k, model) for k, model in found if model is not None]
    if not members or members[0][0] != run.model:
        raise ValueError(
            f"production.{run.name}: member {run.model} of iteration {iteration} has no trained model; "
            "choose another production model"
        )
    start = start_box(spec, run)
    conditions = ("ensemble", "temperature", "pressure", "n_steps", "timestep", "frame_every")
    md = EXPLORERS.section(
        {"engine": spec.explore.engine, "n_walkers": 1, **{key: getattr(run, key) for key in conditions}}
    )
    models = [model for _, model in members]
    result = get_explorer(md.engine).explore(
        models, start, type_map, md, run.seed + 1, _workdir("md"), spec.dispersion
    )
    return Production(
        **result.model_dump(),
        campaign=spec.name,
        iteration=iteration,
        run=run.name,
        members=[k for k, _ in members],
        model_sha256=[model.sha256 for model in models],
    )


@ilflows_job(output_schema=Properties)
def analyse(
    spec: CampaignSpec, run: ProductionSpec, production: Production, production_uuid: str
) -> Properties:
    """Compute the properties ``run`` asks for from its trajectory."""
    from ilflows.analysis.properties import liquid_properties
    from ilflows.systems import topology

    molecules = (
        topology(spec.system[run.system])
        if run.molecule is None
        else [(run.molecule, range(len(production.trajectory.species)))]
    )
    return liquid_properties(production, run, molecules, production_uuid, trust_hi=spec.select.trust_hi)

"""Production entries checked before queueing, and a single ion in vacuum with a MACE committee.

A whole campaign's production runs and their analysis are tested in ``test_campaign.py``.
"""

from __future__ import annotations

import pytest
import yaml
from cli_runs import ONE_ITERATION, ilflows


def test_bad_production_entries_are_refused_before_queueing(tmp_path):
    bad = [
        ({"name": "x", "molecule": "TFSI", "ensemble": "nvt"}, "production.0.molecule: 'TFSI' is not an ion"),
        ({"name": "x", "model": 2}, "production.0.model: 2 but the committee has 2 members"),
        ({"name": "x", "rdf_pairs": [["Li", "O"]]}, "production.0.rdf_pairs: ['Li', 'O'] names elements"),
        (
            {"name": "x", "diffusion_window": [0.5, 0.1], "ensemble": "nvt"},
            "diffusion_window: [0.5, 0.1] must be",
        ),
        ({"name": "x", "diffusion_window": [0.1, 0.5]}, "diffusion_window: diffusion is measured in NVT"),
    ]
    for entry, message in bad:
        spec = tmp_path / "bad.yaml"
        spec.write_text(yaml.safe_dump({"name": "bad", **ONE_ITERATION, "production": [entry]}))
        proc = ilflows(["check", str(spec)], tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_single_tfsi_in_vacuum_with_a_mace_committee_gives_conformer_populations(tmp_path):
    from mace_models import write_committee

    from ilflows.analysis.properties import liquid_properties
    from ilflows.explore import EXPLORERS, get_explorer
    from ilflows.loop.production import run_molecules, start_box
    from ilflows.schemas import ModelFile, Production
    from ilflows.schemas.campaign import CampaignSpec

    run = {"name": "tfsi", "molecule": "TFSI", "ensemble": "nvt", "temperature": 298, "n_steps": 40}
    spec = CampaignSpec(
        name="vac",
        system={"ions": {"PYR14": 1, "TFSI": 1}, "density": 0.3},  # a box Packmol can fill
        train={"engine": "mace"},
        explore={"engine": "ase"},
        production=[{**run, "frame_every": 4, "vacuum_box": 16.0}],
    )
    elements = ["H", "C", "N", "O", "F", "S"]
    small = {"hidden_irreps": "8x0e+8x1o", "r_max": 4.0, "max_ell": 1, "correlation": 1}
    models = [ModelFile.from_path(p) for p in write_committee(tmp_path, elements, 2, seed=1, **small)]
    prod = spec.production[0]
    start = start_box(spec, prod)
    assert len(start.species) == 15 and start.cell[0][0] == 16.0
    md = EXPLORERS.section(
        dict(engine="ase", ensemble="nvt", temperature=298, n_steps=40, frame_every=4, timestep=0.5)
    )
    result = get_explorer("ase").explore(models, start, elements, md, 1, tmp_path)
    production = Production(
        **result.model_dump(),
        campaign="vac",
        iteration=0,
        run="tfsi",
        members=[0, 1],
        model_sha256=["a", "b"],
    )
    props = liquid_properties(production, prod, run_molecules(spec, prod), "uuid")
    assert props.n_frames == 9  # 11 frames, the first 20 % left out
    assert set(props.tfsi_conformers) <= {"Cis", "aCis", "Trans", "aTrans"}
    assert sum(props.tfsi_conformers.values()) == pytest.approx(1.0)
    assert props.tfsi_conformers.get("aTrans", 0) > 0  # starts from the aTrans template, 40 steps at 298 K

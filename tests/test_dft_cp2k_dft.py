"""Real CP2K PBE-D3(BJ) runs through atomate2's input set and custodian on one water molecule.

A 6 Å box at 150 Ry keeps each CP2K run near 2 s; the settings are the engine's, only cheaper.
"""

import shlex
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from ilflows.dft import ENGINES, get_engine
from ilflows.schemas.frames import Frame
from ilflows.settings import get_settings

CP2K = shlex.split(get_settings().cp2k_cmd)[0]
needs_cp2k = pytest.mark.skipif(
    shutil.which(CP2K) is None, reason=f"CP2K executable '{CP2K}' not found (set ILFLOWS_CP2K_CMD)"
)
WATER = Frame(
    species=["O", "H", "H"],
    positions=[[3.0, 3.0, 3.0], [3.76, 3.59, 3.0], [2.24, 3.59, 3.0]],
    cell=(6.0 * np.eye(3)).tolist(),
)
CHEAP = {"engine": "cp2k-dft", "cutoff": 150.0, "rel_cutoff": 30.0}


@pytest.fixture(scope="module")
def engine():
    return get_engine("cp2k-dft")


@pytest.fixture(scope="module")
def reference(engine, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ref")
    return engine.label(WATER, ENGINES.section(CHEAP), workdir), workdir


def test_spec_refuses_settings_the_engine_does_not_use():
    with pytest.raises(ValidationError, match="basis\n  Extra inputs"):  # cp2k-xtb, the default
        ENGINES.section({"basis": "TZVP-GTH"})
    with pytest.raises(ValidationError, match="functional\n  Input should be 'PBE' or 'B97-3c'"):
        ENGINES.section({"engine": "cp2k-dft", "functional": "SCAN"})
    with pytest.raises(ValidationError, match="B97-3c includes its own D3"):
        ENGINES.section({"engine": "cp2k-dft", "functional": "B97-3c", "dispersion": "D3"})
    with pytest.raises(ValueError, match="unknown DFT engine 'gaussian'; known: cp2k-dft, cp2k-xtb, vasp"):
        ENGINES.section({"engine": "gaussian"})
    spec = ENGINES.section({"engine": "cp2k-dft", "functional": "B97-3c", "cutoff": 800})
    assert type(spec).from_dict(spec.as_dict()) == spec  # every field dumped, still valid
    assert "encut" not in spec.model_dump()  # only its own engine's settings
    default = ENGINES.section()
    assert type(default).from_dict(default.as_dict()) == default and default.engine == "cp2k-xtb"


@needs_cp2k
def test_single_point_parsed(reference):
    result, workdir = reference
    assert result.converged and result.error is None, result.error
    assert result.engine == "cp2k-dft"
    # CP2K prints -17.22516 Hartree for this molecule at these settings.
    assert result.energy == pytest.approx(-17.22516 * 27.211386, abs=0.01)
    forces = np.array(result.forces)
    assert forces.shape == (3, 3)
    # Mirror x -> 6 Å - x swaps the hydrogens (the grid too); the net force is not zero at 150 Ry.
    assert forces[0, 0] == pytest.approx(0, abs=1e-4)
    assert forces[1] * [-1, 1, 1] == pytest.approx(forces[2], abs=1e-4)
    assert 0.5 < np.abs(forces).max() < 5  # eV/Å, not Hartree/bohr
    assert np.allclose(result.stress, np.array(result.stress).T, atol=1e-5)
    p = result.parameters
    assert (p["functional"], p["dispersion"], p["basis"], p["pseudopotential"]) == (
        "PBE",
        "D3(BJ)",
        "DZVP-MOLOPT-SR-GTH",
        "GTH-PBE",
    )
    assert p["kpoints"] == "gamma" and p["ot"] and not p["smearing"] and not p["spin_polarized"]
    assert p["custodian"] == []
    text = (workdir / "cp2k.inp").read_text()
    assert "&OT" in text and "&KPOINTS" not in text and "&SMEAR" not in text and "UKS False" in text
    assert "TYPE DFTD3(BJ)" in text and "BASIS_SET_FILE_NAME BASIS" in text
    assert "DZVP-MOLOPT-SR-GTH" in (workdir / "BASIS").read_text()


@needs_cp2k
@pytest.mark.slow
def test_forces_match_energy_finite_difference(engine, reference, tmp_path):
    forces = np.array(reference[0].forces)
    step = 0.005  # Å
    energies = []
    for sign in (1, -1):
        positions = np.array(WATER.positions)
        positions[1, 0] += sign * step
        moved = WATER.model_copy(update={"positions": positions.tolist()})
        energies.append(
            engine.label(moved, ENGINES.section(dict(**CHEAP, stress=False)), tmp_path / f"d{sign}").energy
        )
    assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[1, 0], rel=0.03)


@needs_cp2k
def test_unconverged_scf_is_a_failed_label_with_custodian_corrections(engine, tmp_path):
    result = engine.label(WATER, ENGINES.section(dict(**CHEAP, max_scf=1, max_errors=2)), tmp_path)
    assert not result.converged
    assert "SCF not converged" in result.error and "2 corrections" in result.error
    assert "\n" not in result.error
    assert result.energy is None and result.forces is None
    fixes = result.parameters["custodian"]
    assert [fix["handler"] for fix in fixes] == ["UnconvergedScfErrorHandler"] * 2
    # custodian's OT ladder: DIIS -> CG, then a 3-point line search.
    assert "'MINIMIZER': 'CG'" in str(fixes[0]["actions"])
    assert "'LINESEARCH': '3PNT'" in str(fixes[1]["actions"])


@needs_cp2k
def test_unknown_basis_is_a_failed_label(engine, tmp_path):
    result = engine.label(WATER, ENGINES.section(dict(**CHEAP, basis="NO-SUCH-BASIS")), tmp_path)
    assert not result.converged
    assert result.error.startswith("basis NO-SUCH-BASIS has no entry for H")


@needs_cp2k
@pytest.mark.slow
def test_aimd_steps_are_labelled_frames(engine, tmp_path):
    spec = ENGINES.section(CHEAP)
    run = engine.run_md(
        WATER, spec, tmp_path / "md", n_steps=4, temperature=300.0, timestep=0.5, every=2, seed=1
    )
    assert run.error is None
    labelled = [(frame, result) for _, frame, result in run.snapshots]
    assert [step for step, _, _ in run.snapshots] == [2, 4]
    assert [r.parameters["md_step"] for _, r in labelled] == [2, 4]
    for frame, result in labelled:
        assert result.converged and np.array(result.forces).shape == (3, 3)
        assert frame.cell == WATER.cell and not np.allclose(frame.positions, WATER.positions)
    assert labelled[0][1].parameters["thermostat"] == "CSVR"
    # The last written frame, labelled on its own, gives the same energy and forces.
    frame, result = labelled[-1]
    single = engine.label(frame, spec, tmp_path / "check")
    assert single.energy == pytest.approx(result.energy, abs=1e-5)
    assert np.allclose(single.forces, result.forces, atol=1e-4)
    assert np.allclose(single.stress, result.stress, atol=1e-4)


@needs_cp2k
@pytest.mark.slow
def test_b97_3c_runs_with_its_composite_terms(engine, tmp_path):
    """The BMIM-BF4 paper's B97-3c/TZVP-GTH with D3(BJ), C9 and SRB (cheap cutoff here)."""
    assert engine.parameters(ENGINES.section(dict(engine="cp2k-dft", functional="B97-3c")))["cutoff"] == 800.0
    result = engine.label(
        WATER, ENGINES.section(dict(**CHEAP | {"cutoff": 200.0}, functional="B97-3c")), tmp_path
    )
    assert result.converged, result.error
    assert result.parameters["basis"] == "TZVP-GTH" and result.parameters["dispersion_cutoff"] == 8.0
    text = (tmp_path / "cp2k.inp").read_text()
    for line in ("PARAMETRIZATION B97-3C", "REFERENCE_FUNCTIONAL B97-3c", "CALCULATE_C9_TERM True"):
        assert line in text
    assert "SHORT_RANGE_CORRECTION True" in text
    assert "B97-3c composite method" in (tmp_path / "cp2k.out").read_text()

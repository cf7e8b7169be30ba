"""Real CP2K GFN1-xTB runs on one PYR14+ BF4- pair (35 atoms, 12 Å box), about 2.5 s each."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.units import GPa

from ilflows.dft import ENGINES, get_engine
from ilflows.dft.cp2k_output import md_labels
from ilflows.schemas.frames import Frame
from ilflows.settings import get_settings

POSCAR = Path(__file__).resolve().parents[2] / "shared/peer-dpgen/confs/ip35.POSCAR"
CP2K = shlex.split(get_settings().cp2k_cmd)[0]
needs_cp2k = pytest.mark.skipif(
    shutil.which(CP2K) is None, reason=f"CP2K executable '{CP2K}' not found (set ILFLOWS_CP2K_CMD)"
)


@pytest.fixture(scope="module")
def atoms():
    return ase.io.read(POSCAR)


@pytest.fixture(scope="module")
def engine():
    return get_engine("cp2k-xtb")


@pytest.fixture(scope="module")
def reference(atoms, engine, tmp_path_factory):
    """The unperturbed frame labelled with the default spec (stress on)."""
    return engine.label(Frame.from_ase(atoms), ENGINES.section(), tmp_path_factory.mktemp("ref"))


def test_get_engine_unknown_name_lists_known():
    with pytest.raises(ValueError, match="cp2k-xtb"):
        get_engine("gaussian")


@needs_cp2k
def test_single_point_parsed(reference):
    assert reference.converged and reference.error is None
    assert reference.engine == "cp2k-xtb"
    # CP2K prints -55.1329 Hartree for this frame.
    assert reference.energy == pytest.approx(-55.1329 * 27.2114, abs=0.05)
    forces = np.array(reference.forces)
    assert forces.shape == (35, 3)
    assert np.abs(forces.sum(axis=0)).max() < 1e-4
    assert 0.5 < np.abs(forces).max() < 5  # eV/Å, not Hartree/bohr
    stress = np.array(reference.stress)
    assert stress.shape == (3, 3)
    assert np.allclose(stress, stress.T)
    params = reference.parameters
    assert params["eps_scf"] == 1e-6 and params["max_scf"] == 10
    assert params["stress_tensor"] == "ANALYTICAL" and params["charge"] == 0
    assert reference.wall_time > 0
    # the program's own version, read from its output ("CP2K| version string: CP2K version 2023.1")
    version = subprocess.run([CP2K, "--version"], capture_output=True, text=True).stdout
    assert f"CP2K version {reference.software['cp2k']}" in version
    assert set(reference.software) == {"ilflows", "cp2k"}


def test_a_label_document_states_its_formula_and_composition(atoms, reference):
    from ilflows.schemas import DFTLabel, FrameOrigin

    origin = FrameOrigin(campaign="c", stage="initial", method="packmol", index=0)
    label = DFTLabel(
        **reference.model_dump(),
        campaign="c",
        iteration=-1,
        frame_id=origin.frame_id,
        frame=Frame.from_ase(atoms),
        origin=origin,
    )
    assert label.formula == "C9H20BF4N" == atoms.get_chemical_formula("hill")  # PYR14+ BF4-
    assert label.composition == {"C": 9, "H": 20, "N": 1, "B": 1, "F": 4}


@needs_cp2k
@pytest.mark.slow
def test_forces_match_energy_finite_difference(atoms, engine, reference, tmp_path):
    forces = np.array(reference.forces)
    atom, axis = np.unravel_index(np.abs(forces).argmax(), forces.shape)
    step = 0.005  # Å
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[atom, axis] += sign * step
        result = engine.label(Frame.from_ase(moved), ENGINES.section(), tmp_path / f"d{sign}")
        energies.append(result.energy)
    assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[atom, axis], rel=0.03)


@needs_cp2k
@pytest.mark.slow
def test_stress_is_pressure_in_gpa(atoms, engine, reference, tmp_path):
    """1/3 of the trace equals -dE/dV from two isotropically strained copies."""
    points = []
    for factor in (1.002, 0.998):
        strained = atoms.copy()
        strained.set_cell(atoms.cell * factor, scale_atoms=True)
        result = engine.label(Frame.from_ase(strained), ENGINES.section(), tmp_path / str(factor))
        points.append((result.energy, strained.get_volume()))
    pressure = -(points[0][0] - points[1][0]) / (points[0][1] - points[1][1]) / GPa
    assert np.trace(reference.stress) / 3 == pytest.approx(pressure, rel=0.03)


@needs_cp2k
def test_skewed_cell_of_same_lattice_gives_same_label(atoms, engine, reference, tmp_path):
    """B = a + b spans the same lattice, so only a correct A/B/C cell gives the same numbers."""
    cell = np.array(atoms.cell)
    frame = Frame(
        species=atoms.get_chemical_symbols(),
        positions=atoms.positions.tolist(),
        cell=[cell[0].tolist(), (cell[0] + cell[1]).tolist(), cell[2].tolist()],
    )
    result = engine.label(frame, ENGINES.section(dict(stress=False)), tmp_path)
    assert result.converged and result.stress is None
    assert result.parameters["stress_tensor"] == "NONE"
    assert result.energy == pytest.approx(reference.energy, abs=1e-4)
    assert np.allclose(result.forces, reference.forces, atol=1e-4)


@needs_cp2k
def test_unconverged_scf_is_a_failed_label(atoms, engine, tmp_path):
    result = engine.label(Frame.from_ase(atoms), ENGINES.section(dict(max_scf=1)), tmp_path)
    assert not result.converged
    assert "SCF not converged" in result.error and "\n" not in result.error
    assert result.energy is None and result.forces is None and result.stress is None


@needs_cp2k
def test_cp2k_abort_is_a_failed_label(engine, tmp_path):
    frame = Frame(species=["Xx"], positions=[[0.0, 0.0, 0.0]], cell=(10 * np.eye(3)).tolist())
    result = engine.label(frame, ENGINES.section(), tmp_path)
    assert not result.converged
    assert result.error.startswith("cp2k aborted: Unknown element") and "\n" not in result.error


@needs_cp2k
def test_md_frames_carry_the_labels_a_single_point_gives(atoms, engine, tmp_path):
    run = engine.run_md(
        Frame.from_ase(atoms),
        ENGINES.section(),
        tmp_path / "md",
        n_steps=4,
        temperature=450,
        timestep=0.5,
        every=2,
        seed=5,
    )
    written = run.snapshots
    assert run.error is None and [step for step, _, _ in written] == [2, 4]
    assert all(label.converged and label.parameters["run_type"] == "MD" for _, _, label in written)
    assert written[0][1].positions != written[1][1].positions  # the atoms moved
    step, frame, label = written[-1]
    again = engine.label(frame, ENGINES.section(), tmp_path / "sp")
    assert again.energy == pytest.approx(label.energy, abs=1e-5)
    np.testing.assert_allclose(again.forces, label.forces, atol=1e-3)
    np.testing.assert_allclose(again.stress, label.stress, atol=1e-3)

    # A crash in the middle of step 4 (its frame half written, no step summary) keeps step 2.
    out = tmp_path / "md" / "cp2k.out"
    out.write_text(out.read_text().rsplit("MD| Step number", 1)[0])
    pos = tmp_path / "md" / "ilflows-pos-1.xyz"
    pos.write_text("".join(pos.read_text().splitlines(keepends=True)[:-5]))
    start = Frame.from_ase(atoms)
    kept = md_labels(
        "cp2k-xtb", label.parameters, ENGINES.section(), out.read_text(), tmp_path / "md", start, 2, 0.0
    )
    assert [step for step, _, _ in kept] == [2]
    assert kept[0][2].energy == written[0][2].energy and kept[0][1] == written[0][1]


@needs_cp2k
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun (Debian: openmpi-bin, with cp2k)")
def test_a_label_on_two_mpi_ranks_equals_the_serial_one(atoms, engine, reference, tmp_path, monkeypatch):
    """ILFLOWS_CP2K_CMD with an MPI launcher, as on a cluster node (srun there, Open MPI's mpirun here)."""
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []  # Open MPI refuses root without it
    command = shlex.join(["mpirun", *root, "--oversubscribe", "-np", "2", CP2K])
    monkeypatch.setenv("ILFLOWS_CP2K_CMD", command)
    get_settings.cache_clear()
    try:
        result = engine.label(Frame.from_ase(atoms), ENGINES.section(), tmp_path)
    finally:
        get_settings.cache_clear()
    assert result.converged, result.error
    out = (tmp_path / "cp2k.out").read_text()
    assert re.search(r"GLOBAL\| Total number of message passing processes\s+2\n", out)
    assert result.energy == pytest.approx(reference.energy, abs=1e-6)  # eV
    assert np.allclose(result.forces, reference.forces, atol=1e-4)  # eV/Å

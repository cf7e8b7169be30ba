"""ASE explorer: committee deviation matches separate MACE and DeePMD evaluations, NVT/NPT runs, blow-ups."""

from __future__ import annotations

import os
import subprocess
import sys

import ase
import numpy as np
import pytest
from ase import Atoms, units
from ase.data import atomic_masses, atomic_numbers
from ase.md.bussi import Bussi
from ase.md.velocitydistribution import thermalize_momenta
from mace_models import write_committee

from ilflows.execute import EngineError
from ilflows.explore import EXPLORERS, Ramp, get_explorer, model_devi
from ilflows.explore.ase_md import _Modifier
from ilflows.explore.committee import CommitteeCalculator
from ilflows.schemas.control import DispersionSpec
from ilflows.schemas.records import ModelFile
from ilflows.select import max_force_deviation

# Small members keep the file fast; the committee code does not depend on their size.
SMALL = {"hidden_irreps": "8x0e+8x1o", "r_max": 5.0, "max_ell": 2, "correlation": 2}


@pytest.fixture(scope="module")
def model_paths(type_map, tmp_path_factory):
    return write_committee(tmp_path_factory.mktemp("mace"), type_map, 3, seed=10, **SMALL)


@pytest.fixture(scope="module")
def mace_models(model_paths) -> list[ModelFile]:
    return [ModelFile.from_path(path) for path in model_paths]


def atoms_of(frame):
    from ase import Atoms

    return Atoms(frame.species, positions=frame.positions, cell=frame.cell, pbc=True)


def separate_forces(model_paths, frames) -> np.ndarray:
    """Forces of each member through its own MACECalculator, (n_models, n_frames, n_atoms, 3)."""
    from mace.calculators import MACECalculator

    out = []
    for path in model_paths:
        calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        out.append([calc.get_forces(atoms_of(frame)) for frame in frames])
    return np.array(out)


def test_committee_deviation_matches_separate_calculators(model_paths, peer_labels):
    frames = [label.frame for label in peer_labels[:3]]
    expected_forces = separate_forces(model_paths, frames)
    expected = max_force_deviation(expected_forces)
    assert (expected > 0).all()
    first, mean = CommitteeCalculator(model_paths), CommitteeCalculator(model_paths, drive="mean")
    for i, frame in enumerate(frames):
        atoms = atoms_of(frame)
        atoms.calc = first
        np.testing.assert_allclose(atoms.get_forces(), expected_forces[0, i], rtol=0, atol=1e-10)
        # model 0 drives; the other members run only when the deviation is asked for
        assert "deviation" not in first.results and list(first._members) == [0]
        assert first.get_property("deviation", atoms) == pytest.approx(expected[i], rel=0, abs=1e-8)
        np.testing.assert_allclose(first.results["forces_comm"], expected_forces[:, i], rtol=0, atol=1e-10)
        atoms.calc = mean
        np.testing.assert_allclose(atoms.get_forces(), expected_forces[:, i].mean(axis=0), rtol=0, atol=1e-10)
        assert mean.results["deviation"] == pytest.approx(expected[i], rel=0, abs=1e-8)
        assert atoms.get_stress().shape == (6,)


@pytest.mark.slow  # trains the two tiny DeePMD models when no other test has
def test_mixed_committee_deviation_spans_both_families(model_paths, tiny_models, peer_labels, tmp_path):
    """Two MACE and two DeePMD members: one deviation over all four, each evaluated on its own."""
    from deepmd.infer import DeepPot

    frames = [label.frame for label in peer_labels[:2]]
    deepmd_paths = [m.write(tmp_path / f"dp{i}.pb") for i, m in enumerate(tiny_models)]
    mace_forces = separate_forces(model_paths[:2], frames)
    deepmd_forces = []
    for path in deepmd_paths:
        pot = DeepPot(str(path))
        types = [pot.get_type_map().index(s) for s in frames[0].species]
        deepmd_forces.append(
            [
                pot.eval(np.reshape(f.positions, (1, -1)), np.reshape(f.cell, (1, 9)), types)[1][0]
                for f in frames
            ]
        )
    expected = max_force_deviation(np.concatenate([mace_forces, np.array(deepmd_forces)]))
    calc = CommitteeCalculator([*model_paths[:2], *deepmd_paths])
    for i, frame in enumerate(frames):
        atoms = atoms_of(frame)
        atoms.calc = calc
        assert calc.get_property("deviation", atoms) == pytest.approx(expected[i], rel=0, abs=1e-8)
        np.testing.assert_allclose(calc.results["forces_comm"][3], deepmd_forces[1][i], rtol=0, atol=1e-10)
    # the families disagree far more than the members of one family: the mixed deviation is larger
    assert (expected > max_force_deviation(mace_forces)).all()


@pytest.mark.slow  # a fresh process: TensorFlow reads its thread settings once, when it loads
def test_deepmd_members_keep_to_the_threads_setting(tiny_models, peer_labels, tmp_path):
    """Left alone, TensorFlow's pools take every core of the node, beside the other workers' engines."""
    paths = [str(m.write(tmp_path / f"dp{i}.pb")) for i, m in enumerate(tiny_models)]
    (tmp_path / "frame.json").write_text(peer_labels[0].frame.model_dump_json())
    code = f"""
from ilflows.explore.committee import CommitteeCalculator
from ilflows.schemas import Frame
calc = CommitteeCalculator({paths})
atoms = Frame.model_validate_json(open({str(tmp_path / "frame.json")!r}).read()).to_ase()
calc.calculate(atoms, ["forces_comm"])
from deepmd.tf.env import default_tf_session_config as config
print(config.intra_op_parallelism_threads, config.inter_op_parallelism_threads)
"""
    env = {**os.environ, "ILFLOWS_THREADS": "2"}
    for name in ("DP_INTRA_OP_PARALLELISM_THREADS", "TF_INTRA_OP_PARALLELISM_THREADS"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "1"]  # the setting, not TensorFlow's 0 (every core)


def test_committee_rejects_foreign_elements_and_bad_drive(model_paths, peer_labels):
    atoms = atoms_of(peer_labels[0].frame)
    atoms.symbols[0] = "O"
    atoms.calc = CommitteeCalculator(model_paths)
    with pytest.raises(ValueError, match=r"atomic numbers \[8\]"):
        atoms.get_forces()
    with pytest.raises(ValueError, match="drive"):
        CommitteeCalculator(model_paths, drive="median")


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_md_records_frames_and_deviations(
    ensemble, mace_models, model_paths, peer_labels, type_map, tmp_path
):
    spec = EXPLORERS.section(
        dict(engine="ase", ensemble=ensemble, temperature=450.0, n_steps=20, timestep=0.5, frame_every=5)
    )
    start = peer_labels[0].frame
    result = get_explorer("ase").explore(mace_models, start, type_map, spec, seed=5, workdir=tmp_path)
    traj = result.trajectory
    assert result.engine == "ase" and result.ensemble == ensemble
    assert traj.steps == [0, 5, 10, 15, 20] and len(result.deviations) == 5
    assert traj.species == start.species and np.array(traj.positions).shape == (5, start.n_atoms, 3)
    assert result.parameters["seed"] == 5 and result.parameters["models"] == [m.sha256 for m in mace_models]
    assert result.wall_time > 0
    assert result.software["ase"] == ase.__version__
    assert not np.allclose(traj.positions[0], traj.positions[-1])
    # each recorded deviation is the committee's on that very frame, in eV/Å
    frames = [traj.frame(i) for i in (0, len(traj.steps) - 1)]
    expected = max_force_deviation(separate_forces(model_paths, frames))
    np.testing.assert_allclose(np.array(result.deviations)[[0, -1]], expected, rtol=0, atol=1e-8)
    assert (expected > 0).all() and (expected < 10).all()
    # energy and virial deviations, DeePMD's definitions, from each member on its own
    from mace.calculators import MACECalculator

    members = [MACECalculator(model_paths=str(p), device="cpu", default_dtype="float64") for p in model_paths]
    n = start.n_atoms
    for i in (0, len(traj.steps) - 1):
        atoms = atoms_of(traj.frame(i))
        energies, virials = [], []
        for calc in members:
            atoms.calc = calc
            energies.append(atoms.get_potential_energy() / n)
            virials.append((-atoms.get_stress(voigt=False) * atoms.get_volume() / n).ravel())
        assert result.energy_deviations[i] == pytest.approx(np.std(energies), rel=1e-6, abs=1e-12)
        assert result.virial_deviations[i] == pytest.approx(np.std(virials, axis=0).max(), rel=1e-6)
    table = model_devi.read(tmp_path / "model_devi.out")  # DeePMD's columns, one reader for both explorers
    assert table.steps == traj.steps
    np.testing.assert_allclose(table.max_devi_f, result.deviations, rtol=1e-6)
    np.testing.assert_allclose(table.devi_e, result.energy_deviations, rtol=1e-6)
    np.testing.assert_allclose(table.max_devi_v, result.virial_deviations, rtol=1e-6)
    assert (tmp_path / "traj.extxyz").exists() and (tmp_path / "md.log").exists()
    cells = np.array(traj.cells)
    np.testing.assert_allclose(cells[0], np.eye(3) * 12.0)
    if ensemble == "nvt":
        assert result.pressure is None and result.parameters["thermostat"] == "bussi"
        np.testing.assert_allclose(cells[-1], cells[0], rtol=0, atol=0)
    else:
        assert result.pressure == 1.0 and result.parameters["barostat"] == "mtk-iso"
        assert not np.allclose(cells[-1], cells[0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(cells[-1], np.eye(3) * cells[-1][0, 0], atol=1e-12)  # iso: stays a cube


def test_blow_up_raises_and_keeps_frames(mace_models, peer_labels, type_map, tmp_path, monkeypatch):
    evaluate, calls = CommitteeCalculator._evaluate, []

    def failing(self, k):
        calls.append(k)
        if len(calls) > 12:  # 3 members at steps 0 and 5, model 0 alone at steps 1-4 and 6-7
            raise FloatingPointError(f"committee member {k} returned non-finite forces")
        return evaluate(self, k)

    monkeypatch.setattr(CommitteeCalculator, "_evaluate", failing)
    spec = EXPLORERS.section(dict(engine="ase", n_steps=20, frame_every=5))
    with pytest.raises(EngineError, match="blew up after 7 steps.*the 2 frames"):
        get_explorer("ase").explore(
            mace_models, peer_labels[0].frame, type_map, spec, seed=1, workdir=tmp_path
        )
    assert len(model_devi.read(tmp_path / "model_devi.out").steps) == 2


def test_explorer_needs_no_program_and_checks_inputs(mace_models, peer_labels, type_map, tmp_path):
    explorer = get_explorer("ase")
    assert explorer.name == "ase" and explorer.executables() == []
    with pytest.raises(ValueError, match="known: ase, lammps-deepmd"):
        get_explorer("gromacs")
    spec = EXPLORERS.section(dict(engine="ase", n_steps=5, frame_every=5))
    with pytest.raises(ValueError, match="not in type_map"):
        explorer.explore(mace_models, peer_labels[0].frame, ["H", "C"], spec, seed=1, workdir=tmp_path)
    with pytest.raises(ValueError, match="non-negative"):
        explorer.explore(mace_models, peer_labels[0].frame, type_map, spec, seed=-1, workdir=tmp_path)


def test_ramp_follows_the_papers_formula():
    ramp = Ramp(start=230.0, end=500.0, amplitude=20.0, period=100.0)
    assert ramp.at(0.0, 1000.0) == 230.0
    assert ramp.at(500.0, 1000.0) == pytest.approx(365.0 + 20.0 * np.sin(5.0))
    assert ramp.at(1000.0, 1000.0) == pytest.approx(500.0 + 20.0 * np.sin(10.0))


def test_density_and_temperature_ramps_drive_the_run(mace_models, peer_labels, type_map, tmp_path):
    start = peer_labels[0].frame
    grams = sum(atomic_masses[atomic_numbers[s]] for s in start.species) / units.mol
    density = Ramp(start=0.25, end=0.35, amplitude=0.01, period=2.0)
    temperature = Ramp(start=300.0, end=600.0)
    spec = EXPLORERS.section(
        dict(
            engine="ase",
            n_steps=10,
            timestep=0.5,
            frame_every=5,
            density_ramp=density,
            temperature_ramp=temperature,
        )
    )
    result = get_explorer("ase").explore(mace_models, start, type_map, spec, seed=3, workdir=tmp_path)
    t_end = spec.n_steps * spec.timestep
    for step, cell in zip(result.trajectory.steps, result.trajectory.cells, strict=True):
        volume = abs(np.linalg.det(cell))
        assert grams / volume * 1e24 == pytest.approx(density.at(step * spec.timestep, t_end), rel=1e-10)
    assert result.parameters["temperature_ramp"]["end"] == 600.0
    # the thermostat's target follows the temperature ramp
    atoms = Atoms(start.species, positions=start.positions, cell=start.cell, pbc=True)
    thermalize_momenta(atoms, 300.0, rng=np.random.default_rng(1))
    dyn = Bussi(atoms, 0.5 * units.fs, 300.0, taut=50 * units.fs)
    dyn.nsteps = 6
    _Modifier(dyn, atoms, spec)()
    assert dyn.target_kinetic_energy == pytest.approx(0.5 * dyn.ndof * units.kB * temperature.at(3.0, t_end))


def test_walker_stops_at_the_deviation_threshold(mace_models, peer_labels, type_map, tmp_path):
    spec = EXPLORERS.section(
        dict(engine="ase", n_steps=20, frame_every=5, stop_deviation=1e-9)
    )  # any frame reaches it
    result = get_explorer("ase").explore(mace_models, peer_labels[0].frame, type_map, spec, 1, tmp_path / "a")
    assert result.stopped_at == 0 and result.trajectory.steps == [0] and len(result.deviations) == 1
    spec = spec.model_copy(update={"stop_deviation": 1e6})
    result = get_explorer("ase").explore(mace_models, peer_labels[0].frame, type_map, spec, 1, tmp_path / "b")
    assert result.stopped_at is None and result.trajectory.steps == [0, 5, 10, 15, 20]


def test_hybrid_d3_moves_the_atoms_but_not_the_deviation(mace_models, peer_labels, type_map, tmp_path):
    spec = EXPLORERS.section(dict(engine="ase", n_steps=5, frame_every=5))
    start = peer_labels[0].frame
    plain = get_explorer("ase").explore(mace_models, start, type_map, spec, 2, tmp_path / "plain")
    d3 = DispersionSpec(functional="b97-3c", cutoff=8.0)
    hybrid = get_explorer("ase").explore(mace_models, start, type_map, spec, 2, tmp_path / "d3", d3)
    assert hybrid.parameters["dispersion"] == {"functional": "b97-3c", "damping": "bj", "cutoff": 8.0}
    assert hybrid.deviations[0] == plain.deviations[0]  # same start: D3 shifts every member alike
    assert not np.allclose(hybrid.trajectory.positions[1], plain.trajectory.positions[1], rtol=0, atol=1e-9)

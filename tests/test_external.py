"""Importing labelled frames computed elsewhere: the EAN reference set, the peer's DeePMD data, units."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ilflows.external import read_deepmd_npy, read_extxyz

SHARED = Path(__file__).resolve().parents[2] / "shared"
EAN = SHARED / "reference-data/EAN_neuralil_validation_75frames.extxyz"
PEER = SHARED / "peer-dpgen/init_data/ip35"
EAN_SOURCE = "neuralil-public-releases@dcfadc67 data_sets/EAN/validation_original.json"
EV_PER_A3_IN_GPA = 160.21766208  # DeePMD's and dpdata's conversion factor


@pytest.fixture(scope="module")
def ean():
    if not EAN.is_file():
        pytest.skip(f"EAN reference data not found at {EAN}")
    return read_extxyz(
        EAN, campaign="ean", stage="validation", level_of_theory="not stated", source=EAN_SOURCE
    )


def _pair(energy=None, forces=None, stress=None, dx=0.8) -> Atoms:
    """Two H atoms in a 5 Å box with the given single-point results (ASE units and signs)."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [dx, 0, 0]], cell=[5, 5, 5], pbc=True)
    results = {
        k: v for k, v in {"energy": energy, "forces": forces, "stress": stress}.items() if v is not None
    }
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def test_ean_frames_species_and_provenance(ean):
    report = ean.report
    assert (report.n_frames, report.n_skipped) == (75, 0)
    assert report.compositions == {"C30H120N30O45": 75}
    assert report.species == {"H": 120 * 75, "C": 30 * 75, "N": 30 * 75, "O": 45 * 75}
    assert report.n_with_stress == 0
    label = ean.labels[3]
    assert (label.engine, label.converged, label.wall_time, label.iteration) == ("external", True, 0.0, -1)
    assert label.stress is None and label.frame.n_atoms == 225
    assert label.frame_id == "ean/validation/import/3"
    assert (label.origin.stage, label.origin.method, label.origin.index) == ("validation", "import", 3)
    assert label.parameters == {
        "source_path": str(EAN),
        "format": "extxyz",
        "energy_unit": "eV",
        "force_unit": "eV/Å",
        "level_of_theory": "not stated",
        "source": EAN_SOURCE,
        "sha256": hashlib.sha256(EAN.read_bytes()).hexdigest(),
        "set_name": "import",
        "frame_index": 3,
    }


def test_ean_net_forces_are_not_zero(ean):
    net = np.array([np.sum(label.forces, axis=0) for label in ean.labels])
    # The README's figures: mean |component| about 0.6 eV/Å, up to 2.3 eV/Å, summed over 225 atoms.
    assert np.abs(net).mean() == pytest.approx(0.591, abs=1e-3)
    assert np.abs(net).max() == pytest.approx(2.345, abs=1e-3)
    report = ean.report
    assert report.net_force == pytest.approx(np.linalg.norm(net, axis=1).tolist())
    assert report.net_force_mean == pytest.approx(1.206, abs=1e-3)
    assert report.net_force_max == pytest.approx(2.535, abs=1e-3)
    assert report.n_net_force_above_tol == 75
    assert "75/75 frames above 0.1 eV/Å" in report.summary()


def test_ean_flags_exactly_the_high_energy_frames(ean):
    # Energies straight from the file's comment lines, independent of ASE and of the reader.
    energies = np.array([float(e) for e in re.findall(r" energy=(\S+)", EAN.read_text())])
    assert len(energies) == 75
    above = energies - np.median(energies)
    high = {int(i) for i in np.flatnonzero(above > 20.0)}  # the README: 4 frames > 20 eV above the median
    assert high == {9, 21, 31, 52}
    assert sorted(above)[-5] == pytest.approx(11.16, abs=0.01)  # the next frame is well below them
    report = ean.report
    assert set(report.energy_outliers) == high
    assert report.energy_outliers == pytest.approx({i: energies[i] for i in high})
    assert report.energy == pytest.approx((-1272.544, -1270.790, -1181.614), abs=1e-3)
    assert report.energy_per_atom[1] == pytest.approx(-1270.790 / 225, abs=1e-5)
    # The highest frame holds the closest contact (H-H 0.867 Å) and the largest force.
    assert (report.min_distance, report.min_distance_index) == (pytest.approx(0.8675, abs=1e-4), 52)
    assert (max(report.max_force), int(np.argmax(report.max_force))) == (pytest.approx(8.766, abs=1e-3), 52)
    summary = report.summary()
    assert "frame 52 (-1181.6 eV)" in summary and "C30H120N30O45 (75 frames)" in summary


def test_ean_read_as_hartree_scales_by_hartree(ean):
    hartree = read_extxyz(
        EAN, campaign="ean", stage="validation", level_of_theory="-", source="-", energy_unit="Hartree"
    )
    ev = np.array([label.energy for label in ean.labels])
    assert [label.energy for label in hartree.labels] == pytest.approx(ev * units.Hartree, rel=1e-12)
    assert ev == pytest.approx(np.array([label.energy for label in hartree.labels]) / 27.211386, rel=1e-6)
    assert hartree.labels[0].forces == ean.labels[0].forces
    assert hartree.labels[0].parameters["energy_unit"] == "Hartree"


@pytest.mark.parametrize(
    ("energy_unit", "force_unit", "e_factor", "f_factor"),
    [
        ("Hartree", "Hartree/bohr", units.Hartree, units.Hartree / units.Bohr),
        ("kcal/mol", "kcal/mol/Å", units.kcal / units.mol, units.kcal / units.mol),
        ("kJ/mol", "kJ/mol/A", units.kJ / units.mol, units.kJ / units.mol),
    ],
)
def test_units_round_trip(ean, tmp_path, energy_unit, force_unit, e_factor, f_factor):
    frames = []
    for label in ean.labels[:5]:
        atoms = label.frame.to_ase()
        atoms.calc = SinglePointCalculator(
            atoms, energy=label.energy / e_factor, forces=np.array(label.forces) / f_factor
        )
        frames.append(atoms)
    ase.io.write(tmp_path / "converted.extxyz", frames, format="extxyz")
    back = read_extxyz(
        tmp_path / "converted.extxyz",
        campaign="c",
        stage="initial",
        level_of_theory="-",
        source="-",
        energy_unit=energy_unit,
        force_unit=force_unit,
    )
    for original, label in zip(ean.labels[:5], back.labels, strict=True):
        assert label.energy == pytest.approx(original.energy, rel=1e-9)
        # ASE writes 8 decimals: 5e-9 Hartree/bohr is 2.6e-7 eV/Å.
        assert np.allclose(label.forces, original.forces, rtol=0, atol=1e-6)
        assert label.parameters["force_unit"] == force_unit


@pytest.mark.parametrize(
    ("argument", "value", "accepted"),
    [("energy_unit", "Hartrees", "Hartree, Ry, kcal/mol, kJ/mol"), ("force_unit", "eV/nm", "eV/Å")],
)
def test_unknown_unit_is_one_line_naming_argument(tmp_path, argument, value, accepted):
    ase.io.write(tmp_path / "a.extxyz", _pair(1.0, np.zeros((2, 3))))
    with pytest.raises(ValueError, match=re.escape(f"{argument}={value!r} is not supported")) as error:
        read_extxyz(
            tmp_path / "a.extxyz",
            campaign="c",
            stage="initial",
            level_of_theory="-",
            source="-",
            **{argument: value},
        )
    assert accepted in str(error.value) and "\n" not in str(error.value)


def test_frames_without_energy_or_forces_are_skipped_and_counted(tmp_path):
    forces = np.array([[0.5, 0, 0], [-0.5, 0, 0]])
    frames = [
        _pair(-1.0, forces),
        _pair(forces=forces),
        _pair(energy=-2.0),
        _pair(float("nan"), forces),
        _pair(-1.1, forces, dx=0.75),
    ]
    ase.io.write(tmp_path / "gaps.extxyz", frames)
    imported = read_extxyz(
        tmp_path / "gaps.extxyz", campaign="c", stage="initial", level_of_theory="-", source="-"
    )
    report = imported.report
    assert (report.n_frames, report.n_skipped) == (2, 3)
    assert report.skipped == {1: "no energy", 2: "no forces", 3: "energy or forces not finite"}
    assert [label.energy for label in imported.labels] == [-1.0, -1.1]
    assert [label.origin.index for label in imported.labels] == [0, 1]
    assert [label.parameters["frame_index"] for label in imported.labels] == [0, 4]
    assert report.min_distance == pytest.approx(0.75) and report.min_distance_index == 1
    assert (
        "2 frames, 3 skipped (1 x no energy; 1 x no forces; 1 x energy or forces not finite)"
        in report.summary()
    )

    ase.io.write(tmp_path / "none.extxyz", frames[1:3])
    with pytest.raises(ValueError, match="no frame with energy and forces"):
        read_extxyz(tmp_path / "none.extxyz", campaign="c", stage="initial", level_of_theory="-", source="-")


def test_extxyz_stress_becomes_gpa_with_pressure_sign(tmp_path):
    # ASE's stress is positive when stretched: a box compressed to 2 GPa has stress -2 GPa.
    ase_stress = np.array([-2.0, -2.0, -2.0, 0.1, 0.2, 0.3]) * units.GPa
    ase.io.write(tmp_path / "s.extxyz", _pair(-1.0, np.zeros((2, 3)), ase_stress))
    imported = read_extxyz(
        tmp_path / "s.extxyz", campaign="c", stage="initial", level_of_theory="-", source="-"
    )
    expected = [[2.0, -0.3, -0.2], [-0.3, 2.0, -0.1], [-0.2, -0.1, 2.0]]
    assert np.allclose(imported.labels[0].stress, expected)
    assert imported.report.n_with_stress == 1


def test_peer_deepmd_system():
    if not PEER.is_dir():
        pytest.skip(f"peer DeePMD data not found at {PEER}")
    imported = read_deepmd_npy(
        PEER, campaign="peer", stage="initial", level_of_theory="GFN1-xTB", source="peer"
    )
    report = imported.report
    assert (report.n_frames, report.n_skipped) == (20, 0)
    assert report.compositions == {"C9H20BF4N": 20}
    assert report.species == {"H": 400, "B": 20, "C": 180, "N": 20, "F": 80}
    assert report.n_with_stress == 0 and all(label.stress is None for label in imported.labels)
    energy = np.load(PEER / "set.000/energy.npy")
    force = np.load(PEER / "set.000/force.npy")
    assert [label.energy for label in imported.labels] == pytest.approx(energy.ravel().tolist())
    assert np.allclose(imported.labels[7].forces, force[7].reshape(-1, 3))
    assert (
        imported.labels[7].parameters["set"] == "set.000"
        and imported.labels[7].parameters["frame_index"] == 7
    )
    assert imported.labels[0].frame.species[:3] == ["H", "H", "H"]
    # xTB forces sum to zero; the rattled peer frames hold a 0.60 Å C-H contact (frame 10, 109 eV/Å).
    assert report.net_force_max < 1e-3 and report.n_net_force_above_tol == 0
    assert (report.min_distance, report.min_distance_index) == (pytest.approx(0.598, abs=1e-3), 10)
    assert max(report.max_force) == pytest.approx(109.4, abs=0.1)


def _write_set(folder: Path, **arrays: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)


@pytest.mark.parametrize(("energy_unit", "factor"), [("eV", 1.0), ("kcal/mol", units.kcal / units.mol)])
def test_deepmd_virial_round_trip_over_sets(tmp_path, energy_unit, factor):
    (tmp_path / "type_map.raw").write_text("H\nO\n")
    (tmp_path / "type.raw").write_text("1\n0\n0\n")
    rng = np.random.default_rng(0)
    boxes = np.array([np.diag([6.0, 7.0, 8.0]), [[6.0, 0, 0], [1.0, 7.0, 0], [0.5, 0.5, 8.0]]] * 2)
    volumes = np.abs(np.linalg.det(boxes))
    stress = rng.normal(size=(4, 3, 3))
    stress = (stress + stress.transpose(0, 2, 1)) / 2  # GPa, pressure sign
    virial = stress * volumes[:, None, None] / EV_PER_A3_IN_GPA / factor  # in energy_unit
    coord = rng.uniform(0, 5, size=(4, 9))
    energy = np.array([-10.0, -10.2, -10.1, -9.9]) / factor
    force = rng.normal(size=(4, 9)) / factor
    arrays = {"box": boxes.reshape(4, 9), "coord": coord, "energy": energy, "force": force}
    arrays["virial"] = virial.reshape(4, 9)
    _write_set(tmp_path / "set.000", **{k: v[:2] for k, v in arrays.items()})
    _write_set(tmp_path / "set.001", **{k: v[2:] for k, v in arrays.items()})
    _write_set(tmp_path / "set.002", box=boxes[:1].reshape(1, 9), coord=coord[:1])  # unlabelled
    imported = read_deepmd_npy(
        tmp_path,
        campaign="c",
        stage="validation",
        level_of_theory="-",
        source="-",
        energy_unit=energy_unit,
        force_unit=f"{energy_unit}/Å",
    )
    assert imported.report.n_frames == 4 and imported.report.skipped == {4: "no energy"}
    assert imported.report.n_with_stress == 4
    for i, label in enumerate(imported.labels):
        assert np.allclose(label.stress, stress[i], rtol=1e-9, atol=1e-12)
        assert label.energy == pytest.approx(energy[i] * factor)
        assert np.allclose(label.forces, force[i].reshape(3, 3) * factor)
        assert label.parameters["frame_index"] == i
        assert label.parameters["set"] == ("set.000" if i < 2 else "set.001")
        assert label.frame.species == ["O", "H", "H"]


def test_not_a_deepmd_system(tmp_path):
    with pytest.raises(ValueError, match="not a DeePMD system"):
        read_deepmd_npy(tmp_path, campaign="c", stage="initial", level_of_theory="-", source="-")


def test_a_deepmd_set_with_forces_for_too_few_atoms_is_skipped(tmp_path):
    (tmp_path / "type_map.raw").write_text("H\nO\n")
    (tmp_path / "type.raw").write_text("1\n0\n0\n")
    coord = np.random.default_rng(1).uniform(0, 5, size=(2, 9))
    box = np.tile(np.diag([6.0, 7.0, 8.0]).ravel(), (2, 1))
    _write_set(
        tmp_path / "set.000", box=box, coord=coord, energy=np.array([-10.0, -10.1]), force=np.zeros((2, 9))
    )
    _write_set(
        tmp_path / "set.001", box=box[:1], coord=coord[:1], energy=np.array([-9.0]), force=np.zeros((1, 6))
    )
    imported = read_deepmd_npy(tmp_path, campaign="c", stage="initial", level_of_theory="-", source="-")
    assert imported.report.n_frames == 2 and imported.report.skipped == {2: "forces for 2 of 3 atoms"}

"""Ion library, Packmol boxes and initial frames (runs the real packmol; about a second)."""

from __future__ import annotations

import shutil
from itertools import product

import numpy as np
import pytest
from ase.units import _Nav

from ilflows.schemas.campaign import CampaignSpec, InitialSpec, SpecError, SystemSpec, load_spec
from ilflows.systems import (
    ION_LIBRARY,
    Ion,
    PackingError,
    check_system,
    initial_frames,
    load_ion,
    molar_mass,
    pack_box,
    start_frames,
)
from ilflows.systems.packing import n_initial_frames

pytestmark = pytest.mark.skipif(shutil.which("packmol") is None, reason="packmol not installed")

# 2 pairs at 0.4 g/cm^3: a 12.4 Å box, small enough to pack in milliseconds.
SMALL = SystemSpec(cation="PYR14", anion="BF4", n_pairs=2, density=0.4)


def molecules(system: SystemSpec) -> list[tuple[str, slice]]:
    """(ion name, atom slice) of each molecule, in the Frame's order."""
    out, start = [], 0
    for name in [system.cation] * system.n_pairs + [system.anion] * system.n_pairs:
        out.append((name, slice(start, start + len(load_ion(name)))))
        start += len(load_ion(name))
    return out


def unwrap(positions: np.ndarray, template: np.ndarray, edge: float) -> np.ndarray:
    """Join a molecule across the cubic cell by walking its bonds with minimum-image vectors."""
    bonded = np.linalg.norm(template[:, None] - template[None], axis=-1) < 1.9
    out, done, todo = positions.copy(), {0}, [0]
    while todo:
        i = todo.pop()
        for j in np.flatnonzero(bonded[i]):
            if j not in done:
                d = positions[j] - positions[i]
                out[j] = out[i] + d - edge * np.round(d / edge)
                done.add(j)
                todo.append(j)
    return out


def min_intermolecular_distance(frame, system: SystemSpec) -> float:
    """Smallest distance between atoms of different molecules or periodic images of any molecule."""
    pos, edge = np.asarray(frame.positions), frame.cell[0][0]
    mol = np.empty(frame.n_atoms, int)
    for k, (_, sl) in enumerate(molecules(system)):
        mol[sl] = k
    best = np.inf
    for shift in product((-1, 0, 1), repeat=3):
        d = np.linalg.norm(pos[:, None] + edge * np.array(shift) - pos[None], axis=-1)
        if shift == (0, 0, 0):
            d[mol[:, None] == mol[None]] = np.inf
        best = min(best, d.min())
    return float(best)


def density(frame) -> float:
    return frame.to_ase().get_masses().sum() / _Nav / (frame.volume * 1e-24)


@pytest.fixture(scope="module")
def small_box(tmp_path_factory):
    return pack_box(SMALL, SMALL.density, seed=3, workdir=tmp_path_factory.mktemp("pack"))


# ---- ion library ---------------------------------------------------------------------------


@pytest.mark.parametrize("ion", ION_LIBRARY.values(), ids=lambda ion: ion.name)
def test_ion_geometry_matches_its_formula(ion: Ion):
    assert load_ion(ion.name).get_chemical_formula(mode="hill") == ion.formula


def test_ion_charges_and_masses():
    assert ION_LIBRARY["PYR14"].charge == 1 and ION_LIBRARY["BF4"].charge == -1
    assert molar_mass("PYR14") == pytest.approx(142.26, abs=0.01)
    assert molar_mass(ION_LIBRARY["BF4"]) == pytest.approx(86.80, abs=0.01)


# ---- pack_box ------------------------------------------------------------------------------


def test_packed_box_has_requested_density_and_order(small_box):
    assert density(small_box) == pytest.approx(SMALL.density, rel=1e-6)
    cell = np.asarray(small_box.cell)
    assert np.allclose(cell, np.eye(3) * cell[0, 0])
    cation, anion = load_ion("PYR14"), load_ion("BF4")
    expected = cation.get_chemical_symbols() * 2 + anion.get_chemical_symbols() * 2
    assert small_box.species == expected


def test_packed_molecules_are_intact(small_box):
    pos, edge = np.asarray(small_box.positions), small_box.cell[0][0]
    for name, sl in molecules(SMALL):
        template = load_ion(name).positions
        mol = unwrap(pos[sl], template, edge)
        got = np.linalg.norm(mol[:, None] - mol[None], axis=-1)
        want = np.linalg.norm(template[:, None] - template[None], axis=-1)
        assert np.abs(got - want).max() < 1e-6


def test_packed_molecules_keep_tolerance_across_images(small_box):
    assert min_intermolecular_distance(small_box, SMALL) >= 0.9 * SMALL.tolerance


def test_packing_is_seeded(tmp_path):
    one = pack_box(SMALL, SMALL.density, seed=5, workdir=tmp_path / "a")
    again = pack_box(SMALL, SMALL.density, seed=5, workdir=tmp_path / "b")
    other = pack_box(SMALL, SMALL.density, seed=6, workdir=tmp_path / "c")
    assert one.positions == again.positions
    assert one.positions != other.positions


def test_packmol_failure_names_the_fix(tmp_path):
    # 3 pairs at 1.07 g/cm^3 pass check_fits (10.2 Å box) but Packmol cannot place them.
    system = SystemSpec(cation="PYR14", anion="BF4", n_pairs=3, density=1.07)
    with pytest.raises(PackingError, match="lower the density"):
        pack_box(system, system.density, seed=7, workdir=tmp_path)
    assert (tmp_path / "packmol.log").exists()


def test_negative_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="seed must be >= 0"):
        pack_box(SMALL, SMALL.density, seed=-1, workdir=tmp_path)


# ---- initial and start frames --------------------------------------------------------------


@pytest.fixture(scope="module")
def spec():
    return CampaignSpec(
        name="t",
        system=SMALL,
        initial=InitialSpec(
            density_factors=[0.8, 1.0], boxes_per_density=2, rattled_copies=2, rattle_stdev=0.05
        ),
    )


@pytest.fixture(scope="module")
def initial(spec, tmp_path_factory):
    return initial_frames(spec, tmp_path_factory.mktemp("initial"))


def test_initial_frames_counts_and_origins(spec, initial):
    assert len(initial) == n_initial_frames(spec) == 2 * 2 * 3
    origins = [origin for _, origin in initial]
    assert [o.index for o in origins] == list(range(12))
    assert [o.method for o in origins] == ["packmol", "rattle", "rattle"] * 4
    assert [o.density_factor for o in origins] == [0.8] * 6 + [1.0] * 6
    assert len({o.frame_id for o in origins}) == len({o.seed for o in origins}) == 12
    for frame, origin in initial:
        assert origin.campaign == "t" and origin.stage == "initial" and not origin.equilibrated
        if origin.method == "packmol":
            assert origin.parent is None and origin.rattle_stdev is None
            assert density(frame) == pytest.approx(SMALL.density * origin.density_factor, rel=1e-6)
            parent = origin.frame_id
        else:
            assert origin.parent == parent and origin.rattle_stdev == 0.05


def test_rattled_copies_move_atoms_by_stdev(initial):
    boxes = {origin.frame_id: frame for frame, origin in initial if origin.method == "packmol"}
    shifts = [
        np.asarray(frame.positions) - np.asarray(boxes[origin.parent].positions)
        for frame, origin in initial
        if origin.method == "rattle"
    ]
    for frame, origin in initial:
        if origin.method == "rattle":
            assert frame.cell == boxes[origin.parent].cell
    rms = np.sqrt(np.mean(np.concatenate(shifts) ** 2))
    assert rms == pytest.approx(0.05, rel=0.05)
    assert not any(np.array_equal(a, b) for a, b in zip(shifts, shifts[1:], strict=False))


def test_start_frames_never_collide_with_initial(spec, initial, tmp_path):
    start = start_frames(spec, tmp_path, n=2)
    assert [o.index for _, o in start] == [12, 13]
    ids = {o.frame_id for _, o in initial}
    for frame, origin in start:
        assert origin.frame_id not in ids and origin.seed not in {o.seed for _, o in initial}
        assert (origin.stage, origin.method, origin.equilibrated) == ("initial", "packmol", False)
        assert density(frame) == pytest.approx(SMALL.density, rel=1e-6)


# ---- check_system --------------------------------------------------------------------------


def test_check_system_accepts_a_fitting_box():
    check_system(SMALL)
    check_system(SystemSpec(cation="PYR14", anion="BF4", n_pairs=10, density=1.07))


@pytest.mark.parametrize("field", ["cation", "anion"])
def test_check_system_unknown_ion(field):
    system = SMALL.model_copy(update={field: "XYZ"})
    message = rf"^system\.{field}: unknown ion 'XYZ'; known: BF4, PYR14$"
    with pytest.raises(ValueError, match=message):
        check_system(system)


def test_check_system_charge_signs():
    with pytest.raises(ValueError, match="system.cation: BF4 has charge -1"):
        check_system(SMALL.model_copy(update={"cation": "BF4"}))
    with pytest.raises(ValueError, match="system.anion: PYR14 has charge \\+1"):
        check_system(SMALL.model_copy(update={"anion": "PYR14"}))


def test_check_system_electroneutrality(monkeypatch):
    monkeypatch.setitem(ION_LIBRARY, "X2", Ion("X2", "BF4", -2, "fake dianion", "BF4.xyz"))
    with pytest.raises(ValueError, match="do not cancel.*electroneutral"):
        check_system(SMALL.model_copy(update={"anion": "X2"}))


def test_check_system_box_too_small():
    # one pair at 1.07 g/cm^3 is a 7.1 Å box; the cation is 7.6 Å across
    system = SystemSpec(cation="PYR14", anion="BF4", n_pairs=1, density=1.07)
    with pytest.raises(ValueError, match=r"system\.density/system\.n_pairs: .*PYR14") as err:
        check_system(system)
    assert "\n" not in str(err.value)


def test_load_spec_runs_check_system(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nsystem: {cation: PYR14, anion: XYZ, n_pairs: 10, density: 1.07}\n")
    with pytest.raises(SpecError, match="system.anion: unknown ion 'XYZ'"):
        load_spec(path)

"""Ion library, compositions, Packmol boxes and initial frames (runs the real packmol; a few seconds)."""

from __future__ import annotations

import shutil
from itertools import product

import numpy as np
import pytest
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.units import _Nav

from ilflows.schemas.campaign import CampaignSpec, SpecError, load_spec
from ilflows.schemas.inputs import InitialSpec, SystemSpec
from ilflows.systems import (
    ION_LIBRARY,
    LIQUIDS,
    Ion,
    PackingError,
    check_system,
    elements,
    initial_frames,
    litfsi_pyr14tfsi,
    load_ion,
    molar_mass,
    pack_box,
    start_frames,
    topology,
)
from ilflows.systems.packing import n_initial_frames

needs_packmol = pytest.mark.skipif(shutil.which("packmol") is None, reason="packmol not installed")

# 2 pairs at 0.4 g/cm^3: a 12.4 Å box, small enough to pack in milliseconds.
SMALL = SystemSpec(ions={"PYR14": 2, "BF4": 2}, density=0.4)
# The papers' 10-pair boxes pack in about 0.1 s at 0.6 x their reference density (at 1.0 x it
# takes seconds, and at 1.26 x Packmol finds no packing with a 2 Å tolerance).
PAPER_DENSITY_FACTOR = 0.6


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


def molecule_ids(system: SystemSpec, n_atoms: int) -> np.ndarray:
    mol = np.full(n_atoms, -1)
    for k, (_, atoms) in enumerate(topology(system)):
        mol[atoms.start : atoms.stop] = k
    assert (mol >= 0).all()
    return mol


def min_intermolecular_distance(frame, system: SystemSpec) -> float:
    """Smallest distance between atoms of different molecules or periodic images of any molecule."""
    pos, edge = np.asarray(frame.positions), frame.cell[0][0]
    mol = molecule_ids(system, frame.n_atoms)
    best = np.inf
    for shift in product((-1, 0, 1), repeat=3):
        d = np.linalg.norm(pos[:, None] + edge * np.array(shift) - pos[None], axis=-1)
        if shift == (0, 0, 0):
            d[mol[:, None] == mol[None]] = np.inf
        best = min(best, d.min())
    return float(best)


def density(frame) -> float:
    return frame.to_ase().get_masses().sum() / _Nav / (frame.volume * 1e-24)


def assert_molecules_intact(frame, system: SystemSpec) -> None:
    pos, edge = np.asarray(frame.positions), frame.cell[0][0]
    for name, atoms in topology(system):
        template = load_ion(name)
        assert frame.species[atoms.start : atoms.stop] == template.get_chemical_symbols()
        mol = unwrap(pos[atoms.start : atoms.stop], template.positions, edge)
        got = np.linalg.norm(mol[:, None] - mol[None], axis=-1)
        want = np.linalg.norm(template.positions[:, None] - template.positions[None], axis=-1)
        assert np.abs(got - want).max() < 1e-6


def dihedral(p0, p1, p2, p3) -> float:
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n0, n1 = np.cross(b0, b1), np.cross(b1, b2)
    return float(np.degrees(np.arctan2(np.cross(n0, n1) @ b1 / np.linalg.norm(b1), n0 @ n1)))


@pytest.fixture(scope="module")
def small_box(tmp_path_factory):
    return pack_box(SMALL, SMALL.density, seed=3, workdir=tmp_path_factory.mktemp("pack"))


# ---- ion library ---------------------------------------------------------------------------


CHARGES = {"PYR14": +1, "BMIM": +1, "Li": +1, "BF4": -1, "TFSI": -1}
MOLAR_MASSES = {"PYR14": 142.26, "BMIM": 139.22, "Li": 6.94, "BF4": 86.80, "TFSI": 280.14}


def test_library_holds_the_papers_ions_in_frame_order():
    assert list(ION_LIBRARY) == ["PYR14", "BMIM", "Li", "BF4", "TFSI"]


@pytest.mark.parametrize("ion", ION_LIBRARY.values(), ids=lambda ion: ion.name)
def test_ion_geometry_matches_its_formula_and_charge(ion: Ion):
    atoms = load_ion(ion.name)
    assert atoms.get_chemical_formula(mode="hill") == ion.formula
    assert ion.charge == CHARGES[ion.name]
    # closed-shell ions: an even number of electrons
    assert (atoms.get_atomic_numbers().sum() - ion.charge) % 2 == 0
    assert molar_mass(ion) == pytest.approx(MOLAR_MASSES[ion.name], abs=0.01)
    assert np.allclose(atoms.positions.mean(axis=0), 0, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ION_LIBRARY if n != "Li"])
def test_ion_geometry_is_one_bonded_molecule(name):
    atoms = load_ion(name)
    atoms.cell, atoms.pbc = np.eye(3) * 50, True
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    reached, todo = {0}, [0]
    while todo:
        k = todo.pop()
        for m in j[i == k]:
            if m not in reached:
                reached.add(int(m))
                todo.append(int(m))
    assert len(reached) == len(atoms)
    assert atoms.get_all_distances()[np.triu_indices(len(atoms), 1)].min() > 0.9


def test_tfsi_is_the_trans_c2_conformer():
    atoms = load_ion("TFSI")
    pos, symbols = atoms.positions, atoms.get_chemical_symbols()
    n = symbols.index("N")
    s1, s2 = (i for i, s in enumerate(symbols) if s == "S")
    carbons = [i for i, s in enumerate(symbols) if s == "C"]
    c1, c2 = (min(carbons, key=lambda c, s=s: np.linalg.norm(pos[c] - pos[s])) for s in (s1, s2))
    # trans: the CF3 groups on opposite sides; equal C-S-N-S torsions: the C2 axis through N
    assert abs(dihedral(pos[c1], pos[s1], pos[s2], pos[c2])) > 90
    assert dihedral(pos[c1], pos[s1], pos[n], pos[s2]) == pytest.approx(
        dihedral(pos[c2], pos[s2], pos[n], pos[s1]), abs=1.0
    )


# ---- compositions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "counts"),
    [
        (0.0, {"PYR14": 10, "TFSI": 10}),
        (0.1, {"PYR14": 9, "Li": 1, "TFSI": 10}),
        (0.2, {"PYR14": 8, "Li": 2, "TFSI": 10}),
        (0.3, {"PYR14": 7, "Li": 3, "TFSI": 10}),
        (0.4, {"PYR14": 6, "Li": 4, "TFSI": 10}),
    ],
)
def test_litfsi_fraction_in_ten_pairs(fraction, counts):
    assert litfsi_pyr14tfsi(10, fraction) == counts


def test_litfsi_fraction_must_give_whole_ions():
    with pytest.raises(ValueError, match="not a whole number of Li"):
        litfsi_pyr14tfsi(10, 0.15)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        litfsi_pyr14tfsi(10, 1.5)


def test_liquid_table_cites_every_density():
    assert set(LIQUIDS) == {
        "PYR14BF4",
        "PYR14TFSI",
        "LiTFSI10-PYR14TFSI",
        "LiTFSI20-PYR14TFSI",
        "LiTFSI30-PYR14TFSI",
        "LiTFSI40-PYR14TFSI",
        "BMIMBF4",
    }
    for liquid in LIQUIDS.values():
        assert liquid.source and sum(liquid.ions.values()) == 20
        assert liquid.estimate == ("ESTIMATE" in liquid.source)
        assert (liquid.experimental is None) == (liquid.experimental_source is None)
    assert [n for n, liquid in LIQUIDS.items() if liquid.estimate] == ["LiTFSI40-PYR14TFSI"]


def test_litfsi40_estimate_is_the_line_through_0_to_30_percent():
    fractions = [0.0, 0.1, 0.2, 0.3]
    names = ["PYR14TFSI"] + [f"LiTFSI{round(100 * x)}-PYR14TFSI" for x in fractions[1:]]
    slope, intercept = np.polyfit(fractions, [LIQUIDS[n].density for n in names], 1)
    assert LIQUIDS["LiTFSI40-PYR14TFSI"].density == pytest.approx(intercept + 0.4 * slope, abs=5e-4)


def test_liquid_system_is_a_valid_spec():
    system = LIQUIDS["LiTFSI20-PYR14TFSI"].system()
    assert system.ions == {"PYR14": 8, "Li": 2, "TFSI": 10}
    assert system.density == 1.3578 and "APPLE&P" in system.reference_density_source
    check_system(system)


def test_elements_are_sorted_by_atomic_number():
    assert elements(SMALL) == ["H", "B", "C", "N", "F"]
    assert elements(LIQUIDS["LiTFSI10-PYR14TFSI"].system()) == ["H", "Li", "C", "N", "O", "F", "S"]


def test_topology_follows_the_library_order_whatever_the_spec_order():
    system = SystemSpec(ions={"TFSI": 3, "Li": 1, "PYR14": 2}, density=1.0)
    topo = topology(system)
    assert [name for name, _ in topo] == ["PYR14", "PYR14", "Li", "TFSI", "TFSI", "TFSI"]
    assert topo[0][1] == range(0, 30) and topo[2][1] == range(60, 61) and topo[-1][1] == range(91, 106)


# ---- pack_box ------------------------------------------------------------------------------


@needs_packmol
def test_packed_box_has_requested_density_and_order(small_box):
    assert density(small_box) == pytest.approx(SMALL.density, rel=1e-6)
    cell = np.asarray(small_box.cell)
    assert np.allclose(cell, np.eye(3) * cell[0, 0])
    cation, anion = load_ion("PYR14"), load_ion("BF4")
    expected = cation.get_chemical_symbols() * 2 + anion.get_chemical_symbols() * 2
    assert small_box.species == expected


@needs_packmol
def test_packed_molecules_are_intact(small_box):
    assert_molecules_intact(small_box, SMALL)


@needs_packmol
def test_packed_molecules_keep_tolerance_across_images(small_box):
    assert min_intermolecular_distance(small_box, SMALL) >= 0.9 * SMALL.tolerance


@needs_packmol
@pytest.mark.parametrize("name", list(LIQUIDS))
def test_paper_liquids_pack(name, tmp_path):
    liquid = LIQUIDS[name]
    system = liquid.system()
    assert sum(ION_LIBRARY[ion].charge * n for ion, n in system.ions.items()) == 0
    frame = pack_box(system, liquid.density * PAPER_DENSITY_FACTOR, seed=11, workdir=tmp_path)
    assert density(frame) == pytest.approx(liquid.density * PAPER_DENSITY_FACTOR, rel=1e-9)
    assert frame.n_atoms == topology(system)[-1][1].stop
    assert_molecules_intact(frame, system)
    assert min_intermolecular_distance(frame, system) >= 0.9 * system.tolerance


@needs_packmol
def test_spec_order_of_ions_does_not_change_the_box(tmp_path):
    again = SystemSpec(ions={"BF4": 2, "PYR14": 2}, density=SMALL.density)
    one = pack_box(SMALL, SMALL.density, seed=5, workdir=tmp_path / "a")
    other = pack_box(again, SMALL.density, seed=5, workdir=tmp_path / "b")
    assert one == other


@needs_packmol
def test_packing_is_seeded(tmp_path):
    one = pack_box(SMALL, SMALL.density, seed=5, workdir=tmp_path / "a")
    again = pack_box(SMALL, SMALL.density, seed=5, workdir=tmp_path / "b")
    other = pack_box(SMALL, SMALL.density, seed=6, workdir=tmp_path / "c")
    assert one.positions == again.positions
    assert one.positions != other.positions


@needs_packmol
def test_packmol_failure_names_the_fix(tmp_path):
    # 3 pairs at 1.07 g/cm^3 pass check_fits (10.2 Å box) but Packmol cannot place them.
    system = SystemSpec(ions={"PYR14": 3, "BF4": 3}, density=1.07)
    with pytest.raises(PackingError, match="lower the density"):
        pack_box(system, system.density, seed=7, workdir=tmp_path)
    assert (tmp_path / "packmol.log").exists()


def test_pack_box_refuses_a_charged_box(tmp_path):
    with pytest.raises(ValueError, match="system.ions: the box has a net charge"):
        pack_box(SystemSpec(ions={"PYR14": 3, "BF4": 2}, density=0.4), 0.4, seed=1, workdir=tmp_path)


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


@needs_packmol
def test_initial_frames_counts_and_origins(spec, initial):
    assert len(initial) == n_initial_frames(spec) == 2 * 2 * 3
    origins = [origin for _, origin in initial]
    assert [o.index for o in origins] == list(range(12))
    assert [o.method for o in origins] == ["packmol", "rattle", "rattle"] * 4
    assert [o.density_factor for o in origins] == [0.8] * 6 + [1.0] * 6
    assert len({o.frame_id for o in origins}) == len({o.seed for o in origins}) == 12
    for frame, origin in initial:
        assert origin.campaign == "t" and origin.stage == "initial" and not origin.equilibrated
        assert frame.species == initial[0][0].species
        if origin.method == "packmol":
            assert origin.parent is None and origin.rattle_stdev is None
            assert density(frame) == pytest.approx(SMALL.density * origin.density_factor, rel=1e-6)
            parent = origin.frame_id
        else:
            assert origin.parent == parent and origin.rattle_stdev == 0.05


@needs_packmol
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


@needs_packmol
def test_start_frames_never_collide_with_initial(spec, initial, tmp_path):
    start = start_frames(spec, tmp_path)  # explore.n_walkers boxes
    assert [o.index for _, o in start] == [12, 13]
    ids = {o.frame_id for _, o in initial}
    for frame, origin in start:
        assert origin.frame_id not in ids and origin.seed not in {o.seed for _, o in initial}
        assert (origin.stage, origin.method, origin.equilibrated) == ("initial", "packmol", False)
        assert density(frame) == pytest.approx(SMALL.density, rel=1e-6)
        assert_molecules_intact(frame, SMALL)


# ---- check_system --------------------------------------------------------------------------


def test_check_system_accepts_a_fitting_box():
    check_system(SMALL)
    check_system(SystemSpec(ions={"PYR14": 10, "BF4": 10}, density=1.07))


def one_line_error(system: SystemSpec, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as err:
        check_system(system)
    assert "\n" not in str(err.value)


def test_check_system_unknown_ion():
    one_line_error(
        SystemSpec(ions={"PYR14": 2, "XYZ": 2}, density=0.4),
        r"^system\.ions: unknown ion 'XYZ'; known: BF4, BMIM, Li, PYR14, TFSI$",
    )


@pytest.mark.parametrize(
    "ions",
    [{"PYR14": 2, "BF4": 1}, {"Li": 1, "PYR14": 1, "TFSI": 1}, {"BF4": 2}],
    ids=["+1", "+1-with-Li", "-2"],
)
def test_check_system_electroneutrality(ions):
    one_line_error(SystemSpec(ions=ions, density=0.4), r"^system\.ions: the box has a net charge of [+-]\d e")


def test_check_system_fake_dianion(monkeypatch):
    monkeypatch.setitem(ION_LIBRARY, "X2", Ion("X2", "BF4", -2, "fake dianion", "BF4.xyz"))
    check_system(SystemSpec(ions={"PYR14": 4, "X2": 2}, density=0.4))
    one_line_error(SystemSpec(ions={"PYR14": 2, "X2": 2}, density=0.4), "net charge of -2 e")


@pytest.mark.parametrize("count", [0, -1])
def test_check_system_counts_must_be_positive(count):
    one_line_error(
        SystemSpec(ions={"PYR14": 2, "Li": count, "BF4": 2}, density=0.4),
        r"^system\.ions: counts must be positive",
    )


def test_check_system_box_too_small():
    # one pair at 1.07 g/cm^3 is a 7.1 Å box; the cation is 7.6 Å across
    one_line_error(
        SystemSpec(ions={"PYR14": 1, "BF4": 1}, density=1.07),
        r"^system\.density/system\.ions: 2 ions at .*PYR14",
    )


def test_empty_composition_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="ions"):
        SystemSpec(ions={}, density=1.0)


def test_load_spec_runs_check_system(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nsystem: {ions: {PYR14: 10, XYZ: 10}, density: 1.07}\n")
    with pytest.raises(SpecError, match="system.ions: unknown ion 'XYZ'"):
        load_spec(path)


def test_validation_boxes_are_held_out_and_apart_from_training(tmp_path):
    from ilflows.systems import initial_frames, validation_frames

    spec = CampaignSpec.model_validate(
        {
            "name": "v",
            "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
            "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 0},
            "validation": {"density_factors": [0.8, 1.2], "boxes_per_density": 2, "seed": 500},
        }
    )
    held_out = validation_frames(spec, tmp_path / "val")
    training = initial_frames(spec, tmp_path / "train")
    assert [o.frame_id for _, o in held_out] == [f"v/validation/{i}" for i in range(4)]
    assert [(o.stage, o.density_factor, o.seed) for _, o in held_out] == [
        ("validation", 0.8, 500),
        ("validation", 0.8, 501),
        ("validation", 1.2, 502),
        ("validation", 1.2, 503),
    ]
    for frame, origin in held_out:
        assert frame.volume == pytest.approx(training[0][0].volume / origin.density_factor, rel=1e-9)
    assert all(f.positions != t.positions for f, _ in held_out for t, _ in training)


@needs_packmol
def test_a_campaign_of_several_compositions_packs_each_and_knows_them_apart(tmp_path):
    from ilflows.loop import type_map_of
    from ilflows.systems import system_of

    li_bf4 = {"ions": {"Li": 1, "BF4": 1}, "density": 0.5, "tolerance": 1.5}
    spec = CampaignSpec.model_validate(
        {
            "name": "two",
            "system": [li_bf4, {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22}],
            "initial": {"density_factors": [1.0], "boxes_per_density": 1, "rattled_copies": 1},
            "explore": {"n_walkers": 1},
        }
    )
    initial, starts = initial_frames(spec, tmp_path / "i"), start_frames(spec, tmp_path / "s")
    assert [(o.index, o.system, o.method) for _, o in initial] == [
        (0, 0, "packmol"),
        (1, 0, "rattle"),
        (2, 1, "packmol"),
        (3, 1, "rattle"),
    ]
    assert [(o.index, o.system) for _, o in starts] == [(4, 0), (5, 1)]
    for frame, origin in [*initial, *starts]:
        assert system_of(spec, frame) == origin.system
        assert density(frame) == pytest.approx(spec.system[origin.system].density, rel=1e-6)
    assert type_map_of(spec) == ["H", "Li", "B", "C", "N", "F"]
    assert len({o.seed for _, o in [*initial, *starts]}) == 6


def test_a_bad_composition_is_named_by_its_index(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: t\nsystem:\n  - {ions: {PYR14: 1, BF4: 1}, density: 0.22}\n"
        "  - {ions: {Li: 2, BF4: 1}, density: 1}\n"
    )
    with pytest.raises(SpecError, match=r"system\.1\.ions: the box has a net charge of \+1 e"):
        load_spec(path)

"""Frame guards: intact packed boxes pass; broken, fused, vacuum and collapsed frames are caught."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from ilflows.schemas.frames import Frame
from ilflows.systems import LIQUIDS, load_ion, pack_box, topology
from ilflows.systems.guards import (
    FrameCheck,
    broken_bonds,
    check_frame,
    collapsed_atoms,
    compressed_bonds,
    density_outside,
    fused_molecules,
    template_bonds,
    vacuum,
)

pytestmark = pytest.mark.skipif(shutil.which("packmol") is None, reason="packmol not installed")

# 0.8 x the reference density packs in about 0.2 s and is inside paper 1's nEQ range.
FACTOR = 0.8


def _pack(name: str, folder) -> tuple:
    liquid = LIQUIDS[name]
    system = liquid.system()
    frame = pack_box(system, liquid.density * FACTOR, seed=4, workdir=folder)
    return frame, topology(system), liquid.density


@pytest.fixture(scope="module", params=["PYR14BF4", "LiTFSI20-PYR14TFSI"])
def packed(request, tmp_path_factory):
    return _pack(request.param, tmp_path_factory.mktemp("guards"))


@pytest.fixture(scope="module")
def packed_with_lithium(tmp_path_factory):
    return _pack("LiTFSI20-PYR14TFSI", tmp_path_factory.mktemp("guards_li"))


def moved(frame: Frame, atoms, shift) -> Frame:
    """Copy of ``frame`` with ``atoms`` translated by ``shift`` (Å)."""
    pos = np.asarray(frame.positions)
    pos[list(atoms)] += shift
    return frame.model_copy(update={"positions": pos.tolist()})


def displacement(frame: Frame, a: int, b: int) -> np.ndarray:
    """Minimum-image vector from atom a to atom b (cubic cell)."""
    pos, edge = np.asarray(frame.positions), frame.cell[0][0]
    d = pos[b] - pos[a]
    return d - edge * np.round(d / edge)


def first(topo, name: str) -> tuple[int, range]:
    return next((k, atoms) for k, (ion, atoms) in enumerate(topo) if ion == name)


def test_intact_packed_box_passes(packed):
    frame, topo, reference = packed
    result = check_frame(frame, topo, reference_density=reference)
    assert isinstance(result, FrameCheck)
    assert result.ok and result.reasons == []


def test_check_is_fast(packed):
    frame, topo, reference = packed
    check_frame(frame, topo, reference_density=reference)
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        check_frame(frame, topo, reference_density=reference)
    elapsed = (time.perf_counter() - start) / runs
    print(f"\ncheck_frame: {frame.n_atoms} atoms in {1e3 * elapsed:.2f} ms")


def test_broken_bond_is_caught(packed):
    frame, topo, _ = packed
    k, atoms = first(topo, "PYR14")
    template = load_ion("PYR14")
    symbols = template.get_chemical_symbols()
    pairs, _ = template_bonds("PYR14")
    # the butyl chain's terminal CH3: a carbon with three H and one C neighbour
    neighbours = {a: [b for p in pairs for b in p if a in p and b != a] for a in range(len(template))}
    methyl = next(
        a
        for a, nb in neighbours.items()
        if symbols[a] == "C" and sorted(symbols[b] for b in nb) == ["C", "H", "H", "H"]
    )
    (chain,) = [b for b in neighbours[methyl] if symbols[b] == "C"]
    group = [methyl] + [b for b in neighbours[methyl] if symbols[b] == "H"]
    c1, c2 = atoms.start + chain, atoms.start + methyl
    bond = displacement(frame, c1, c2)
    # pull the whole CH3 group out along the bond until C-C is 2.5 Å
    frame = moved(frame, [atoms.start + a for a in group], bond / np.linalg.norm(bond) * 2.5 - bond)
    assert np.linalg.norm(displacement(frame, c1, c2)) == pytest.approx(2.5)
    (reason,) = broken_bonds(frame, topo)
    lo, hi = sorted((c1, c2))
    assert reason.startswith(f"broken: PYR14 #{k} (atoms {atoms.start}-{atoms.stop - 1}) bond C{lo}-C{hi} ")
    assert "is 2.50 Å (template 1.53 Å" in reason
    result = check_frame(frame, topo)
    assert not result.ok and reason in result.reasons


def test_compressed_bond_is_caught(packed):
    frame, topo, _ = packed
    anion = "BF4" if any(ion == "BF4" for ion, _ in topo) else "TFSI"
    k, atoms = first(topo, anion)
    pairs, lengths = template_bonds(anion)
    (a, b), ref = pairs[0], lengths[0]
    a, b = atoms.start + a, atoms.start + b
    bond = displacement(frame, a, b)  # push b towards a until the bond is 0.64 x its template length
    frame = moved(frame, [b], bond / np.linalg.norm(bond) * 0.64 * ref - bond)
    (reason,) = compressed_bonds(frame, topo)
    assert reason.startswith(f"compressed: {anion} #{k} (atoms {atoms.start}-{atoms.stop - 1}) bond ")
    assert f"is {0.64 * ref:.2f} Å (template {ref:.2f} Å, limit {0.8 * ref:.2f} Å)" in reason
    assert compressed_bonds(frame, topo, min_squeeze=0.6) == []  # 0.64 x is inside a looser limit
    assert reason in check_frame(frame, topo).reasons


def test_fused_molecules_are_caught(packed):
    frame, topo, _ = packed
    kc, cation = first(topo, "PYR14")
    anion_name = topo[-1][0]
    ka, anion = first(topo, anion_name)
    c = cation.start + load_ion("PYR14").get_chemical_symbols().index("C")
    f = anion.start + load_ion(anion_name).get_chemical_symbols().index("F")
    # move the whole anion so that one of its F sits 1.1 Å from a C of the cation, along the
    # line that joined them
    d = displacement(frame, c, f)
    frame = moved(frame, anion, d / np.linalg.norm(d) * 1.1 - d)
    expected = (
        f"fused: C{c} of PYR14 #{kc} (atoms {cation.start}-{cation.stop - 1}) and F{f} of "
        f"{anion_name} #{ka} (atoms {anion.start}-{anion.stop - 1}) are 1.10 Å apart (limit 1.46 Å)"
    )
    assert expected in fused_molecules(frame, topo)
    assert broken_bonds(frame, topo) == []
    result = check_frame(frame, topo)
    assert not result.ok and expected in result.reasons


def test_lithium_oxygen_contacts_are_not_bonds(packed_with_lithium):
    frame, topo, _ = packed_with_lithium
    _, li = first(topo, "Li")
    _, tfsi = first(topo, "TFSI")
    o = tfsi.start + load_ion("TFSI").get_chemical_symbols().index("O")
    d = displacement(frame, li.start, o)
    # Li+ 1.95 Å from a TFSI oxygen: a coordination contact, within 1.1 x (1.28 + 0.66) Å
    near = moved(frame, li, d - d / np.linalg.norm(d) * 1.95)
    assert fused_molecules(near, topo) == []
    assert fused_molecules(near, topo, non_bonding=()) != []


def test_vacuum_slab_is_caught(packed):
    frame, topo, _ = packed
    edge = frame.cell[2][2]
    # stretch the cell along z and keep the atoms: a slab of vacuum about one box edge thick
    slab = frame.model_copy(update={"cell": [frame.cell[0], frame.cell[1], [0.0, 0.0, 2 * edge]]})
    (reason,) = vacuum(slab)
    assert reason.startswith("vacuum: no atom within ")
    nearest = float(reason.split("within ")[1].split(" Å")[0])
    assert 6.5 < nearest <= 0.5 * edge + 3.0
    result = check_frame(slab, topo)
    assert not result.ok and result.reasons == [reason]


def test_collapsed_pair_is_caught(packed):
    frame, topo, _ = packed
    (_, one), (_, two) = topo[0], topo[-1]
    a, b = one.start, two.start
    d = displacement(frame, a, b)
    frame = moved(frame, two, d / np.linalg.norm(d) * 0.4 - d)
    lo, hi = sorted((a, b))
    reason = f"collapse: {frame.species[lo]}{lo} and {frame.species[hi]}{hi} are 0.40 Å apart (floor 0.6 Å)"
    assert reason in collapsed_atoms(frame)
    result = check_frame(frame, topo)
    assert not result.ok and reason in result.reasons


def test_density_far_from_reference_is_caught(packed):
    frame, topo, reference = packed
    assert density_outside(frame, reference) == []
    (reason,) = density_outside(frame, reference / 3)
    assert reason.startswith(f"density: {FACTOR * reference:.3f} g/cm^3 is outside 0.5-2.0 x")
    assert not check_frame(frame, topo, reference_density=reference / 3).ok


def test_many_findings_are_capped(packed):
    frame, topo, _ = packed
    # every molecule squeezed into a quarter of the box: many fused contacts
    pos = np.asarray(frame.positions)
    squeezed = frame.model_copy(update={"positions": (pos * 0.25).tolist()})
    reasons = fused_molecules(squeezed, topo)
    assert len(reasons) == 6 and reasons[-1].startswith("fused: ") and reasons[-1].endswith(" more")


def test_topology_must_match_the_frame(packed):
    frame, topo, _ = packed
    with pytest.raises(ValueError, match="in no molecule"):
        check_frame(frame, topo[:-1])
    relabelled = [(topo[-1][0], topo[0][1]), *topo[1:]]
    with pytest.raises(ValueError, match=f"atoms 0-{topo[0][1].stop - 1} are not a {topo[-1][0]} template"):
        check_frame(frame, relabelled)

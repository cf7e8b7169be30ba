"""TFSI and PYR14 conformers and Li-TFSI clusters, on molecules built by hand from the templates."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from ilflows.analysis import conformers as conf
from ilflows.schemas.inputs import SystemSpec
from ilflows.systems.ions import load_ion
from ilflows.systems.packing import topology

# Template indices, read off TFSI.xyz and PYR14.xyz by hand: the module must find the same.
TFSI = {"C1": 1, "S1": 4, "N": 7, "S2": 8, "C2": 11}
PYR14 = {"N": 29, "methyl": 24, "C1": 23, "C2": 22, "C3": 21, "C4": 20, "ring": (25, 26, 27, 28)}


def _side(name: str, j: int, k: int) -> list[int]:
    """Atoms on k's side of the bond j-k."""
    graph, seen, stack = conf.bond_graph(name), {k}, [k]
    while stack:
        for other in graph[stack.pop()]:
            if other != j and other not in seen:
                seen.add(other)
                stack.append(other)
    return sorted(seen)


def _twist(atoms: Atoms, name: str, a: int, j: int, k: int, d: int, angle: float) -> Atoms:
    """Copy of ``atoms`` with the dihedral a-j-k-d set to ``angle`` by turning k's side of j-k."""
    out = atoms.copy()
    out.set_dihedral(a, j, k, d, angle, indices=_side(name, j, k))
    return out


def _tfsi(csns1: float, csns2: float) -> Atoms:
    """TFSI with its C-S-N-S dihedrals set by turning each CF3SO2 half about its S-N bond."""
    t = TFSI
    atoms = _twist(load_ion("TFSI"), "TFSI", t["S2"], t["N"], t["S1"], t["C1"], csns1)
    return _twist(atoms, "TFSI", t["S1"], t["N"], t["S2"], t["C2"], csns2)


def _pyr14(me_n_c1_c2: float, n_c1_c2_c3: float, c1_c2_c3_c4: float) -> Atoms:
    p = PYR14
    atoms = _twist(load_ion("PYR14"), "PYR14", p["methyl"], p["N"], p["C1"], p["C2"], me_n_c1_c2)
    atoms = _twist(atoms, "PYR14", p["N"], p["C1"], p["C2"], p["C3"], n_c1_c2_c3)
    return _twist(atoms, "PYR14", p["C1"], p["C2"], p["C3"], p["C4"], c1_c2_c3_c4)


def _signed(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0 if angle % 360.0 != 180.0 else 180.0


def _expected_tfsi(atoms: Atoms) -> tuple[float, float]:
    """phi and psi from ASE's dihedrals on the hand-read indices."""
    t = TFSI
    phi = atoms.get_dihedral(t["C1"], t["S1"], t["S2"], t["C2"])
    psi = atoms.get_dihedral(t["C1"], t["S1"], t["S2"], t["N"])
    return _signed(phi), _signed(psi)


def _wrap(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    frac = positions @ np.linalg.inv(cell)
    return (frac - np.floor(frac)) @ cell


CUBIC = np.eye(3) * 12.0
TRICLINIC = np.array([[13.0, 0.0, 0.0], [4.0, 12.0, 0.0], [-3.0, 2.5, 14.0]])


def test_roles_come_from_the_bond_graph():
    assert conf.tfsi_roles() == TFSI
    assert conf.pyr14_roles() == PYR14
    graph = conf.bond_graph("TFSI")
    assert TFSI["S2"] not in graph[TFSI["S1"]]  # S...S 2.67 Å is not a bond
    assert sorted(graph[TFSI["N"]]) == [TFSI["S1"], TFSI["S2"]]


def test_template_tfsi_is_atrans():
    atoms = load_ion("TFSI")
    phi, psi = conf.tfsi_angles(atoms.positions, None, [range(15)])
    assert phi.shape == psi.shape == (1,)
    assert phi[0] == pytest.approx(142.31, abs=0.01)  # the C-S...S-C 142.3 deg of its comment line
    assert psi[0] == pytest.approx(-108.85, abs=0.01)
    assert conf.classify_tfsi(phi, psi).tolist() == ["aTrans"]


@pytest.mark.parametrize(
    ("csns", "expected", "phi_range"),
    [
        ((166.0, 166.0), "Cis", (-40, -35)),  # both CF3 near the S-N-S plane, on N's side
        ((120.0, -90.0), "aCis", (20, 30)),  # both CF3 on one side of the S-N-S plane
        ((130.0, 130.0), "Trans", (-125, -118)),
        ((54.0, 160.0), "Trans", (-156, -150)),
        ((90.0, 90.0), "aTrans", (165, 170)),  # C2 trans, |phi| just past 180 deg
    ],
)
def test_tfsi_classes_of_built_conformers(csns, expected, phi_range):
    atoms = _tfsi(*csns)
    assert atoms.get_dihedral(TFSI["C1"], TFSI["S1"], TFSI["N"], TFSI["S2"]) == pytest.approx(csns[0] % 360)
    phi, psi = conf.tfsi_angles(atoms.positions, None, [range(15)])
    want_phi, want_psi = _expected_tfsi(atoms)
    assert phi[0] == pytest.approx(want_phi, abs=1e-6)
    assert psi[0] == pytest.approx(want_psi, abs=1e-6)
    assert phi_range[0] < phi[0] < phi_range[1]
    assert conf.classify_tfsi(phi, psi).tolist() == [expected]


def test_classify_tfsi_boundaries():
    phi = np.array([[10.0, 10.0, -10.0, 89.0, 91.0], [179.0, -179.0, 180.0, -120.0, -120.0]])
    psi = np.array([[5.0, -5.0, -5.0, 95.0, 45.0], [90.0, 90.0, 90.0, -60.0, 60.0]])
    assert conf.classify_tfsi(phi, psi).tolist() == [
        ["Cis", "aCis", "Cis", "aCis", "Trans"],
        ["Trans", "aTrans", "Trans", "Trans", "aTrans"],
    ]
    assert set(conf.TFSI_CLASSES) == {"Cis", "aCis", "Trans", "aTrans"}


@pytest.mark.parametrize("cell", [CUBIC, TRICLINIC], ids=["cubic", "triclinic"])
def test_tfsi_angles_survive_the_periodic_boundary(cell):
    built = [_tfsi(166.0, 166.0), _tfsi(120.0, -90.0), _tfsi(130.0, 130.0), load_ion("TFSI")]
    whole = np.concatenate([a.positions for a in built])
    molecules = [range(15 * i, 15 * i + 15) for i in range(4)]
    # frame 0: each molecule centred on a corner, edge or face of the cell, so split by the wrap;
    # frame 1: all centred in the cell, whole
    offsets = np.array([[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]]) @ cell
    split = _wrap(np.concatenate([a.positions + o for a, o in zip(built, offsets, strict=True)]), cell)
    inside = _wrap(whole + 0.5 * cell.sum(axis=0), cell)
    assert all(np.ptp(split[m], axis=0).max() > 8.0 for m in molecules)  # really split
    ref_phi, ref_psi = conf.tfsi_angles(whole, None, molecules)
    phi, psi = conf.tfsi_angles(np.stack([split, inside]), np.stack([cell, cell]), molecules)
    assert phi.shape == psi.shape == (2, 4)
    np.testing.assert_allclose(phi, np.broadcast_to(ref_phi, (2, 4)), atol=1e-8)
    np.testing.assert_allclose(psi, np.broadcast_to(ref_psi, (2, 4)), atol=1e-8)
    assert conf.classify_tfsi(phi, psi).tolist() == [["Cis", "aCis", "Trans", "aTrans"]] * 2


def test_pyr14_template_distances():
    p = load_ion("PYR14").positions
    r1, r2 = conf.pyr14_distances(p, None, [range(30)])
    end = p[PYR14["C4"]]
    assert r2[0] == pytest.approx(np.linalg.norm(p[PYR14["methyl"]] - end))
    assert r1[0] == pytest.approx(min(np.linalg.norm(p[k] - end) for k in PYR14["ring"]))
    assert (r1[0], r2[0]) == pytest.approx((3.91, 5.07), abs=0.01)  # xTB geometry: tail folded back


def test_pyr14_anti_and_gauche_tails():
    extended = _pyr14(180.0, 180.0, 180.0)  # zigzag from the methyl carbon to the tail end
    gauche = _pyr14(180.0, 180.0, 60.0)  # the same with C1-C2-C3-C4 gauche
    ring_anti = _pyr14(60.0, 180.0, 180.0)  # all-anti chain, but C2 gauche to the methyl
    positions = np.stack([extended.positions, gauche.positions, ring_anti.positions])
    r1, r2 = conf.pyr14_distances(positions, None, [range(30)])
    assert r2[:, 0] == pytest.approx([6.43, 5.43, 5.46], abs=0.01)
    assert r1[:, 0] == pytest.approx([5.40, 4.82, 5.40], abs=0.01)
    assert conf.butyl_state(r2[:, 0]).tolist() == ["anti", "gauche", "gauche"]
    assert conf.butyl_state([5.9, 6.0, 6.1], threshold=6.0).tolist() == ["gauche", "anti", "anti"]
    torsions = np.stack(conf.butyl_dihedrals(positions, None, [range(30)]))[:, :, 0]  # (3 torsions, 3 frames)
    want = np.array([[180.0, 180.0, 60.0], [180.0, 180.0, 180.0], [180.0, 60.0, 180.0]])
    np.testing.assert_allclose(np.cos(np.radians(torsions)), np.cos(np.radians(want)), atol=1e-9)
    np.testing.assert_allclose(np.sin(np.radians(torsions)), np.sin(np.radians(want)), atol=1e-9)


def test_pyr14_distances_survive_the_periodic_boundary():
    built = [_pyr14(180.0, 180.0, 180.0), _pyr14(180.0, 180.0, 60.0)]
    whole = np.concatenate([a.positions for a in built])
    wrapped = _wrap(np.concatenate([built[0].positions, built[1].positions + TRICLINIC[2]]), TRICLINIC)
    molecules = [range(30), range(30, 60)]
    ref = conf.pyr14_distances(whole, None, molecules)
    got = conf.pyr14_distances(wrapped, TRICLINIC, molecules)
    np.testing.assert_allclose(got, ref, atol=1e-8)
    assert conf.butyl_state(got[1]).tolist() == ["anti", "gauche"]


def _placed(n_at: np.ndarray) -> np.ndarray:
    """Template TFSI moved so that its N sits at ``n_at``."""
    p = load_ion("TFSI").positions
    return p - p[TFSI["N"]] + n_at


def _li_box() -> tuple[np.ndarray, list[int], list[range], float]:
    """Three Li with 2, 3 and 4 TFSI 4 Å away, one TFSI far from all, one across the boundary."""
    edge = 40.0
    li = np.array([[1.5, 10.0, 10.0], [20.0, 10.0, 30.0], [20.0, 30.0, 10.0]])
    x, y = np.array([4.0, 0, 0]), np.array([0, 4.0, 0])
    n_sites = [li[0] - x, li[0] + x]  # the first crosses the x = 0 face
    n_sites += [li[1] - x, li[1] + x, li[1] + y]
    n_sites += [li[2] - x, li[2] + x, li[2] - y, li[2] + y]
    n_sites += [li[2] + [0, 0, 12.0]]  # 12 Å from Li 2: no atom within 6 Å of any Li
    tfsi = np.concatenate([_placed(site) for site in n_sites])
    positions = _wrap(np.concatenate([li, tfsi]), np.eye(3) * edge)
    molecules = [range(3 + 15 * i, 18 + 15 * i) for i in range(len(n_sites))]
    return positions, [0, 1, 2], molecules, edge


@pytest.mark.parametrize("by", ["N", "O", "any"])
def test_li_tfsi_counts(by):
    positions, li, molecules, edge = _li_box()
    assert positions[:, 0].max() > 30.0  # the boundary-crossing TFSI was wrapped to the far side
    counts = conf.li_tfsi_counts(positions, np.eye(3) * edge, li, molecules, cutoff=6.0, by=by)
    assert counts.tolist() == [2, 3, 4]
    if by == "N":  # without periodicity the wrapped TFSI's N is 36 Å from Li 0
        assert conf.li_tfsi_counts(positions, None, li, molecules, by=by).tolist() == [1, 3, 4]


def test_li_counts_over_frames_and_population():
    positions, li, molecules, edge = _li_box()
    second = positions.copy()
    second[molecules[0]] += [0.0, 0.0, 15.0]  # Li 0 loses its boundary-crossing TFSI
    counts = conf.li_tfsi_counts(np.stack([positions, second]), np.eye(3) * edge, li, molecules)
    assert counts.tolist() == [[2, 3, 4], [1, 3, 4]]
    population = conf.cluster_population(counts)
    assert list(population) == [1, 2, 3, 4]
    assert population == pytest.approx({1: 1 / 6, 2: 1 / 6, 3: 2 / 6, 4: 2 / 6})
    assert conf.cluster_population(["aTrans", "Cis", "aTrans", "aTrans"]) == {"Cis": 0.25, "aTrans": 0.75}


def test_li_counts_depend_on_which_tfsi_atoms_are_measured():
    p = load_ion("TFSI").positions
    n = p[TFSI["N"]]
    far_f = 14  # the fluorine farthest from N (3.75 Å)
    out_f = (p[far_f] - n) / np.linalg.norm(p[far_f] - n)
    out_o = (p[10] - n) / np.linalg.norm(p[10] - n)  # an O of the second half
    li = np.zeros(3)
    first = p - n - 8.0 * out_f  # its F 4.25 Å from Li, O and N farther than 6 Å
    second = p - n - 6.5 * out_o  # its O 3.9 Å from Li, N 6.5 Å
    positions = np.concatenate([[li], first, second]) + 20.0
    d_first = np.linalg.norm(first, axis=1)
    d_second = np.linalg.norm(second, axis=1)
    assert d_first.min() < 6.0 < min(d_first[[5, 6, 9, 10]].min(), d_first[TFSI["N"]])
    assert d_second[[5, 6, 9, 10]].min() < 6.0 < d_second[TFSI["N"]]
    molecules = [range(1, 16), range(16, 31)]
    cell = np.eye(3) * 40.0
    counts = {
        by: conf.li_tfsi_counts(positions, cell, [0], molecules, by=by).tolist() for by in ("N", "O", "any")
    }
    assert counts == {"N": [0], "O": [1], "any": [2]}
    assert conf.li_tfsi_counts(positions, cell, [0], molecules, cutoff=6.6, by="N").tolist() == [1]


def test_li_counts_reject_bad_arguments():
    positions, li, molecules, _ = _li_box()
    with pytest.raises(ValueError, match="half the cell"):
        conf.li_tfsi_counts(positions, np.eye(3) * 11.0, li, molecules)
    with pytest.raises(ValueError, match="by: expected"):
        conf.li_tfsi_counts(positions, np.eye(3) * 40.0, li, molecules, by="S")
    with pytest.raises(ValueError, match="15 atom indices"):
        conf.tfsi_angles(positions, None, [range(3, 17)])


def test_mixed_box_through_topology():
    system = SystemSpec(ions={"PYR14": 1, "Li": 1, "TFSI": 1}, density=1.0)
    layout = topology(system)
    assert [name for name, _ in layout] == ["PYR14", "Li", "TFSI"]
    cell = np.eye(3) * 20.0
    pyr = _pyr14(180.0, 180.0, 180.0).positions + [19.0, 10.0, 10.0]  # split across the x face
    li = np.array([[10.0, 10.0, 10.0]])
    tfsi = _placed(np.array([10.0, 10.0, 14.0]))
    positions = _wrap(np.concatenate([pyr, li, tfsi]), cell)
    by_ion = {name: [r for n, r in layout if n == name] for name in ("PYR14", "Li", "TFSI")}
    r1, r2 = conf.pyr14_distances(positions, cell, by_ion["PYR14"])
    assert conf.butyl_state(r2).tolist() == ["anti"]
    phi, psi = conf.tfsi_angles(positions, cell, by_ion["TFSI"])
    assert conf.classify_tfsi(phi, psi).tolist() == ["aTrans"]
    li_index = [r[0] for r in by_ion["Li"]]
    assert conf.li_tfsi_counts(positions, cell, li_index, by_ion["TFSI"]).tolist() == [1]

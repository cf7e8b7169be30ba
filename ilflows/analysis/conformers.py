"""Conformers of TFSI and PYR14 and Li-TFSI clusters, as classified in paper 1 (Figures 5-9, Table 5).

Pure functions on numpy arrays: positions in Å, ``(n_atoms, 3)`` for one frame or
``(n_frames, n_atoms, 3)`` for a trajectory; cells as rows in Å, ``(3, 3)`` or ``(n_frames, 3, 3)``,
or ``None`` for a molecule in vacuum (paper 1's single-ion runs).  A molecule is given by its atom
indices in the order of its ion's template (``ilflows/systems/molecules/<ION>.xyz``), as
:func:`ilflows.systems.packing.topology` lays them out.  Atom roles (which carbon is the methyl, which
sulfur carries which CF3...) come from the template's bond graph (two atoms are bonded when closer
than 1.2 times the sum of their covalent radii), never from hard-coded indices.  Molecules may be
split across the periodic boundary: each is made whole by following its bonds, each bond taken as
its minimum image.  Angles are signed IUPAC dihedrals A-B-C-D: looking down B->C, the angle by
which the near bond B-A turns clockwise onto the far bond C-D, in (-180, 180] degrees.

TFSI (paper 1, Figure 6).  S1 is the sulfur that comes first in the template, C1 the carbon on
it, S2 and C2 the other pair, N the imide nitrogen.  Looking down the S1->S2 axis:

* ``phi`` = dihedral C1-S1-S2-C2, the azimuth of C2 measured from C1;
* ``psi`` = dihedral C1-S1-S2-N, the azimuth of N measured from C1 in the same sense
  (N is never on the axis: S-N-S is bent, 114 deg in the template, N 0.86 Å off the S-S line).

The family is *cis* when ``|phi| < 90`` and *trans* otherwise.  N is "in between" when its azimuth
lies on the arc from C1 to C2 that ``phi`` spans (the shorter arc), i.e. ``0 < psi/phi < 1``,
and "outer" otherwise.  Cis and Trans have N in between, aCis and aTrans have it outside.
Swapping the two halves' labels maps ``psi`` to ``phi - psi`` and keeps ``phi`` and the class.
The classes are distinct conformers.  MMFF94 minima (RDKit; C-S-N-S dihedrals in parentheses,
energies above the lowest in kcal/mol): the trans C2 form (75, 75), the template, phi = 142.3,
psi = -108.8, 0: aTrans; (54, 160), phi = -154, psi = -128, 3.9: Trans; (166, 166), phi = 36,
psi = 18, 9.6: Cis.  The textbook cis C1 form, both CF3 on one side of the S-N-S plane, about
(+90, -90), has phi near 0 with N outside: aCis.  Trans and aTrans differ by |phi| passing
180 deg, the paper's "small undulation" (the C2 form with C-S-N-S (90, 90) is aTrans at
phi = 167, with (130, 130) Trans at phi = -121); turning one CF3 through the S-N-S plane on N's
side goes aCis -> Trans -> aTrans, the other way round aCis -> aTrans directly, as the paper
says of OMAT-0.

PYR14 (paper 1, Figure 8).  From the bond graph: N; the methyl carbon (its only heavy neighbour is
N); the butyl chain C1-C2-C3-C4 (C4 the terminal CH3, C1 on N); the four ring carbons.

* ``r2`` = distance methyl C - C4 ("end-to-end distance of butane tail with methyl");
* ``r1`` = distance from C4 to the nearest ring carbon ("... with carbon atom from the
  pentagon ring"); the nearest one because the ring carbons are equivalent up to labels.

On MMFF94 minima (RDKit), r2 > 6 Å exactly when the methyl-N-C1-C2 and C1-C2-C3-C4 dihedrals
are both anti (6.16-6.34 Å; every other minimum is at 3.65-5.46 Å), so the paper's anti/gauche
split at r2 = 6 Å is the all-anti zigzag from the methyl carbon to C4.  An all-anti chain with C2
gauche to the methyl about N-C1 (the MMFF global minimum, r2 = 5.43 Å) therefore counts as
gauche; :func:`butyl_dihedrals` gives the torsions themselves.  Minima with r1 < 4 Å
(3.5-3.9 Å, 3.8-7.1 kcal/mol above the lowest) all have N-C1-C2-C3 gauche, the tail folded back
over the ring: the paper's scorpion (r1 ~ 4 Å); with N-C1-C2-C3 anti, r1 = 4.8-5.5 Å.

Li clusters (paper 1, Table 5 and Figure 5): the number of distinct TFSI within 6 Å of a Li.
See :func:`li_tfsi_counts` for which atom of TFSI is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from ase.data import covalent_radii
from numpy.typing import ArrayLike

from ilflows.geometry import cell_widths, minimum_image
from ilflows.systems.ions import load_ion

TFSI_CLASSES: tuple[str, ...] = ("Cis", "aCis", "Trans", "aTrans")
"""TFSI conformer classes: N between the two C (Cis, Trans) or outside them (aCis, aTrans)."""

BUTYL_STATES: tuple[str, ...] = ("anti", "gauche")
"""PYR14 butyl tail states of :func:`butyl_state`."""

BOND_FACTOR = 1.2  # bonded when closer than this times the sum of covalent radii (S-S in TFSI: 2.67 > 2.52 Å)


# --- templates: bond graph and atom roles ----------------------------------------------------------


def bond_graph(name: str) -> list[list[int]]:
    """Return the neighbours of each atom of ion ``name``'s template (bonds as in the module docstring)."""
    return [list(row) for row in _bond_graph(name)]


@lru_cache
def _bond_graph(name: str) -> tuple[tuple[int, ...], ...]:
    atoms = load_ion(name)
    radii = covalent_radii[atoms.numbers]
    dist = atoms.get_all_distances()
    bonded = (dist < BOND_FACTOR * (radii[:, None] + radii[None, :])) & ~np.eye(len(atoms), dtype=bool)
    return tuple(tuple(np.flatnonzero(row).tolist()) for row in bonded)


@lru_cache
def _symbols(name: str) -> tuple[str, ...]:
    return tuple(load_ion(name).get_chemical_symbols())


@lru_cache
def _tree(name: str) -> tuple[tuple[int, int], ...]:
    """(atom, parent) pairs of a breadth-first spanning tree of the template, root 0 first (parent -1)."""
    graph, order, parent = _bond_graph(name), [0], {0: -1}
    for atom in order:
        for other in graph[atom]:
            if other not in parent:
                parent[other] = atom
                order.append(other)
    if len(order) != len(graph):
        raise ValueError(f"the {name} template is not one connected molecule")
    return tuple((atom, parent[atom]) for atom in order)


@lru_cache
def tfsi_roles() -> dict[str, int]:
    """Return the template indices of TFSI's C1, S1, N, S2, C2 (S1 the first sulfur of the template)."""
    graph, sym = _bond_graph("TFSI"), _symbols("TFSI")
    s1, s2 = (i for i, s in enumerate(sym) if s == "S")
    (n,) = (i for i, s in enumerate(sym) if s == "N")
    (c1,) = (j for j in graph[s1] if sym[j] == "C")
    (c2,) = (j for j in graph[s2] if sym[j] == "C")
    if sorted(graph[n]) != [s1, s2]:
        raise ValueError("the TFSI template's N is not bonded to both sulfurs")
    return {"C1": c1, "S1": s1, "N": n, "S2": s2, "C2": c2}


@lru_cache
def pyr14_roles() -> dict[str, int | tuple[int, ...]]:
    """Return the template indices of PYR14's N, methyl C, butyl C1-C4 (C4 terminal) and ring carbons."""
    graph, sym = _bond_graph("PYR14"), _symbols("PYR14")
    heavy = [[j for j in graph[i] if sym[j] != "H"] for i in range(len(sym))]
    (n,) = (i for i, s in enumerate(sym) if s == "N")
    (methyl,) = (j for j in heavy[n] if heavy[j] == [n])
    (c4,) = (i for i, s in enumerate(sym) if s == "C" and len(heavy[i]) == 1 and heavy[i] != [n])
    path, previous = [c4], -1  # walk the chain from its end to N: each chain carbon has 2 heavy neighbours
    while path[-1] != n:
        (step,) = (j for j in heavy[path[-1]] if j != previous)
        previous = path[-1]
        path.append(step)
    c1, c2, c3 = path[-2], path[-3], path[-4]
    ring = tuple(i for i, s in enumerate(sym) if s == "C" and i not in (methyl, c1, c2, c3, c4))
    if len(path) != 5 or len(ring) != 4:
        raise ValueError("the PYR14 template is not N-methyl, N-butyl pyrrolidinium")
    return {"N": n, "methyl": methyl, "C1": c1, "C2": c2, "C3": c3, "C4": c4, "ring": ring}


# --- geometry helpers ------------------------------------------------------------------------------


def _frames(positions: ArrayLike, cell: ArrayLike | None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Positions as (n_frames, n_atoms, 3), cells as (n_frames, 3, 3) or None, and whether one frame."""
    pos = np.asarray(positions, dtype=float)
    single = pos.ndim == 2
    pos = pos[None] if single else pos
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions: expected (n_atoms, 3) or (n_frames, n_atoms, 3), got {pos.shape}")
    if cell is None:
        return pos, None, single
    cells = np.broadcast_to(np.asarray(cell, dtype=float), (len(pos), 3, 3))
    return pos, cells, single


def _molecule_indices(molecules: Sequence[Sequence[int]], name: str) -> np.ndarray:
    """Atom indices of the molecules as an (n_molecules, n_template_atoms) array."""
    size = len(_symbols(name))
    if any(len(m) != size for m in molecules):
        raise ValueError(f"molecules: every {name} needs its {size} atom indices in template order")
    return np.array([list(m) for m in molecules], dtype=int).reshape(len(molecules), size)


def _whole(pos: np.ndarray, cells: np.ndarray | None, index: np.ndarray, name: str) -> np.ndarray:
    """Atoms of each molecule made whole along its bonds: (n_frames, n_molecules, n_template_atoms, 3)."""
    raw = pos[:, index]  # (F, M, A, 3)
    out = np.empty_like(raw)
    for atom, parent in _tree(name):
        if parent < 0:
            out[:, :, atom] = raw[:, :, atom]
        else:  # a bond is far shorter than half the box: its minimum image is the bond
            out[:, :, atom] = out[:, :, parent] + minimum_image(raw[:, :, atom] - raw[:, :, parent], cells)
    return out


def _dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Signed IUPAC dihedral a-b-c-d over the leading axes, degrees in (-180, 180]."""
    axis = c - b
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    near, far = a - b, d - c
    near = near - np.sum(near * axis, axis=-1, keepdims=True) * axis
    far = far - np.sum(far * axis, axis=-1, keepdims=True) * axis
    angle = np.degrees(np.arctan2(np.sum(np.cross(axis, near) * far, axis=-1), np.sum(near * far, axis=-1)))
    return np.where(angle <= -180.0, angle + 360.0, angle)


def _out(array: np.ndarray, single: bool) -> np.ndarray:
    return array[0] if single else array


# --- TFSI ------------------------------------------------------------------------------------------


def tfsi_angles(
    positions: ArrayLike, cell: ArrayLike | None, molecules: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the two TFSI shape angles of paper 1: ``phi`` (C1-S1-S2-C2) and ``psi`` (C1-S1-S2-N).

    Parameters
    ----------
    positions
        Atom positions, Å: ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)``.
    cell
        Cell rows, Å: ``(3, 3)`` or ``(n_frames, 3, 3)``; ``None`` for no periodic boundary.
    molecules
        Atom indices of each TFSI, in template order (e.g. the TFSI ranges of ``topology``).

    Returns
    -------
    phi, psi
        Signed dihedrals, degrees in (-180, 180], shape ``(n_molecules,)`` for one frame or
        ``(n_frames, n_molecules)``; see the module docstring for their definition.

    """
    pos, cells, single = _frames(positions, cell)
    whole = _whole(pos, cells, _molecule_indices(molecules, "TFSI"), "TFSI")
    at = {role: whole[:, :, i] for role, i in tfsi_roles().items()}
    phi = _dihedral(at["C1"], at["S1"], at["S2"], at["C2"])
    psi = _dihedral(at["C1"], at["S1"], at["S2"], at["N"])
    return _out(phi, single), _out(psi, single)


def classify_tfsi(phi: ArrayLike, psi: ArrayLike) -> np.ndarray:
    """Classify each TFSI as Cis, aCis, Trans or aTrans from its ``phi`` and ``psi``, degrees.

    Cis family when ``|phi| < 90``, trans otherwise; N in between (Cis, Trans) when
    ``0 < psi/phi < 1``, outside (aCis, aTrans) otherwise.  Returns a string array of the
    broadcast shape of ``phi`` and ``psi``.
    """
    phi, psi = np.broadcast_arrays(np.asarray(phi, dtype=float), np.asarray(psi, dtype=float))
    cis = np.abs(phi) < 90.0
    between = (phi * psi > 0) & (np.abs(psi) < np.abs(phi))  # same sense as phi, and not past C2
    names = np.array(TFSI_CLASSES)
    return names[np.where(cis, np.where(between, 0, 1), np.where(between, 2, 3))]


# --- PYR14 -----------------------------------------------------------------------------------------


def pyr14_distances(
    positions: ArrayLike, cell: ArrayLike | None, molecules: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Return PYR14's shape distances of paper 1: ``r1`` (tail end to ring), ``r2`` (tail end to methyl).

    Parameters
    ----------
    positions
        Atom positions, Å: ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)``.
    cell
        Cell rows, Å: ``(3, 3)`` or ``(n_frames, 3, 3)``; ``None`` for no periodic boundary.
    molecules
        Atom indices of each PYR14, in template order.

    Returns
    -------
    r1, r2
        Å, shape ``(n_molecules,)`` for one frame or ``(n_frames, n_molecules)``: ``r1`` from the
        terminal butyl carbon to the nearest ring carbon, ``r2`` from it to the N-methyl carbon.

    """
    pos, cells, single = _frames(positions, cell)
    whole = _whole(pos, cells, _molecule_indices(molecules, "PYR14"), "PYR14")
    roles = pyr14_roles()
    end = whole[:, :, roles["C4"]]
    r1 = np.linalg.norm(whole[:, :, list(roles["ring"])] - end[:, :, None], axis=-1).min(axis=-1)
    r2 = np.linalg.norm(whole[:, :, roles["methyl"]] - end, axis=-1)
    return _out(r1, single), _out(r2, single)


def butyl_state(r2: ArrayLike, threshold: float = 6.0) -> np.ndarray:
    """'anti' where ``r2`` (Å) is at least ``threshold`` (paper 1: 6 Å), else 'gauche'; same shape."""
    return np.where(np.asarray(r2, dtype=float) >= threshold, BUTYL_STATES[0], BUTYL_STATES[1])


def butyl_dihedrals(
    positions: ArrayLike, cell: ArrayLike | None, molecules: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return PYR14's tail torsions methyl-N-C1-C2, N-C1-C2-C3 and C1-C2-C3-C4, degrees in (-180, 180].

    Same arguments and shapes as :func:`pyr14_distances`; anti is near 180, gauche near +-60.
    """
    pos, cells, single = _frames(positions, cell)
    whole = _whole(pos, cells, _molecule_indices(molecules, "PYR14"), "PYR14")
    at = {role: whole[:, :, i] for role, i in pyr14_roles().items() if role != "ring"}
    chain = [at["methyl"], at["N"], at["C1"], at["C2"], at["C3"], at["C4"]]
    return tuple(_out(_dihedral(*chain[k : k + 4]), single) for k in range(3))


# --- Li clusters -----------------------------------------------------------------------------------


def li_tfsi_counts(
    positions: ArrayLike,
    cell: ArrayLike | None,
    li_indices: Sequence[int],
    tfsi_molecules: Sequence[Sequence[int]],
    cutoff: float = 6.0,
    by: str = "N",
) -> np.ndarray:
    """Count the distinct TFSI within ``cutoff`` of each Li (paper 1, Table 5).

    Parameters
    ----------
    positions
        Atom positions, Å: ``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)``.
    cell
        Cell rows, Å: ``(3, 3)`` or ``(n_frames, 3, 3)``; ``None`` for no periodic boundary.
    li_indices
        Atom index of each Li (a one-atom molecule of ``topology``: its range's only index).
    tfsi_molecules
        Atom indices of each TFSI, in template order.
    cutoff
        First-shell radius, Å (paper 1: 6 Å); must be below half the cell's smallest
        perpendicular width so that the minimum image is the only image within reach.
    by
        Which atoms of a TFSI must come within ``cutoff`` (minimum image): ``"N"`` its nitrogen,
        ``"O"`` any of its oxygens, ``"any"`` any of its atoms.

    Returns
    -------
    numpy.ndarray
        Integer counts, shape ``(n_li,)`` for one frame or ``(n_frames, n_li)``.

    Notes
    -----
    The default ``"N"`` is our reading of the paper: 6 Å is a TFSI-centre shell (Li-O bonds are
    about 2 Å, Li-N about 3-4.5 Å for mono- and bidentate TFSI), the paper's counts are 2 to 4
    with 5 rare, and its 5th TFSI "does not directly coordinate with Li but [is] detected within
    the first shell", which fits a centre within 6 Å; any oxygen or any atom within 6 Å would
    also take in much of the second shell.

    """
    sites = {"N": [tfsi_roles()["N"]], "O": [i for i, s in enumerate(_symbols("TFSI")) if s == "O"]}
    sites["any"] = list(range(len(_symbols("TFSI"))))
    if by not in sites:
        raise ValueError(f"by: expected one of {sorted(sites)}, got {by!r}")
    pos, cells, single = _frames(positions, cell)
    if cells is not None and np.any(cutoff >= cell_widths(cells).min(axis=-1) / 2):
        raise ValueError(
            f"cutoff {cutoff} Å reaches past half the cell's smallest width "
            f"({cell_widths(cells).min() / 2:.2f} Å), where a Li could reach two images of a TFSI; "
            "use a smaller cutoff or a bigger box"
        )
    index = _molecule_indices(tfsi_molecules, "TFSI")[:, sites[by]]  # (T, k)
    li = np.asarray(li_indices, dtype=int)
    counts = np.empty((len(pos), len(li)), dtype=int)
    for f in range(len(pos)):  # one frame at a time bounds memory at n_li x n_sites vectors
        frame_cells = None if cells is None else cells[f : f + 1]
        diff = pos[f, index][None] - pos[f, li][:, None, None]  # (L, T, k, 3)
        dist = np.linalg.norm(minimum_image(diff[None], frame_cells)[0], axis=-1)
        counts[f] = (dist.min(axis=-1, initial=np.inf) < cutoff).sum(axis=-1)
    return _out(counts, single)


def cluster_population(counts: ArrayLike) -> dict[int | str, float]:
    """Return the fraction of each value of ``counts`` (TFSI per Li, TFSI class names...) over all entries.

    Returns ``{value: fraction}`` sorted by value, fractions summing to 1; values that never occur
    are absent.  Multiply by 100 for the percentages of paper 1's Table 5.
    """
    values, n = np.unique(np.asarray(counts).ravel(), return_counts=True)
    if not n.sum():
        return {}
    return {value.item(): float(k / n.sum()) for value, k in zip(values, n, strict=True)}

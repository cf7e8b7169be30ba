"""Sanity guards for a frame against the molecules it should contain (its topology).

Paper 1 leaves out of training the systems "that did not converge or exhibited molecular
fragmentation", and names what an unphysical force field does in MD: vacuum forming under
NPT, molecules decomposing, the system collapsing into a ball.  These pure functions (numpy
only, no files or engines) detect each of those in one periodic frame:

* :func:`broken_bonds`: a covalent bond of the ion's template is stretched in the frame.
* :func:`compressed_bonds`: a covalent bond of the ion's template is squeezed in the frame.
* :func:`fused_molecules`: atoms of two different molecules at covalent-bond range.
* :func:`vacuum`: a point of the cell far from every atom (a bubble or a slab of vacuum).
* :func:`collapsed_atoms`: two atoms closer than a hard floor.
* :func:`density_outside`: the frame's density far from the reference density.

:func:`check_frame` runs them all and returns a :class:`FrameCheck`.  Every distance uses the
minimum image (exact for orthorhombic cells, and for any cell when the distance is shorter
than half its narrowest width).  The contact search is quadratic in the number of atoms; a
350-atom frame takes about 4 ms in all.  A topology is what :func:`ilflows.systems.topology`
returns for the frame's system: the ion name and atom index range of each molecule.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from itertools import product

import numpy as np
from ase.data import atomic_numbers, covalent_radii
from pydantic import BaseModel, ConfigDict, Field

from ilflows.geometry import (
    cell_widths,
    close_pairs,
    mass_density,
    nearest_image,
    species_mass,
    wrapped_fractional,
)
from ilflows.schemas.frames import Frame
from ilflows.systems.ions import load_ion

Topology = Sequence[tuple[str, range]]

# Li+ is a bare ion: its 1.9-2.1 Å contacts to TFSI oxygens are within covalent-radius range
# (1.28 + 0.66 Å) but are not bonds, so such elements neither bond nor fuse.
NON_BONDING = ("Li",)
# Two atoms closer than this times the sum of their covalent radii are bonded.
BOND_FACTOR = 1.2
# Reasons listed per check; the rest are counted in one more line.
MAX_REASONS = 5


class FrameCheck(BaseModel):
    """Outcome of :func:`check_frame`."""

    model_config = ConfigDict(frozen=True)

    ok: bool = Field(description="True when no guard found anything.")
    reasons: list[str] = Field(
        default_factory=list,
        description="One line per finding, naming the check, molecule or atoms and the distance (Å).",
    )


@cache
def template_bonds(
    name: str, bond_factor: float = BOND_FACTOR, non_bonding: tuple[str, ...] = NON_BONDING
) -> tuple[np.ndarray, np.ndarray]:
    """Covalent bonds of ion ``name``'s template geometry.

    A pair of atoms is bonded when closer than ``bond_factor`` times the sum of their covalent
    radii (ASE's, Cordero et al.); elements of ``non_bonding`` have no bonds.

    Returns
    -------
    pairs
        Atom index pairs within the molecule, shape (n_bonds, 2).
    lengths
        Template bond lengths, Å, shape (n_bonds,).

    """
    atoms = load_ion(name)
    numbers = atoms.get_atomic_numbers()
    radii = covalent_radii[numbers]
    d = atoms.get_all_distances()
    bonding = ~np.isin(atoms.get_chemical_symbols(), non_bonding)
    i, j = np.nonzero(
        np.triu(d < bond_factor * (radii[:, None] + radii[None]), 1) & bonding[:, None] & bonding[None]
    )
    return np.stack([i, j], axis=1), d[i, j]


@cache
def _template_symbols(name: str) -> tuple[str, ...]:
    return tuple(load_ion(name).get_chemical_symbols())


def _arrays(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions wrapped into [0, 1) and the cell (rows, Å)."""
    cell = np.asarray(frame.cell, dtype=float)
    return wrapped_fractional(frame.positions, cell), cell


def _min_image(dfrac: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Lengths, Å, of fractional difference vectors (last axis 3) after minimum-image wrapping."""
    return np.linalg.norm(nearest_image(dfrac) @ cell, axis=-1)


def _molecule_index(topology: Topology, n_atoms: int) -> np.ndarray:
    """Index of each atom's molecule in ``topology``; raise if the topology does not tile the frame."""
    mol = np.full(n_atoms, -1)
    for k, (_, atoms) in enumerate(topology):
        if atoms.stop > n_atoms or (mol[atoms.start : atoms.stop] >= 0).any():
            raise ValueError(f"topology molecule {k} ({atoms}) overlaps another or exceeds {n_atoms} atoms")
        mol[atoms.start : atoms.stop] = k
    if (mol < 0).any():
        raise ValueError(f"topology leaves atom {int(np.argmax(mol < 0))} of {n_atoms} in no molecule")
    return mol


def _label(frame: Frame, topology: Topology, mol: np.ndarray, atom: int) -> str:
    name, atoms = topology[mol[atom]]
    return f"{frame.species[atom]}{atom} of {name} #{mol[atom]} (atoms {atoms.start}-{atoms.stop - 1})"


def _capped(kind: str, found: list[tuple[float, str]], worst_first: bool) -> list[str]:
    """Reasons sorted worst first, at most :data:`MAX_REASONS` plus a count of the rest."""
    found = sorted(found, key=lambda f: f[0], reverse=worst_first)
    lines = [text for _, text in found[:MAX_REASONS]]
    if len(found) > MAX_REASONS:
        lines.append(f"{kind}: {len(found) - MAX_REASONS} more")
    return lines


def _bonds(frame: Frame, topology: Topology, bond_factor: float):
    """Yield (molecule, name, atoms, a, b, length, template length) of every template bond in ``frame``."""
    _molecule_index(topology, frame.n_atoms)
    frac, cell = _arrays(frame)
    for k, (name, atoms) in enumerate(topology):
        pairs, lengths = template_bonds(name, bond_factor)
        if not len(pairs):
            continue
        i, j = pairs[:, 0] + atoms.start, pairs[:, 1] + atoms.start
        d = _min_image(frac[j] - frac[i], cell)
        yield from ((k, name, atoms, a, b, x, ref) for a, b, x, ref in zip(i, j, d, lengths, strict=True))


def _bond_line(kind: str, frame: Frame, bond: tuple, limit: float) -> str:
    k, name, atoms, a, b, length, ref = bond
    return (
        f"{kind}: {name} #{k} (atoms {atoms.start}-{atoms.stop - 1}) bond "
        f"{frame.species[a]}{a}-{frame.species[b]}{b} is {length:.2f} Å "
        f"(template {ref:.2f} Å, limit {limit:.2f} Å)"
    )


def broken_bonds(
    frame: Frame, topology: Topology, *, bond_factor: float = BOND_FACTOR, max_stretch: float = 1.5
) -> list[str]:
    """Template bonds longer than ``max_stretch`` times their template length in ``frame``.

    Parameters
    ----------
    frame
        The frame, its atoms grouped molecule by molecule as in ``topology``.
    topology
        Ion name and atom index range of each molecule.
    bond_factor
        Template atoms closer than this times the sum of covalent radii are bonded.
    max_stretch
        A bond longer than this times its template length is broken (1.5: C-C 1.53 -> 2.30 Å,
        C-H 1.09 -> 1.64 Å); a bond vibrating at MD temperatures stays within about 1.2 x.

    """
    found = [
        (bond[5] / bond[6], _bond_line("broken", frame, bond, max_stretch * bond[6]))
        for bond in _bonds(frame, topology, bond_factor)
        if bond[5] > max_stretch * bond[6]
    ]
    return _capped("broken", found, worst_first=True)


def compressed_bonds(
    frame: Frame, topology: Topology, *, bond_factor: float = BOND_FACTOR, min_squeeze: float = 0.8
) -> list[str]:
    """Template bonds shorter than ``min_squeeze`` times their template length in ``frame``.

    A young committee can drive MD into squeezed bonds (B-F 0.89 Å, C-H 0.74 Å were seen) whose
    DFT forces, 50-175 eV/Å, wreck the next fit.  0.8 x (C-H 1.09 -> 0.87 Å) is six classical
    standard deviations of a C-H stretch at 450 K (force constant about 31 eV/Å^2: 0.035 Å).
    """
    found = [
        (bond[5] / bond[6], _bond_line("compressed", frame, bond, min_squeeze * bond[6]))
        for bond in _bonds(frame, topology, bond_factor)
        if bond[5] < min_squeeze * bond[6]
    ]
    return _capped("compressed", found, worst_first=False)


def _fuse_limits(species: list[str], fuse_factor: float, non_bonding: tuple[str, ...]) -> np.ndarray:
    """Per-atom half-limits: a contact is covalent when closer than the sum for its two atoms."""
    radii = fuse_factor * covalent_radii[[atomic_numbers[s] for s in species]]
    radii[np.isin(species, non_bonding)] = -np.inf
    return radii


def _fused(
    frame: Frame,
    topology: Topology,
    mol: np.ndarray,
    pairs: tuple[np.ndarray, ...],
    fuse_factor: float,
    non_bonding: tuple[str, ...],
) -> list[str]:
    i, j, d = pairs
    half = _fuse_limits(frame.species, fuse_factor, non_bonding)
    limit = half[i] + half[j]
    hit = (mol[i] != mol[j]) & (d < limit)
    found = [
        (
            dist,
            f"fused: {_label(frame, topology, mol, a)} and {_label(frame, topology, mol, b)} are "
            f"{dist:.2f} Å apart (limit {lim:.2f} Å)",
        )
        for a, b, dist, lim in zip(i[hit], j[hit], d[hit], limit[hit], strict=True)
    ]
    return _capped("fused", found, worst_first=False)


def fused_molecules(
    frame: Frame,
    topology: Topology,
    *,
    fuse_factor: float = 1.1,
    non_bonding: tuple[str, ...] = NON_BONDING,
) -> list[str]:
    """Contacts between atoms of different molecules at covalent-bond range.

    A contact is covalent when closer than ``fuse_factor`` times the sum of the two covalent
    radii.  1.1 is safe for hydrogen bonds: the limits for H...F, H...O and H...N are 0.97,
    1.07 and 1.12 Å, against 1.5 Å or more for the shortest hydrogen bonds; heavy-atom pairs get
    1.25 (F...F) to 2.31 Å (S...S), well under van der Waals contact (about 3 Å).  Elements of ``non_bonding``
    (Li+) are never covalently bonded, whatever their distance.
    """
    mol = _molecule_index(topology, frame.n_atoms)
    frac, cell = _arrays(frame)
    cutoff = 2 * fuse_factor * covalent_radii[[atomic_numbers[s] for s in set(frame.species)]].max()
    return _fused(frame, topology, mol, close_pairs(frac, cell, cutoff), fuse_factor, non_bonding)


def _collapsed(frame: Frame, pairs: tuple[np.ndarray, ...], min_distance: float) -> list[str]:
    i, j, d = pairs
    hit = d < min_distance
    found = [
        (
            dist,
            f"collapse: {frame.species[a]}{a} and {frame.species[b]}{b} are {dist:.2f} Å apart "
            f"(floor {min_distance} Å)",
        )
        for a, b, dist in zip(i[hit], j[hit], d[hit], strict=True)
    ]
    return _capped("collapse", found, worst_first=False)


def collapsed_atoms(frame: Frame, *, min_distance: float = 0.6) -> list[str]:
    """Pairs of atoms (any two, same molecule or not) closer than ``min_distance`` Å.

    0.6 Å is below every bond of the ions (C-H 1.09 Å is the shortest) and far below any
    non-bonded contact: only a broken potential puts two atoms there.
    """
    frac, cell = _arrays(frame)
    return _collapsed(frame, close_pairs(frac, cell, min_distance), min_distance)


def vacuum(frame: Frame, *, max_void: float = 6.5, grid_spacing: float = 1.5) -> list[str]:
    """Points of a grid over the cell farther than ``max_void`` Å from every atom.

    Parameters
    ----------
    frame
        The periodic frame.
    max_void
        Largest allowed distance, Å, from a grid point to its nearest atom.  In Packmol boxes
        of the papers' 10-pair liquids (4 liquids x 6 seeds, 0.7 Å grid) it is 3.4-4.9 Å at
        0.9 x the reference density, up to 5.3 Å at 0.77 x (paper 1's lowest nEQ density) and
        5.9 Å at 0.7 x, so 6.5 Å (an empty sphere 13 Å across) flags bubbles and slabs of
        vacuum only.  Gas-like boxes, such as the one-pair demo at 0.22 g/cm^3, exceed it by
        construction.  A box blown up under NPT is also caught by :func:`density_outside`.
    grid_spacing
        Largest grid step along each cell vector, Å.  The largest void is underestimated by
        at most half a voxel diagonal (1.3 Å at 1.5 Å spacing), which costs a quarter of a
        1 Å grid.

    Notes
    -----
    Each atom marks the grid points within ``max_void`` less half a voxel diagonal of its own
    voxel's centre, which are certainly within ``max_void`` of the atom; only the unmarked points
    are measured exactly, so a dense frame costs one stamp per atom.

    """
    frac, cell = _arrays(frame)
    n = np.maximum(1, np.ceil(np.linalg.norm(cell, axis=1) / grid_spacing)).astype(int)
    voxel = cell / n[:, None]
    half_diagonal = 0.5 * max(np.linalg.norm(np.array(s) @ voxel) for s in product((-1, 1), repeat=3))
    reach = max_void - half_diagonal
    covered = np.zeros(n.prod(), dtype=bool)
    if reach > 0:
        m = np.ceil(reach / (cell_widths(cell) / n)).astype(int)
        steps = np.stack(np.meshgrid(*(np.arange(-k, k + 1) for k in m), indexing="ij"), axis=-1)
        stencil = steps.reshape(-1, 3)[np.linalg.norm(steps.reshape(-1, 3) @ voxel, axis=1) <= reach]
        home = np.floor(frac * n).astype(np.int32)
        flat = np.zeros((len(home), len(stencil)), dtype=np.int32)
        for k in range(3):  # periodic wrap by table lookup: cheaper than % on every stamp
            wrap = (np.arange(-m[k], n[k] + m[k]) % n[k]).astype(np.int32)
            flat = flat * n[k] + wrap[home[:, k, None] + stencil[None, :, k] + m[k]]
        covered[flat.ravel()] = True
    empty = np.argwhere(~covered.reshape(n))
    if not len(empty):
        return []
    points = (empty + 0.5) / n
    nearest = np.concatenate(
        [
            _min_image(frac[None, :, :] - points[k : k + 256, None, :], cell).min(axis=1)
            for k in range(0, len(points), 256)
        ]
    )
    worst = int(np.argmax(nearest))
    if nearest[worst] <= max_void:
        return []
    x, y, z = points[worst] @ cell
    share = np.count_nonzero(nearest > max_void) / covered.size
    return [
        f"vacuum: no atom within {nearest[worst]:.2f} Å of ({x:.1f}, {y:.1f}, {z:.1f}) Å "
        f"(limit {max_void} Å; {share:.0%} of the grid is farther than that from any atom)"
    ]


def density_outside(
    frame: Frame, reference_density: float, *, density_range: tuple[float, float] = (0.5, 2.0)
) -> list[str]:
    """Report the frame's density if outside ``density_range`` times ``reference_density`` (g/cm^3).

    The default brackets paper 1's nEQ boxes (0.77-1.26 x) with a wide margin: only a box that
    collapsed into a ball or blew up with vacuum under NPT lands outside it.
    """
    rho = mass_density(species_mass(frame.species), frame.volume)
    lo, hi = density_range
    if lo * reference_density <= rho <= hi * reference_density:
        return []
    return [
        f"density: {rho:.3f} g/cm^3 is outside {lo}-{hi} x the reference {reference_density:.4g} g/cm^3 "
        f"({lo * reference_density:.3f}-{hi * reference_density:.3f} g/cm^3)"
    ]


def check_frame(
    frame: Frame,
    topology: Topology,
    *,
    reference_density: float | None = None,
    bond_factor: float = BOND_FACTOR,
    max_stretch: float = 1.5,
    min_squeeze: float = 0.8,
    fuse_factor: float = 1.1,
    non_bonding: tuple[str, ...] = NON_BONDING,
    min_distance: float = 0.6,
    max_void: float | None = 6.5,
    grid_spacing: float = 1.5,
    density_range: tuple[float, float] = (0.5, 2.0),
) -> FrameCheck:
    """Run every guard on ``frame``; see the individual checks for the thresholds.

    Parameters
    ----------
    frame
        The frame, its atoms grouped molecule by molecule as in ``topology``.
    topology
        Ion name and atom index range of each molecule (:func:`ilflows.systems.topology`).
    reference_density
        The system's reference density, g/cm^3; the density guard runs only when given.
    bond_factor, max_stretch, min_squeeze
        Template bond detection, broken-bond and compressed-bond limits (:func:`broken_bonds`,
        :func:`compressed_bonds`), dimensionless.
    fuse_factor, non_bonding
        Covalent-contact limit between molecules and ions that never bond (:func:`fused_molecules`).
    min_distance
        Collapse floor for any two atoms, Å (:func:`collapsed_atoms`).
    max_void, grid_spacing
        Largest empty distance and grid step, Å (:func:`vacuum`); ``max_void=None`` skips it
        (e.g. for gas-like boxes such as the one-pair demo at 0.22 g/cm^3).
    density_range
        Allowed density as multiples of ``reference_density`` (:func:`density_outside`).

    """
    mol = _molecule_index(topology, frame.n_atoms)
    for name, atoms in topology:
        if tuple(frame.species[atoms.start : atoms.stop]) != _template_symbols(name):
            raise ValueError(f"frame atoms {atoms.start}-{atoms.stop - 1} are not a {name} template")
    frac, cell = _arrays(frame)
    present = covalent_radii[[atomic_numbers[s] for s in set(frame.species)]].max()
    pairs = close_pairs(frac, cell, max(2 * fuse_factor * present, min_distance))
    reasons = broken_bonds(frame, topology, bond_factor=bond_factor, max_stretch=max_stretch)
    reasons += compressed_bonds(frame, topology, bond_factor=bond_factor, min_squeeze=min_squeeze)
    reasons += _fused(frame, topology, mol, pairs, fuse_factor, non_bonding)
    reasons += _collapsed(frame, pairs, min_distance)
    if max_void is not None:
        reasons += vacuum(frame, max_void=max_void, grid_spacing=grid_spacing)
    if reference_density is not None:
        reasons += density_outside(frame, reference_density, density_range=density_range)
    return FrameCheck(ok=not reasons, reasons=reasons)

"""The ion library: name, charge and a gas-phase geometry of each ion ilflows can pack.

Geometries are xyz files under ``ilflows/systems/molecules`` (centroid at the origin, Å);
each file's comment line says where the geometry came from: PYR14 and BF4 were split from an
xTB-relaxed ion pair, BMIM, Li and TFSI (trans, C2) are built by ``scripts/build_ions.py``
(RDKit ETKDG + MMFF94 from SMILES, fixed seed).

The order of :data:`ION_LIBRARY` (cations, then anions) is the order in which the molecules of
a packed box are laid out (see :func:`ilflows.systems.packing.topology`).  Liquids made of
these ions and their reference densities are in :mod:`ilflows.systems.compositions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class Ion:
    """One ion of the library.

    Attributes
    ----------
    name
        Library key, as written in ``system.ions``.
    formula
        Hill formula of the ion.
    charge
        Formal charge, e.
    description
        Chemical name.
    geometry
        Name of its xyz file under ``ilflows/systems/molecules``.

    """

    name: str
    formula: str
    charge: int
    description: str
    geometry: str


ION_LIBRARY: dict[str, Ion] = {
    ion.name: ion
    for ion in (
        Ion("PYR14", "C9H20N", +1, "1-butyl-1-methylpyrrolidinium", "PYR14.xyz"),
        Ion("BMIM", "C8H15N2", +1, "1-butyl-3-methylimidazolium", "BMIM.xyz"),
        Ion("Li", "Li", +1, "lithium", "Li.xyz"),
        Ion("BF4", "BF4", -1, "tetrafluoroborate", "BF4.xyz"),
        Ion("TFSI", "C2F6NO4S2", -1, "bis(trifluoromethanesulfonyl)imide", "TFSI.xyz"),
    )
}


def get_ion(name: str) -> Ion:
    """Return the library entry ``name`` or raise :class:`KeyError` listing the known ions."""
    try:
        return ION_LIBRARY[name]
    except KeyError:
        known = ", ".join(sorted(ION_LIBRARY))
        raise KeyError(f"unknown ion {name!r}; known: {known}") from None


def load_ion(name: str) -> Atoms:
    """Return the geometry of ion ``name`` as a non-periodic :class:`ase.Atoms` (Å).

    The xyz files are read here rather than with ``ase.io`` because their comment line is
    free text, which ASE's extended-xyz reader would try to parse as key=value pairs.
    """
    text = files("ilflows.systems").joinpath("molecules", get_ion(name).geometry).read_text()
    lines = text.splitlines()
    n_atoms = int(lines[0])
    rows = [line.split() for line in lines[2 : 2 + n_atoms]]
    positions = np.array([[float(x) for x in row[1:4]] for row in rows])
    return Atoms([row[0] for row in rows], positions=positions)


def molar_mass(ion: Ion | str) -> float:
    """Molar mass of an ion (an :class:`Ion` or its name), g/mol, from ASE's atomic masses."""
    return float(load_ion(ion.name if isinstance(ion, Ion) else ion).get_masses().sum())

"""Walkers' starting structures read from files, their atoms put in a composition's order.

ilflows lists a frame's atoms as its packed boxes do (the composition's ions in library order,
each ion's atoms as in its template); the guards and the analyses rely on that order.  A
structure made elsewhere (a POSCAR, the last frame of a classical MD run) lists them in any
order, so its molecules are found by covalent bonds (minimum image), each is matched to an ion
template by its bond graph, and the atoms are reordered.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx  # element-labelled graph isomorphism: which file atom is which template atom
import numpy as np
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from ilflows.geometry import mass_density
from ilflows.schemas.frames import Frame
from ilflows.schemas.inputs import SystemSpec
from ilflows.systems.guards import BOND_FACTOR, NON_BONDING, template_bonds
from ilflows.systems.ions import load_ion
from ilflows.systems.packing import ordered_ions, species

if TYPE_CHECKING:  # the campaign spec validates with these modules
    from ilflows.schemas.campaign import CampaignSpec


def read_start(path: Path, spec: CampaignSpec) -> tuple[int, Frame]:
    """Read a starting structure; return the index of its composition in ``spec.system`` and the frame.

    Raises
    ------
    ValueError
        One line: the file cannot be read, has no cell, matches no composition, or holds a
        molecule that is not one of its composition's ions.
    """
    atoms = read_box(path)
    formula = Counter(atoms.get_chemical_symbols())
    for k, system in enumerate(spec.system):
        if formula == Counter(species(system)):
            try:
                order = composition_order(atoms, system)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from err
            return k, Frame.from_ase(atoms[order])
    compositions = "; ".join(", ".join(f"{n} {ion}" for ion, n in s.ions.items()) for s in spec.system)
    raise ValueError(
        f"{path} ({atoms.get_chemical_formula()}) matches no composition of system ({compositions})"
    )


def _molecules(atoms) -> list[nx.Graph]:
    """Return the molecules of ``atoms``: connected components of its covalent bonds (minimum image)."""
    symbols = atoms.get_chemical_symbols()
    cutoffs = BOND_FACTOR * covalent_radii[atoms.get_atomic_numbers()]
    i, j = neighbor_list("ij", atoms, cutoffs)
    bonding = ~np.isin(symbols, NON_BONDING)
    graph = nx.Graph()
    graph.add_nodes_from((n, {"element": s}) for n, s in enumerate(symbols))
    graph.add_edges_from((a, b) for a, b in zip(i, j, strict=True) if bonding[a] and bonding[b])
    return [graph.subgraph(c) for c in nx.connected_components(graph)]


def identify_ions(path: Path) -> tuple[dict[str, int], float]:
    """Return the ions of the box in ``path`` (name -> count, library order) and its density, g/cm^3.

    Raises
    ------
    ValueError
        One line: the file cannot be read or has no cell, or a molecule is no ion of the library.
    """
    from ilflows.systems.ions import ION_LIBRARY

    atoms = read_box(path)
    found: Counter = Counter()
    for molecule in _molecules(atoms):
        name = next((ion for ion in ION_LIBRARY if _same_molecule(_template_graph(ion), molecule)), None)
        if name is None:
            formula = "".join(
                f"{s}{n}"
                for s, n in sorted(Counter(nx.get_node_attributes(molecule, "element").values()).items())
            )
            raise ValueError(
                f"{path}: a molecule {formula} (atom {min(molecule) + 1}) is no ion of the library"
            )
        found[name] += 1
    density = mass_density(atoms.get_masses().sum(), atoms.get_volume())
    return {ion: found[ion] for ion in ION_LIBRARY if found[ion]}, float(density)


def _same_molecule(template: nx.Graph, molecule: nx.Graph) -> bool:
    matcher = nx.isomorphism.GraphMatcher(
        template, molecule, node_match=lambda a, b: a["element"] == b["element"]
    )
    return len(template) == len(molecule) and matcher.is_isomorphic()


def read_box(path: Path):
    """Read a periodic structure file with ASE (any format it knows); one-line ValueError if not."""
    import ase.io

    try:
        atoms = ase.io.read(path)
    except Exception as err:  # ASE raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read {path} with ASE ({type(err).__name__}: {err})") from err
    if atoms.cell.rank < 3:
        raise ValueError(f"{path} has no periodic cell; write it in a format with one (POSCAR, extxyz)")
    atoms.pbc = True
    return atoms


def composition_order(atoms, system: SystemSpec) -> list[int]:
    """Return the indices of ``atoms`` in the order of a box packed for ``system``."""
    symbols = atoms.get_chemical_symbols()
    molecules = _molecules(atoms)
    order: list[int] = []
    for name, count in ordered_ions(system):
        template = _template_graph(name)
        found = 0
        for molecule in list(molecules):
            if found == count:
                break
            matcher = nx.isomorphism.GraphMatcher(
                template, molecule, node_match=lambda a, b: a["element"] == b["element"]
            )
            if matcher.is_isomorphic():
                order += [matcher.mapping[t] for t in range(len(template))]
                molecules.remove(molecule)
                found += 1
        if found < count:
            raise ValueError(f"{count} {name} expected, {found} found bonded as in its template")
    if molecules:
        left = molecules[0]
        formula = "".join(f"{s}{n}" for s, n in sorted(Counter(symbols[a] for a in left).items()))
        raise ValueError(
            f"a molecule {formula} (atom {min(left) + 1}) is bonded as no ion of the composition"
        )
    return order


def _template_graph(name: str) -> nx.Graph:
    pairs, _ = template_bonds(name)
    graph = nx.Graph()
    graph.add_nodes_from((n, {"element": s}) for n, s in enumerate(load_ion(name).get_chemical_symbols()))
    graph.add_edges_from(map(tuple, pairs))
    return graph

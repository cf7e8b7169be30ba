"""Build the RDKit-made ion geometries of ``ilflows/systems/molecules`` (BMIM, Li, TFSI).

RDKit is not a dependency of ilflows: install it in the venv only to run this script::

    .venv/bin/pip install rdkit
    .venv/bin/python scripts/build_ions.py          # BMIM, Li and TFSI
    .venv/bin/python scripts/build_ions.py TFSI     # only the ions named

For each ion: SMILES -> explicit hydrogens -> ``N_CONFORMERS`` ETKDGv3 conformers (random
seed ``SEED``, one thread, so a rerun with the same RDKit version writes the same file) ->
MMFF94 optimisation of each -> the lowest-energy conformer among those the ion accepts
(TFSI: trans only, C-S...S-C pseudo-dihedral above 90 degrees) -> centroid moved to the
origin -> ``<name>.xyz`` whose comment line records the SMILES, RDKit version, seed and
conformer.  A single atom (Li+) is written at the origin without embedding.

PYR14 and BF4 are not built here: their files were split from an xTB-relaxed PYR14+ BF4- ion
pair (see their comment lines) and are kept as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem, rdMolDescriptors

MOLECULES = Path(__file__).resolve().parents[1] / "ilflows" / "systems" / "molecules"
SEED = 20240611
N_CONFORMERS = 30


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> float:
    """Signed dihedral angle p0-p1-p2-p3, degrees in (-180, 180]; the atoms need not be bonded."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n0, n1 = np.cross(b0, b1), np.cross(b1, b2)
    return float(np.degrees(np.arctan2(np.cross(n0, n1) @ b1 / np.linalg.norm(b1), n0 @ n1)))


def tfsi_dihedrals(mol: Chem.Mol, pos: np.ndarray) -> tuple[float, float, float]:
    """TFSI's |C-S...S-C| (about 0: cis, about 180: trans) and its two C-S-N-S dihedrals, degrees.

    Equal C-S-N-S dihedrals (same sign) are what a C2 axis through N imposes.
    """
    c1, s1, n, s2, c2 = mol.GetSubstructMatch(Chem.MolFromSmarts("C-S-[N-]-S-C"))
    return (
        abs(dihedral(*pos[[c1, s1, s2, c2]])),
        dihedral(*pos[[c1, s1, n, s2]]),
        dihedral(*pos[[c2, s2, n, s1]]),
    )


def tfsi_note(cssc: float, csns_1: float, csns_2: float) -> str:
    """Conformer note of TFSI for the xyz comment line."""
    symmetry = " (C2)" if abs(csns_1 - csns_2) < 1.0 else ""
    return f", trans{symmetry}: C-S...S-C {cssc:.1f} deg, C-S-N-S {csns_1:.1f} and {csns_2:.1f} deg"


@dataclass(frozen=True)
class Recipe:
    """How to build one ion: its SMILES, chemical name and which conformers it accepts."""

    name: str
    smiles: str
    description: str
    accept: Callable[[Chem.Mol, np.ndarray], bool] = lambda mol, pos: True
    note: Callable[[Chem.Mol, np.ndarray], str] = lambda mol, pos: ""


RECIPES = {
    r.name: r
    for r in (
        Recipe("BMIM", "CCCCn1cc[n+](C)c1", "1-butyl-3-methylimidazolium cation"),
        Recipe("Li", "[Li+]", "lithium cation"),
        Recipe(
            "TFSI",
            "FC(F)(F)S(=O)(=O)[N-]S(=O)(=O)C(F)(F)F",
            "bis(trifluoromethanesulfonyl)imide anion",
            accept=lambda mol, pos: tfsi_dihedrals(mol, pos)[0] > 90.0,
            note=lambda mol, pos: tfsi_note(*tfsi_dihedrals(mol, pos)),
        ),
    )
}


def build(recipe: Recipe) -> tuple[Chem.Mol, np.ndarray, str]:
    """Return the molecule, its chosen positions (Å, centroid at origin) and a conformer note."""
    mol = Chem.AddHs(Chem.MolFromSmiles(recipe.smiles))
    if mol.GetNumAtoms() == 1:
        return mol, np.zeros((1, 3)), "single atom at the origin"
    params = AllChem.ETKDGv3()
    params.randomSeed = SEED
    params.numThreads = 1
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=N_CONFORMERS, params=params))
    results = AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=5000)
    candidates = []
    for conf_id, (not_converged, energy) in zip(conf_ids, results, strict=True):
        pos = mol.GetConformer(conf_id).GetPositions()
        if not not_converged and recipe.accept(mol, pos):
            candidates.append((energy, conf_id, pos))
    if not candidates:
        raise SystemExit(f"{recipe.name}: no converged, accepted conformer among {N_CONFORMERS}")
    energy, conf_id, pos = min(candidates, key=lambda c: c[0])
    note = (
        f"lowest MMFF94 energy ({energy:.2f} kcal/mol) of {len(candidates)} accepted of "
        f"{N_CONFORMERS} ETKDGv3 conformers (conformer {conf_id}){recipe.note(mol, pos)}"
    )
    return mol, pos - pos.mean(axis=0), note


def write(recipe: Recipe) -> Path:
    """Build ``recipe`` and write its xyz file; return the path."""
    mol, pos, note = build(recipe)
    formula = rdMolDescriptors.CalcMolFormula(mol).rstrip("+-")
    comment = (
        f"{recipe.name} {recipe.description}, {formula}; RDKit {rdBase.rdkitVersion} from SMILES "
        f"{recipe.smiles}, seed {SEED}: {note}; built by scripts/build_ions.py; centroid at origin, A"
    )
    lines = [str(mol.GetNumAtoms()), comment]
    for atom, (x, y, z) in zip(mol.GetAtoms(), pos, strict=True):
        lines.append(f"{atom.GetSymbol():<2} {x:14.8f} {y:14.8f} {z:14.8f}")
    path = MOLECULES / f"{recipe.name}.xyz"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(names: list[str]) -> None:
    """Build the ions ``names`` (all recipes when empty)."""
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise SystemExit(f"unknown ion(s) {unknown}; known: {', '.join(RECIPES)}")
    for name in names or RECIPES:
        print(write(RECIPES[name]).read_text().splitlines()[1])


if __name__ == "__main__":
    main(sys.argv[1:])

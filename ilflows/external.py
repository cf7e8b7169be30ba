"""Labelled frames computed elsewhere: extxyz files and DeePMD npy systems as DFTLabel documents.

Pure readers (no jobflow, no store).  Energies, forces and stresses are converted to eV, eV/Å
and GPa (pressure sign, positive when compressed) with :mod:`ase.units`; positions and cells
are taken as Å.  A frame without energy or forces is skipped and counted, never filled in.
Each import comes with an :class:`ImportReport` of what a chemist should see before training.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import ase.io
import numpy as np
from ase import Atoms, units
from ase.neighborlist import neighbor_list
from ase.stress import voigt_6_to_full_3x3_stress
from pydantic import BaseModel, Field

from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.inputs import ImportSpec
from ilflows.schemas.records import DFTLabel

ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": units.Hartree,
    "Ry": units.Rydberg,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
}
_LENGTH_UNITS = {"Å": 1.0, "A": 1.0, "bohr": units.Bohr}
FORCE_UNITS = {f"{e}/{x}": fe / fx for e, fe in ENERGY_UNITS.items() for x, fx in _LENGTH_UNITS.items()}

# 10 MADs is about 6.7 standard deviations for normally spread data: thermal scatter stays
# unflagged, configurations unlike the rest (close contacts, broken bonds) do not.
OUTLIER_K = 10.0
NET_FORCE_TOL = 0.1  # eV/Å; the forces of a periodic DFT frame sum to about zero
CONTACT_CUTOFF = 3.0  # Å; neighbour search radius for the closest contact
# Imported labels ran nothing here and come before any loop iteration.
_IMPORTED = {"engine": "external", "converged": True, "wall_time": 0.0, "iteration": -1}


def _factor(table: dict[str, float], unit: str, argument: str) -> float:
    """Return the factor that converts ``unit`` to eV-based units, refusing unknown ones in one line."""
    if unit not in table:
        raise ValueError(f"{argument}={unit!r} is not supported; accepted: {', '.join(table)}")
    return table[unit]


class ImportReport(BaseModel):
    """What an imported set holds and what is odd about it."""

    source_path: str = Field(description="File or folder read.")
    format: str = Field(description="'extxyz' or 'deepmd/npy'.")
    level_of_theory: str = Field(description="Level of theory as given by the importer.")
    n_frames: int = Field(description="Frames imported.")
    n_skipped: int = Field(description="Frames of the source left out.")
    skipped: dict[int, str] = Field(description="Why each left-out frame (index in the source) was left out.")
    species: dict[str, int] = Field(description="Atoms of each element, summed over the imported frames.")
    compositions: dict[str, int] = Field(description="Number of frames of each chemical formula.")
    energy: tuple[float, float, float] = Field(description="Lowest, median and highest total energy, eV.")
    energy_per_atom: tuple[float, float, float] = Field(description="Same per atom, eV/atom.")
    energy_mad_per_atom: float = Field(description="Median absolute deviation of energy per atom, eV/atom.")
    outlier_k: float = Field(description="Outlier threshold: MADs of energy per atom from the median.")
    energy_outliers: dict[int, float] = Field(description="Set position -> total energy of each outlier, eV.")
    net_force: list[float] = Field(description="Norm of the sum of the forces of each frame, eV/Å.")
    net_force_mean: float = Field(description="Mean of net_force, eV/Å.")
    net_force_max: float = Field(description="Largest net_force, eV/Å.")
    net_force_tol: float = Field(description="Net force above which a frame is counted, eV/Å.")
    n_net_force_above_tol: int = Field(description="Frames whose net_force exceeds net_force_tol.")
    max_force: list[float] = Field(description="Largest atomic force norm of each frame, eV/Å.")
    n_with_stress: int = Field(description="Frames that carry a stress tensor (GPa).")
    min_distance: float = Field(description="Shortest interatomic distance (minimum image), Å; at most 3 Å.")
    min_distance_index: int = Field(description="Set position of the frame with min_distance.")

    @classmethod
    def from_labels(
        cls,
        labels: list[DFTLabel],
        skipped: dict[int, str],
        outlier_k: float = OUTLIER_K,
        net_force_tol: float = NET_FORCE_TOL,
    ) -> ImportReport:
        """Describe the labels of one source (``skipped``: source index -> reason)."""
        energy = np.array([label.energy for label in labels])
        n_atoms = np.array([label.frame.n_atoms for label in labels])
        per_atom = energy / n_atoms
        median = np.median(per_atom)
        mad = float(np.median(np.abs(per_atom - median)))
        outliers = np.flatnonzero(np.abs(per_atom - median) > outlier_k * mad)
        forces = [np.asarray(label.forces) for label in labels]
        net = [float(np.linalg.norm(f.sum(axis=0))) for f in forces]
        contacts = [_closest_contact(label.frame) for label in labels]
        first = labels[0].parameters
        return cls(
            source_path=first["source_path"],
            format=first["format"],
            level_of_theory=first["level_of_theory"],
            n_frames=len(labels),
            n_skipped=len(skipped),
            skipped=skipped,
            species=Counter(s for label in labels for s in label.frame.species),
            compositions=Counter(Atoms(label.frame.species).get_chemical_formula() for label in labels),
            energy=(energy.min(), np.median(energy), energy.max()),
            energy_per_atom=(per_atom.min(), median, per_atom.max()),
            energy_mad_per_atom=mad,
            outlier_k=outlier_k,
            energy_outliers={int(i): energy[i] for i in outliers},
            net_force=net,
            net_force_mean=np.mean(net),
            net_force_max=max(net),
            net_force_tol=net_force_tol,
            n_net_force_above_tol=sum(n > net_force_tol for n in net),
            max_force=[float(np.linalg.norm(f, axis=1).max()) for f in forces],
            n_with_stress=sum(label.stress is not None for label in labels),
            min_distance=min(contacts),
            min_distance_index=int(np.argmin(contacts)),
        )

    def summary(self) -> str:
        """Return a few lines to read before training on the set (frames numbered by set position)."""
        n, k = self.n_frames, self.outlier_k
        skipped = "; ".join(f"{m} x {reason}" for reason, m in Counter(self.skipped.values()).items())
        outliers = ", ".join(f"frame {i} ({e:.1f} eV)" for i, e in self.energy_outliers.items())
        lines = [
            f"{Path(self.source_path).name} ({self.format}): {n} frames, {self.n_skipped} skipped"
            f"{f' ({skipped})' if skipped else ''}; level of theory: {self.level_of_theory}",
            "composition: " + ", ".join(f"{f} ({m} frames)" for f, m in self.compositions.items()),
            "energy min/median/max: {:.3f} / {:.3f} / {:.3f} eV; ".format(*self.energy)
            + "{:.4f} / {:.4f} / {:.4f} eV/atom".format(*self.energy_per_atom),
            f"energy outliers (> {k:g} MAD = {k * self.energy_mad_per_atom:.4f} eV/atom from the median): "
            + (outliers or "none"),
            f"net force |sum F| per frame: mean {self.net_force_mean:.3f}, max {self.net_force_max:.3f} eV/Å;"
            f" {self.n_net_force_above_tol}/{n} frames above {self.net_force_tol:g} eV/Å",
            f"max |F| per frame: median {np.median(self.max_force):.2f}, max {max(self.max_force):.2f} eV/Å"
            f" (frame {int(np.argmax(self.max_force))})",
            f"stress: {self.n_with_stress}/{n} frames",
            f"closest contact: {self.min_distance:.3f} Å (frame {self.min_distance_index})",
        ]
        return "\n".join(lines)


class ImportedSet(BaseModel):
    """Labels read from a source, with the report on them."""

    labels: list[DFTLabel] = Field(description="One label per imported frame: eV, eV/Å, stress GPa.")
    report: ImportReport = Field(description="Counts, energy (eV, eV/atom), force (eV/Å), distance (Å).")


def _closest_contact(frame: Frame) -> float:
    """Shortest interatomic distance (minimum image when the frame has a cell), at most the cutoff, Å."""
    atoms = Atoms(frame.species, positions=frame.positions, cell=frame.cell, pbc=frame.volume > 0)
    return float(min(neighbor_list("d", atoms, CONTACT_CUTOFF), default=CONTACT_CUTOFF))


def _missing(energy, forces, n_atoms: int) -> str | None:
    """Return why a frame cannot be used, or None."""
    if energy is None or forces is None:
        return "no energy" if energy is None else "no forces"
    if np.size(forces) != 3 * n_atoms:
        return f"forces for {np.size(forces) // 3} of {n_atoms} atoms"
    return None if np.isfinite(energy) and np.isfinite(forces).all() else "energy or forces not finite"


def _assemble(rows: Iterable, campaign: str, stage: str, files: list[Path], fields: dict) -> ImportedSet:
    """Turn (source index, frame, energy eV, forces eV/Å, stress GPa, parameters) rows into labels.

    ``fields`` are kept in every label with the sha256 of ``files`` (the source's files, in order).
    """
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    common = {**fields, "sha256": digest.hexdigest()}
    labels: list[DFTLabel] = []
    skipped: dict[int, str] = {}
    for index, frame, energy, forces, stress, extra in rows:
        if reason := _missing(energy, forces, frame.n_atoms):
            skipped[index] = reason
            continue
        origin = FrameOrigin(
            campaign=campaign, stage=stage, method="import", index=len(labels), source=fields["set_name"]
        )
        labels.append(
            DFTLabel(
                **_IMPORTED,
                parameters={**common, **extra, "frame_index": index},
                energy=float(energy),
                forces=np.asarray(forces, dtype=float).reshape(-1, 3).tolist(),
                stress=None if stress is None else np.asarray(stress).tolist(),
                campaign=campaign,
                frame_id=origin.frame_id,
                frame=frame,
                origin=origin,
            )
        )
    if not labels:
        reasons = dict(Counter(skipped.values()))
        raise ValueError(f"{fields['source_path']}: no frame with energy and forces {reasons}")
    return ImportedSet(labels=labels, report=ImportReport.from_labels(labels, skipped))


def read_extxyz(
    path: str | Path,
    *,
    campaign: str,
    stage: Literal["initial", "validation"],
    level_of_theory: str,
    source: str,
    energy_unit: str = "eV",
    force_unit: str = "eV/Å",
    set_name: str = "import",
) -> ImportedSet:
    """Import the labelled frames of an extended-XYZ file.

    Parameters
    ----------
    path
        The extxyz file: ``energy`` and ``forces`` (or a SinglePointCalculator's), positions and
        ``Lattice`` in Å, ``stress`` as ASE writes it (eV/Å^3, positive when stretched).
    campaign, stage
        Campaign of the labels and their FrameOrigin stage.
    level_of_theory, source
        What computed the labels and where they come from (kept in every label).
    energy_unit, force_unit
        Units of the file's values: keys of ENERGY_UNITS and FORCE_UNITS.
    set_name
        Name of this data set in frame ids (``campaign/stage/set_name/i``).

    Returns
    -------
    ImportedSet
        Labels in eV, eV/Å and GPa (pressure sign) and the report on them.
    """
    e_factor = _factor(ENERGY_UNITS, energy_unit, "energy_unit")
    f_factor = _factor(FORCE_UNITS, force_unit, "force_unit")
    path = Path(path).resolve()

    def rows():
        for i, atoms in enumerate(ase.io.iread(path, index=":", format="extxyz")):
            results = atoms.calc.results if atoms.calc is not None else {}
            energy, forces, stress = (results.get(key) for key in ("energy", "forces", "stress"))
            energy = None if energy is None else energy * e_factor
            forces = None if forces is None else np.asarray(forces) * f_factor
            if stress is not None:
                stress = -voigt_6_to_full_3x3_stress(stress) / units.GPa
            yield i, Frame.from_ase(atoms), energy, forces, stress, {}

    fields = {"source_path": str(path), "format": "extxyz", "energy_unit": energy_unit}
    fields.update(force_unit=force_unit, level_of_theory=level_of_theory, source=source, set_name=set_name)
    return _assemble(rows(), campaign, stage, [path], fields)


def read_deepmd_npy(
    path: str | Path,
    *,
    campaign: str,
    stage: Literal["initial", "validation"],
    level_of_theory: str,
    source: str,
    energy_unit: str = "eV",
    force_unit: str = "eV/Å",
    set_name: str = "import",
) -> ImportedSet:
    """Import a DeePMD system folder (``type.raw``, ``type_map.raw``, ``set.*/*.npy``).

    Every ``set.*`` is read in name order; ``box`` and ``coord`` are Å, ``energy``, ``force``
    and ``virial`` (optional, in energy_unit; stress = virial / V, pressure sign) are converted.
    A set without ``energy.npy`` or ``force.npy`` has its frames skipped.  A label's ``frame_index``
    counts frames over all sets and ``set`` names its folder.  Other arguments as :func:`read_extxyz`.
    """
    e_factor = _factor(ENERGY_UNITS, energy_unit, "energy_unit")
    f_factor = _factor(FORCE_UNITS, force_unit, "force_unit")
    root = Path(path).resolve()
    sets = sorted(root.glob("set.*"))
    if not sets or not (root / "type_map.raw").is_file():
        raise ValueError(f"{root}: not a DeePMD system (needs type.raw, type_map.raw and set.*/)")
    type_map = (root / "type_map.raw").read_text().split()
    species = [type_map[int(t)] for t in (root / "type.raw").read_text().split()]

    def rows():
        index = 0
        for folder in sets:
            data = {f.stem: np.load(f) for f in folder.glob("*.npy")}
            if "coord" not in data or "box" not in data:
                raise ValueError(f"{folder}: box.npy and coord.npy are required")
            for j in range(len(data["coord"])):
                positions = data["coord"][j].reshape(len(species), 3).tolist()
                box = data["box"][j].reshape(3, 3).tolist()
                frame = Frame(species=species, positions=positions, cell=box)
                energy = data["energy"][j].item() * e_factor if "energy" in data else None
                forces = data["force"][j] * f_factor if "force" in data else None
                stress = None
                if "virial" in data:
                    stress = data["virial"][j].reshape(3, 3) * e_factor / frame.volume / units.GPa
                yield index, frame, energy, forces, stress, {"set": folder.name}
                index += 1

    files = [root / "type.raw", root / "type_map.raw", *sorted(f for s in sets for f in s.glob("*.npy"))]
    fields = {"source_path": str(root), "format": "deepmd/npy", "energy_unit": energy_unit}
    fields.update(force_unit=force_unit, level_of_theory=level_of_theory, source=source, set_name=set_name)
    return _assemble(rows(), campaign, stage, files, fields)


def read_import(spec: ImportSpec, campaign: str, set_name: str) -> ImportedSet:
    """Read one ``initial.imports`` entry of a campaign spec."""
    reader = read_extxyz if spec.format == "extxyz" else read_deepmd_npy
    return reader(
        spec.path,
        campaign=campaign,
        stage=spec.stage,
        level_of_theory=spec.level_of_theory,
        source=spec.source,
        energy_unit=spec.energy_unit,
        force_unit=spec.force_unit,
        set_name=set_name,
    )

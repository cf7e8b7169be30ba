"""``ilflows export``: a campaign's labels as DeePMD systems or one extxyz file, and its models.

DeePMD systems are written by dpdata (one system per composition, the campaign's type map), so
that DeePMD-kit and DP-GEN read them as their own; extxyz by ASE, with each label's frame id and
level of theory in its ``info``.  Only converged labels are exported; held-out and validation
labels go too (they are labels), each marked with its stage in extxyz.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ilflows.schemas import DFTLabel, ModelFile
from ilflows.train.deepmd import EV_PER_A3_IN_GPA  # the factor the trainer writes virials with


def campaign_labels(store, campaign: str, iteration: int | None = None) -> list[DFTLabel]:
    """Converged labels of ``campaign`` (asked for up to ``iteration``, if given), in frame-id order."""
    from ilflows.store.queries import natural

    criteria = {"output.kind": "dft_label", "output.campaign": campaign, "output.converged": True}
    if iteration is not None:
        criteria["output.iteration"] = {"$lte": iteration}
    labels = [DFTLabel.model_validate(d["output"]) for d in store.query(criteria, properties=["output"])]
    return sorted(labels, key=lambda label: natural(label.frame_id))


def virial(label: DFTLabel) -> np.ndarray | None:
    """Return DeePMD's virial of a label, eV (3, 3): pressure-sign stress times volume; None without one."""
    if label.stress is None:
        return None
    return np.asarray(label.stress, dtype=float) * label.frame.volume / EV_PER_A3_IN_GPA


def write_deepmd(labels: list[DFTLabel], type_map: list[str], out: Path) -> list[Path]:
    """Write one ``deepmd/npy`` system per species sequence under ``out`` (sys000, sys001, ...)."""
    import dpdata  # DeePMD's own reader and writer of its data format

    groups: dict[tuple[str, ...], list[DFTLabel]] = {}
    for label in labels:
        groups.setdefault(tuple(label.frame.species), []).append(label)
    folders = []
    for k, (species, group) in enumerate(groups.items()):
        types = np.array([type_map.index(s) for s in species])
        data = {
            "atom_names": list(type_map),
            "atom_numbs": [int(np.sum(types == t)) for t in range(len(type_map))],
            "atom_types": types,
            "orig": np.zeros(3),
            "cells": np.array([label.frame.cell for label in group], dtype=float),
            "coords": np.array([label.frame.positions for label in group], dtype=float),
            "energies": np.array([label.energy for label in group], dtype=float),
            "forces": np.array([label.forces for label in group], dtype=float),
        }
        virials = [virial(label) for label in group]
        if all(v is not None for v in virials):
            data["virials"] = np.array(virials)
        folder = Path(out) / f"sys{k:03d}"
        dpdata.LabeledSystem(data=data).to("deepmd/npy", str(folder))
        folders.append(folder)
    return folders


# Units of the pressure-sign stress written beside ASE's: GPa (the labels'), or kbar (VASP's
# OUTCAR and atomate2's task documents).
STRESS_UNITS = {"GPa": 1.0, "kbar": 10.0}


def write_extxyz(labels: list[DFTLabel], path: Path, stress_unit: str = "GPa") -> Path:
    """Write every label to one extxyz file: energy, forces, stress and provenance.

    The stress goes in twice: as ASE's ``stress`` (eV/Å^3, positive when stretched; what
    ``ase.io.read`` gives a calculator) and as ``stress_<unit>`` in the frame's info (3x3,
    positive when compressed, in ``stress_unit``: GPa or kbar).
    """
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    frames = []
    for label in labels:
        atoms = label.frame.to_ase()
        results = {"energy": label.energy, "forces": np.asarray(label.forces, dtype=float)}
        if label.stress is not None:  # ASE's stress is tensile-positive, in eV/Å^3
            results["stress"] = full_3x3_to_voigt_6_stress(-np.asarray(label.stress) / EV_PER_A3_IN_GPA)
            atoms.info[f"stress_{stress_unit}"] = np.asarray(label.stress) * STRESS_UNITS[stress_unit]
        atoms.calc = SinglePointCalculator(atoms, **results)
        theory = label.parameters.get("level_of_theory") or label.engine
        atoms.info.update(frame_id=label.frame_id, stage=label.origin.stage, level_of_theory=theory)
        frames.append(atoms)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return Path(path)


def write_models(store, campaign: str, iteration: int | None, out: Path) -> list[Path]:
    """Write the frozen models of ``iteration`` (default: the last trained) and their training records."""
    criteria = {"output.kind": "training", "output.campaign": campaign}
    docs = [d["output"] for d in store.query(criteria, properties=["output.iteration"])]
    if not docs:
        return []
    last = max(d["iteration"] for d in docs) if iteration is None else iteration
    criteria["output.iteration"] = last
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in sorted((d["output"] for d in store.query(criteria, load=True)), key=lambda t: t["member"]):
        model = ModelFile.model_validate(doc.pop("model_file"))
        stem = f"it{last}_m{doc['member']}_{doc['engine']}"
        paths.append(model.write(Path(out) / f"{stem}{Path(model.name).suffix}"))
        (Path(out) / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    return paths

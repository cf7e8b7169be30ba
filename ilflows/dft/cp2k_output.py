"""Reading CP2K's text output (shared by the xTB and DFT engines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase.units import Bohr, Hartree

from ilflows.dft import DFTSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult

# File names shared by both CP2K engines: the output CP2K's stdout goes to, and the project
# name that prefixes its trajectory files.
OUTPUT = "cp2k.out"
PROJECT = "ilflows"


class Cp2kOutput(NamedTuple):
    """Values of the last force evaluation, converted to eV, eV/Å and GPa (None: not printed)."""

    scf_converged: bool
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    version: str | None = None  # CP2K's version string, e.g. '2023.1'


def parse_cp2k_output(text: str) -> Cp2kOutput:
    """Read SCF status, energy, forces and stress of the last force evaluation in ``text``."""
    lines = text.splitlines()
    scf_converged = "outer SCF loop converged" in text and "SCF run NOT converged" not in text
    energies = re.findall(r"ENERGY\| Total FORCE_EVAL.*\[a\.u\.\]:\s+(\S+)", text)
    forces = stress = None
    for i, line in enumerate(lines):
        if "ATOMIC FORCES in [a.u.]" in line:
            # title, blank line, column header, then one row per atom up to the sum
            end = next((j for j in range(i, len(lines)) if "SUM OF" in lines[j]), len(lines))
            forces = np.array([row.split()[-3:] for row in lines[i + 3 : end]], float) * Hartree / Bohr
        elif "STRESS| Analytical stress tensor [GPa]" in line:
            stress = np.array([row.split()[-3:] for row in lines[i + 2 : i + 5]], float)
    version = re.search(r"CP2K\| version string:\s+CP2K version (\S+)", text)
    energy = float(energies[-1]) * Hartree if energies else None
    return Cp2kOutput(scf_converged, energy, forces, stress, version.group(1) if version else None)


def abort_message(text: str) -> str | None:
    """Return CP2K's [ABORT] box as one line (its log tail is only MPI noise)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "[ABORT]" in line:
            # the box's first 11 columns hold the ASCII art; the message sits right of it
            return " ".join(" ".join(row[11:].rstrip(" *") for row in lines[i : i + 6]).split())
    return None


def read_cp2k_xyz(path: Path) -> list[tuple[float, np.ndarray]]:
    """Return (energy in Hartree, coordinates) of each frame of a CP2K pos or frc xyz file."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    return [
        (
            float(lines[i + 1].rsplit("E =", 1)[1]),
            np.array([r.split()[1:4] for r in lines[i + 2 : i + 2 + n]], float),
        )
        for i in range(0, len(lines) - n - 1, n + 2)
    ]


def md_labels(
    engine: str,
    parameters: dict,
    spec: DFTSpec,
    text: str,
    workdir: Path,
    start: Frame,
    every: int,
    step_wall: float,
) -> list[tuple[int, Frame, DFTResult]]:
    """Read the frames an NVT run wrote every ``every`` steps, each labelled by its own evaluation.

    Positions, energies and forces come from ``<PROJECT>-pos-1.xyz`` and ``-frc-1.xyz``, the SCF
    status and stress of step k from ``text`` (``cp2k.out``) just before "MD| Step number k".  Frames CP2K
    wrote but did not finish (a crash mid-step) are left out, so a run cut short still gives
    every step it completed.  ``step_wall`` is each label's share of the run's wall time, s.
    """
    from ilflows.dft import finish_label

    workdir = Path(workdir)
    pos, frc = workdir / f"{PROJECT}-pos-1.xyz", workdir / f"{PROJECT}-frc-1.xyz"
    if not (pos.exists() and frc.exists()):
        return []
    evaluations = re.split(r"MD\| Step number", text)[:-1]
    version = parse_cp2k_output(evaluations[0]).version if evaluations else None
    positions, forces = read_cp2k_xyz(pos), read_cp2k_xyz(frc)
    labelled = []
    for k in range(1, min(len(positions), len(forces))):  # frame 0 is the start
        step = k * every
        if step > len(evaluations):
            break
        out = parse_cp2k_output(evaluations[step - 1])
        frame = Frame(species=start.species, positions=positions[k][1].tolist(), cell=start.cell)
        energy, force = positions[k][0] * Hartree, forces[k][1] * Hartree / Bohr
        parsed = Cp2kOutput(out.scf_converged, energy, force, out.stress, version)
        error = None if out.scf_converged else f"SCF not converged at MD step {step}"
        label = finish_label(engine, {**parameters, "md_step": step}, frame, spec, step_wall, parsed, error)
        labelled.append((step, frame, label))
    return labelled

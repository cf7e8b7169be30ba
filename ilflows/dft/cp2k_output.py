"""Reading CP2K's text output (shared by the xTB and DFT engines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase.units import Bohr, Hartree


class Cp2kOutput(NamedTuple):
    """Values of the last force evaluation, converted to eV, eV/Å and GPa (None: not printed)."""

    scf_converged: bool
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None


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
    return Cp2kOutput(scf_converged, float(energies[-1]) * Hartree if energies else None, forces, stress)


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

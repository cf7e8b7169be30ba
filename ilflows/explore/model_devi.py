"""DeePMD's ``model_devi.out``, one format for every explorer: what LAMMPS writes, and ``dp model-devi``.

Columns: ``step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f`` and, from
``dp model-devi`` (and ilflows' ASE explorer), ``devi_e``; forces in eV/Å, virial and energy
per atom in eV.  LAMMPS' ``pair_style deepmd`` writes the first seven.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = (
    f"# {'step':>10s} {'max_devi_v':>19s} {'min_devi_v':>19s} {'avg_devi_v':>19s} "
    f"{'max_devi_f':>19s} {'min_devi_f':>19s} {'avg_devi_f':>19s} {'devi_e':>19s}\n"
)


@dataclass(frozen=True)
class ModelDevi:
    """The columns of a model_devi.out that selection uses."""

    steps: list[int]
    max_devi_f: list[float]  # eV/Å
    max_devi_v: list[float]  # eV/atom (NaN without a cell)
    devi_e: list[float] | None  # eV/atom; None when the file has no such column (LAMMPS)


def row(step: int, devi_v: tuple, devi_f: tuple, devi_e: float) -> str:
    """One line of the file, as ``dp model-devi`` writes it: (max, min, avg) of virial and force."""
    values = " ".join(f"{x:19.6e}" for x in (*devi_v, *devi_f, devi_e))
    return f"  {step:10d} {values}\n"


def read(path: Path) -> ModelDevi:
    """Read a model_devi.out of seven (LAMMPS) or eight columns; an absent file has no rows."""
    if not Path(path).exists():
        return ModelDevi([], [], [], None)
    table = np.loadtxt(path, comments="#", ndmin=2)
    if table.size == 0:
        return ModelDevi([], [], [], None)
    energy = table[:, 7].tolist() if table.shape[1] > 7 else None
    return ModelDevi(table[:, 0].astype(int).tolist(), table[:, 4].tolist(), table[:, 1].tolist(), energy)

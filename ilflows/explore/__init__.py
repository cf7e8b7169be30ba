"""Seam 3: explorers. Each engine runs MD with a model ensemble and records its deviation."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ilflows.registry import instantiate
from ilflows.schemas.campaign import DispersionSpec, ExploreSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import MDResult, ModelFile

# Thermostat and barostat relaxation times in time steps, the same for every explorer (LAMMPS's
# recommended 100 and 1000).
TDAMP_STEPS = 100
PDAMP_STEPS = 1000

# Imported on demand so that choosing one engine never imports another's stack.
EXPLORERS = {
    "lammps-deepmd": "ilflows.explore.lammps_deepmd:LammpsDeepmd",
    "ase": "ilflows.explore.ase_md:AseCommittee",
}


class Explorer(Protocol):
    """What the exploration job needs from an engine."""

    name: str

    def executables(self) -> list[tuple[str, str]]:
        """Return (command, settings field) pairs of the programs :meth:`explore` runs."""
        ...

    def explore(
        self,
        models: list[ModelFile],
        start: Frame,
        type_map: list[str],
        spec: ExploreSpec,
        seed: int,
        workdir: Path,
        dispersion: DispersionSpec | None = None,
        energy_deviation: bool = False,
    ) -> MDResult:
        """Run MD from ``start`` driven by ``models[0]``, recording the ensemble deviations.

        ``dispersion``: D3 added on top of the models (hybrid MLP + D3), for engines that can.
        ``energy_deviation``: the energy deviation per frame is needed (selection uses it).
        """
        ...


def get_explorer(name: str) -> Explorer:
    """Return an explorer instance by engine name.

    Raises
    ------
    ValueError
        When ``name`` is not a known explorer; the message lists the known ones.

    """
    return instantiate(EXPLORERS, name, "explorer")

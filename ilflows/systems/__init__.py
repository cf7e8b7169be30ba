"""Ionic-liquid systems: the ion library, Packmol boxes and the initial frames."""

from __future__ import annotations

from ilflows.schemas.campaign import SystemSpec
from ilflows.systems.ions import ION_LIBRARY, Ion, load_ion, molar_mass
from ilflows.systems.packing import (
    PackingError,
    box_edge,
    check_fits,
    initial_frames,
    pack_box,
    run_packmol,
    start_frames,
)

__all__ = [
    "ION_LIBRARY",
    "Ion",
    "PackingError",
    "box_edge",
    "check_fits",
    "check_system",
    "initial_frames",
    "load_ion",
    "molar_mass",
    "pack_box",
    "run_packmol",
    "start_frames",
]


def check_system(system: SystemSpec) -> None:
    """Raise a one-line :class:`ValueError` naming the field and fix if ``system`` is unbuildable.

    Checks that both ions are in the library, that the cation is positive and the anion
    negative, that a 1:1 box of them is electroneutral, and that the largest ion fits in a
    box of ``system.n_pairs`` pairs at ``system.density`` (see :func:`check_fits`).
    """
    known = ", ".join(sorted(ION_LIBRARY))
    for field in ("cation", "anion"):
        name = getattr(system, field)
        if name not in ION_LIBRARY:
            raise ValueError(f"system.{field}: unknown ion {name!r}; known: {known}")
    cation, anion = ION_LIBRARY[system.cation], ION_LIBRARY[system.anion]
    if cation.charge <= 0:
        raise ValueError(f"system.cation: {cation.name} has charge {cation.charge:+d}; pick a positive ion")
    if anion.charge >= 0:
        raise ValueError(f"system.anion: {anion.name} has charge {anion.charge:+d}; pick a negative ion")
    if cation.charge + anion.charge != 0:
        raise ValueError(
            f"system: {cation.name} ({cation.charge:+d}) and {anion.name} ({anion.charge:+d}) "
            "do not cancel, and n_pairs 1:1 ion pairs are electroneutral only if they do; "
            "pick a cation and an anion of opposite, equal charge"
        )
    check_fits(system, system.density)

"""Ionic-liquid systems: the ion library, Packmol boxes and the initial frames."""

from __future__ import annotations

from ilflows.schemas.inputs import SystemSpec
from ilflows.systems.compositions import (
    BMIM_BF4_EXPERIMENTAL_DENSITY,
    LIQUIDS,
    Liquid,
    litfsi_pyr14tfsi,
)
from ilflows.systems.ions import ION_LIBRARY, Ion, load_ion, molar_mass
from ilflows.systems.packing import (
    PackingError,
    box_edge,
    check_composition,
    check_fits,
    elements,
    initial_frames,
    md_boxes,
    pack_box,
    run_packmol,
    species,
    start_frames,
    system_of,
    topology,
    validation_frames,
)

__all__ = [
    "BMIM_BF4_EXPERIMENTAL_DENSITY",
    "ION_LIBRARY",
    "LIQUIDS",
    "Ion",
    "Liquid",
    "PackingError",
    "box_edge",
    "check_composition",
    "check_fits",
    "check_system",
    "elements",
    "initial_frames",
    "litfsi_pyr14tfsi",
    "load_ion",
    "md_boxes",
    "molar_mass",
    "pack_box",
    "run_packmol",
    "species",
    "start_frames",
    "system_of",
    "topology",
    "validation_frames",
]


def check_system(system: SystemSpec) -> None:
    """Raise a one-line :class:`ValueError` naming the field and fix if ``system`` is unbuildable.

    Checks that every ion of ``system.ions`` is in the library with a positive count, that the
    box is electroneutral (:func:`check_composition`), and that the largest ion fits in the box
    those ions make at ``system.density`` (:func:`check_fits`).
    """
    check_composition(system)
    check_fits(system, system.density)

"""Labelling engines: one frame in, one :class:`~ilflows.schemas.records.DFTResult` out."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Protocol

from ilflows.schemas.campaign import DFTSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult

# Imported only when asked for, so that listing engines never needs their dependencies.
ENGINES = {
    "cp2k-xtb": "ilflows.dft.cp2k_xtb:Cp2kXtb",
    "cp2k-dft": "ilflows.dft.cp2k_dft:Cp2kDft",
    "vasp": "ilflows.dft.vasp:Vasp",
}


class DFTEngine(Protocol):
    """What the loop needs from a labelling engine."""

    name: str

    def executables(self) -> list[tuple[str, str]]:
        """Return (command, settings field name) of every program the engine runs."""
        ...

    def label(self, frame: Frame, spec: DFTSpec, workdir: Path) -> DFTResult:
        """Label one frame in ``workdir``; failures come back as ``converged=False``."""
        ...


def get_engine(name: str) -> DFTEngine:
    """Return an instance of the engine called ``name``.

    Raises
    ------
    ValueError
        When no engine has that name; the message lists the known ones.

    """
    if name not in ENGINES:
        raise ValueError(f"unknown DFT engine '{name}'; known: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    return getattr(import_module(module), cls)()

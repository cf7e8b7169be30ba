"""Labelling engines: one frame in, one :class:`~ilflows.schemas.records.DFTResult` out."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, NamedTuple, Protocol

import numpy as np
from pydantic import Field

from ilflows.registry import Registry
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import DFTResult
from ilflows.schemas.section import EngineSection
from ilflows.software import software

# Imported only when asked for, so that listing engines never needs their dependencies.
ENGINES = Registry(
    "DFT engine",
    default="cp2k-xtb",
    table={
        "cp2k-xtb": "ilflows.dft.cp2k_xtb:Cp2kXtb",
        "cp2k-dft": "ilflows.dft.cp2k_dft:Cp2kDft",
        "vasp": "ilflows.dft.vasp:Vasp",
    },
)
# The engine of ``potential: xtb`` MD runs (initial and validation sets), whatever labels them.
XTB_MD = "cp2k-xtb"


class DFTSpec(EngineSection):
    """The ``dft:`` section: the labelling engine and its settings; each engine adds its own.

    A setting the chosen engine does not use is refused, so a spec never claims a setting its
    labels did not run with; a setting left unset takes the engine's default.
    """

    default_engine: ClassVar[str] = ENGINES.default
    runs_md: ClassVar[bool] = False
    """The engine also runs MD (``potential: dft`` runs of the initial and validation sets)."""

    engine: str = Field(description="DFT engine, a name of ilflows.dft.ENGINES.")
    max_scf: int | None = Field(
        None, gt=0, description="SCF iterations per (outer) SCF step; unset: the engine's own."
    )
    stress: bool = Field(
        True, description="Compute the analytical stress tensor (needed for virial training)."
    )


class DFTEngine(Protocol):
    """What the loop needs from a labelling engine."""

    name: str
    section: type[DFTSpec]

    def executables(self) -> list[tuple[str, str]]:
        """Return (command, settings field name) of every program the engine runs."""
        ...

    def label(self, frame: Frame, spec: DFTSpec, workdir: Path) -> DFTResult:
        """Label one frame in ``workdir``; failures come back as ``converged=False``."""
        ...


class MDRun(NamedTuple):
    """What a short NVT MD run with a labelling engine (xTB MD or AIMD) gave."""

    snapshots: list[tuple[int, Frame, DFTResult]]
    """(MD step, frame, the engine's label of it) every ``every`` steps, step 0 left out."""
    error: str | None
    """Why the run stopped before its last step (None: it finished); earlier snapshots are kept."""


class MDEngine(DFTEngine, Protocol):
    """A labelling engine that also runs MD, each written frame labelled by the run itself."""

    def run_md(
        self,
        frame: Frame,
        spec: DFTSpec,
        workdir: Path,
        *,
        n_steps: int,
        temperature: float,
        timestep: float,
        every: int,
        seed: int,
    ) -> MDRun:
        """Run NVT MD (K, fs) from ``frame``; raises only when the program is missing."""
        ...


def get_engine(name: str) -> DFTEngine:
    """Return an instance of the engine called ``name``.

    Raises
    ------
    ValueError
        When no engine has that name; the message lists the known ones.

    """
    return ENGINES.get(name)


def md_engine(dft: DFTSpec, potential: str) -> tuple[MDEngine, DFTSpec]:
    """Return the engine, and its settings, that run an initial or validation MD entry.

    ``potential: dft`` is AIMD with the campaign's engine; ``xtb`` is xTB MD, with the campaign's
    own settings when the campaign labels with xTB too.
    """
    if potential == "dft" or dft.engine == XTB_MD:
        return get_engine(dft.engine), dft
    return get_engine(XTB_MD), ENGINES.section({"engine": XTB_MD})


def finish_label(
    engine: str, parameters: dict, frame: Frame, spec: DFTSpec, wall: float, parsed, error: str | None
) -> DFTResult:
    """Build the label from an engine's parsed output, or the failed label with its reason.

    ``parsed`` has ``energy`` (eV), ``forces`` (eV/Å), ``stress`` (GPa) and the program's
    ``version`` (recorded under ``engine``'s program, the part before '-'); ``error`` is the
    engine's own reason to fail (SCF, abort, custodian), checked first.  Then a label needs an
    energy, one force per atom, and a stress when ``spec.stress`` asks for it.
    """
    if error is None:
        n = 0 if parsed.forces is None else len(parsed.forces)
        if parsed.energy is None:
            error = "no total energy in the output"
        elif n != frame.n_atoms:
            error = f"forces printed for {n} atoms, frame has {frame.n_atoms}"
        elif spec.stress and parsed.stress is None:
            error = "stress requested but not in the output"
    made_by = software(**{engine.split("-")[0]: parsed.version})
    if error is not None:
        return DFTResult(
            engine=engine,
            parameters=parameters,
            converged=False,
            error=error,
            wall_time=wall,
            software=made_by,
        )
    return DFTResult(
        engine=engine,
        parameters=parameters,
        software=made_by,
        converged=True,
        energy=parsed.energy,
        forces=np.asarray(parsed.forces).tolist(),
        stress=None if parsed.stress is None else np.asarray(parsed.stress).tolist(),
        wall_time=wall,
    )

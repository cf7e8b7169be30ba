"""Seam 3: explorers. Each engine runs MD with a model ensemble and records its deviation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from pydantic import Field, model_validator

from ilflows.registry import Registry
from ilflows.schemas.control import DispersionSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import MDResult, ModelFile
from ilflows.schemas.section import EngineSection, Section

# Thermostat and barostat relaxation times in time steps, the same for every explorer (LAMMPS's
# recommended 100 and 1000).
TDAMP_STEPS = 100
PDAMP_STEPS = 1000

# Imported on demand so that choosing one engine never imports another's stack.
EXPLORERS = Registry(
    "explorer",
    default="lammps-deepmd",
    table={
        "lammps-deepmd": "ilflows.explore.lammps_deepmd:LammpsDeepmd",
        "ase": "ilflows.explore.ase_md:AseCommittee",
    },
)
# What an exploration may drive or stop on besides its conditions; each explorer says which it runs.
MODIFIERS = ("temperature_ramp", "density_ramp", "stop_deviation")


class Ramp(Section):
    """A quantity driven during an exploration (the BMIM-BF4 paper's dynamics modifier, eq 9).

    ``Q(t) = start + t / t_end * (end - start) + amplitude * sin(t / period)``, with t the
    simulated time and t_end the whole run (``n_steps * timestep``).
    """

    start: float = Field(gt=0, description="Q at t = 0 (temperature K, density g/cm^3).")
    end: float = Field(gt=0, description="Q at the end of the run, same unit.")
    amplitude: float = Field(0.0, ge=0, description="Amplitude of the sine term, same unit.")
    period: float = Field(
        1000.0, gt=0, description="t_per of the sine term sin(t / t_per), fs (one cycle is 2 pi t_per)."
    )

    def at(self, t: float, t_end: float) -> float:
        """Q at simulated time ``t`` of a run of length ``t_end`` (both fs)."""
        return self.start + t / t_end * (self.end - self.start) + self.amplitude * math.sin(t / self.period)


# ExploreSpec fields a stage may set for itself
STAGE_CONDITIONS = (
    "ensemble",
    "temperature",
    "pressure",
    "n_steps",
    "timestep",
    "frame_every",
    "temperature_ramp",
    "density_ramp",
    "stop_deviation",
)


class StageSpec(Section):
    """One exploration stage: MD conditions run iteration after iteration until they converge.

    DP-GEN's ``model_devi_jobs`` entry (``ensemble``, ``temps``, ``press``, ``nsteps``,
    ``trj_freq``, ``sys_idx``) and DP-GEN2's ``explore.stages``.  A condition left unset takes
    the ``explore`` section's value.  A stage ends when its accurate ratio is met (over
    ``loop.converge_over`` iterations in a row), when no candidate is left, or after its
    ``max_iterations``; the next stage then explores with the models of the last iteration.
    Campaigns start cold and short, where a young committee is still sane, and move on to the
    hot, long runs once it is.
    """

    name: str | None = Field(None, description="Name in tables and the report; default 'stage k'.")
    ensemble: Literal["nvt", "npt"] | None = Field(
        None, description="Thermodynamic ensemble (DP-GEN ensemble)."
    )
    temperature: float | None = Field(None, gt=0, description="Temperature, K (DP-GEN temps).")
    pressure: float | None = Field(None, description="Pressure (NPT), bar (DP-GEN press).")
    n_steps: int | None = Field(None, gt=0, description="MD steps per exploration (DP-GEN nsteps).")
    timestep: float | None = Field(
        None, gt=0, description="Time step, fs (DP-GEN model_devi_dt, in ps there)."
    )
    frame_every: int | None = Field(
        None, gt=0, description="Steps between written frames and deviation records (DP-GEN trj_freq)."
    )
    temperature_ramp: Ramp | None = Field(None, description="As explore.temperature_ramp (ase, nvt).")
    density_ramp: Ramp | None = Field(None, description="As explore.density_ramp (ase, nvt).")
    stop_deviation: float | None = Field(None, gt=0, description="As explore.stop_deviation, eV/Å (ase).")
    systems: list[int] | None = Field(
        None,
        min_length=1,
        description="Compositions (indices into system, from 0) whose walkers run in this stage (DP-GEN "
        "sys_idx); default all.",
    )
    accurate_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="The stage converges at this accurate ratio (DP-GEN2 conv_accuracy); default "
        "loop.accurate_ratio.",
    )
    max_iterations: int = Field(3, ge=1, description="Most iterations of this stage (DP-GEN2 max_numb_iter).")
    start_from: Literal["boxes", "accurate"] = Field(
        "boxes",
        description="Where each walker starts: its start box every iteration, or 'accurate': the last "
        "accurate frame (guards passed) of its previous run, its box when it had none.",
    )

    def label(self, k: int) -> str:
        """Return the stage's name, or 'stage k'."""
        return self.name or f"stage {k}"


class ExploreSpec(EngineSection):
    """The ``explore:`` section: MD exploration with the ensemble; each explorer declares what it runs."""

    default_engine: ClassVar[str] = EXPLORERS.default
    modifiers: ClassVar[frozenset[str]] = frozenset()
    """Which of MODIFIERS the explorer runs."""
    drives: ClassVar[frozenset[str] | None] = None
    """The model families (trainer names) it can drive; None: any."""
    adds_dispersion: ClassVar[bool] = False
    """It adds D3 on top of the committee (hybrid MLP + D3 models)."""

    engine: str = Field(description="Explorer, a name of ilflows.explore.EXPLORERS.")
    ensemble: Literal["nvt", "npt"] = Field("nvt", description="Thermodynamic ensemble.")
    temperature: float = Field(450.0, gt=0, description="Temperature, K.")
    pressure: float = Field(1.0, description="Pressure (NPT), bar.")
    n_steps: int = Field(500, gt=0, description="MD steps per exploration.")
    timestep: float = Field(0.5, gt=0, description="Time step, fs.")
    frame_every: int = Field(25, gt=0, description="Steps between written frames and deviation records.")
    n_walkers: int = Field(
        2,
        ge=1,
        description="Independent MD runs per iteration and composition, started from packed boxes "
        "(with starts: one per file).",
    )
    starts: list[Path] = Field(
        default_factory=list,
        description="Structure files to start the walkers from instead of packed boxes, one walker "
        "per file (any periodic format ASE reads: POSCAR, extxyz, CIF; relative to the spec's folder); "
        "each must hold the molecules of one composition, in any atom order.",
    )
    temperature_ramp: Ramp | None = Field(
        None, description="Thermostat temperature over the run, K, in place of temperature (ase, nvt)."
    )
    density_ramp: Ramp | None = Field(
        None, description="Box density over the run, g/cm^3, the cell scaled each step (ase, nvt)."
    )
    stop_deviation: float | None = Field(
        None,
        gt=0,
        description="Stop a walker at the first recorded frame whose deviation reaches this, eV/Å "
        "(learning on the fly's stopping criterion; ase only).",
    )
    stages: list[StageSpec] = Field(
        default_factory=list,
        description="Exploration stages run one after the other, each until it converges (DP-GEN "
        "model_devi_jobs, DP-GEN2 explore.stages); empty: one stage with this section's conditions, "
        "loop.max_iterations and loop.accurate_ratio.",
    )

    def at_stage(self, stage: StageSpec) -> ExploreSpec:
        """Return a copy with ``stage``'s conditions in place of this section's (validated again)."""
        conditions = {key: getattr(stage, key) for key in STAGE_CONDITIONS if getattr(stage, key) is not None}
        return type(self).model_validate({**self.model_dump(exclude={"stages"}), **conditions})

    @model_validator(mode="after")
    def _walkers(self) -> ExploreSpec:
        if self.starts and "n_walkers" in self.model_fields_set and self.n_walkers != len(self.starts):
            raise ValueError(
                f"n_walkers: {self.n_walkers} but explore.starts lists {len(self.starts)} files; "
                "drop n_walkers (one walker per file)"
            )
        if self.starts:
            self.n_walkers = len(self.starts)
        return self

    @model_validator(mode="after")
    def _modifiers(self) -> ExploreSpec:
        if refused := [name for name in MODIFIERS if getattr(self, name) and name not in self.modifiers]:
            able = EXPLORERS.names_where(lambda section: refused[0] in section.modifiers)
            raise ValueError(
                f"{refused[0]} is run by the {' or '.join(able)} explorer only; set engine: {able[0]}"
            )
        ramps = [name for name in ("temperature_ramp", "density_ramp") if getattr(self, name)]
        if ramps and self.ensemble != "nvt":
            raise ValueError(
                f"{ramps[0]} drives an NVT run (Bussi thermostat, scaled cell); set ensemble: nvt"
            )
        return self


class Explorer(Protocol):
    """What the exploration job needs from an engine."""

    name: str
    section: type[ExploreSpec]

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
    return EXPLORERS.get(name)

"""The campaign spec: one YAML file validated here before anything is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # monty's MSONable protocol: Makers holding a section serialise it as data, not as its repr
    def as_dict(self) -> dict:
        """Serialise for jobflow/FireWorks."""
        return {"@module": type(self).__module__, "@class": type(self).__name__, **self.model_dump()}

    @classmethod
    def from_dict(cls, d: dict):
        """Rebuild from :meth:`as_dict`."""
        return cls.model_validate({k: v for k, v in d.items() if not k.startswith("@")})


class SystemSpec(_Section):
    """What liquid to simulate."""

    cation: str = Field(description="Cation name in the ion library, e.g. 'PYR14'.")
    anion: str = Field(description="Anion name in the ion library, e.g. 'BF4'.")
    n_pairs: int = Field(gt=0, description="Ion pairs per box.")
    density: float = Field(gt=0, description="Reference density of the boxes, g/cm^3.")
    tolerance: float = Field(2.0, gt=0, description="Packmol minimum distance between molecules, Å.")


class InitialSpec(_Section):
    """The initial (nEQ) training set: packed boxes over a density range plus rattled copies."""

    density_factors: list[float] = Field(
        [0.77, 1.0, 1.26],
        min_length=1,
        description="Packed density / reference density, one box set per factor.",
    )
    boxes_per_density: int = Field(2, ge=1, description="Independently packed boxes per density factor.")
    rattled_copies: int = Field(1, ge=0, description="Rattled copies of each packed box.")
    rattle_stdev: float = Field(
        0.05, ge=0, description="Gaussian displacement per atom of rattled copies, Å."
    )
    seed: int = Field(7, ge=0, description="Seed of packing and rattling (frame i uses seed + i).")


class DFTSpec(_Section):
    """Labelling engine."""

    engine: Literal["cp2k-xtb"] = Field("cp2k-xtb", description="DFT engine name.")
    max_scf: int = Field(50, gt=0, description="Inner SCF iterations per outer step.")
    eps_scf: float = Field(1e-6, gt=0, description="SCF convergence threshold, Hartree.")
    stress: bool = Field(
        True, description="Compute the analytical stress tensor (needed for virial training)."
    )


class TrainSpec(_Section):
    """Ensemble trainer."""

    engine: Literal["deepmd"] = Field("deepmd", description="Trainer name.")
    preset: Literal["tiny", "paper"] = Field(
        "tiny", description="Hyperparameter preset ('paper': paper 1's production set)."
    )
    n_models: int = Field(4, ge=2, description="Ensemble size; members differ only by seed.")
    seed: int = Field(1, description="Seed of member 0; member i uses seed + i.")
    overrides: dict = Field(
        default_factory=dict, description="Nested keys merged into the preset's trainer input."
    )


class ExploreSpec(_Section):
    """MD exploration with the ensemble."""

    engine: Literal["lammps-deepmd"] = Field("lammps-deepmd", description="Explorer name.")
    ensemble: Literal["nvt", "npt"] = Field("nvt", description="Thermodynamic ensemble.")
    temperature: float = Field(450.0, gt=0, description="Temperature, K.")
    pressure: float = Field(1.0, description="Pressure (NPT), bar.")
    n_steps: int = Field(500, gt=0, description="MD steps per exploration.")
    timestep: float = Field(0.5, gt=0, description="Time step, fs.")
    frame_every: int = Field(25, gt=0, description="Steps between written frames and deviation records.")
    n_walkers: int = Field(
        2, ge=1, description="Independent MD runs per iteration, started from packed boxes."
    )


class SelectSpec(_Section):
    """Trust window and candidate cap."""

    trust_lo: float = Field(
        0.05, ge=0, description="Frames below this max force deviation are accurate, eV/Å."
    )
    trust_hi: float = Field(1.5, gt=0, description="Frames at or above this deviation are failed, eV/Å.")
    max_candidates: int = Field(10, ge=1, description="Most frames sent to DFT per iteration.")

    @model_validator(mode="after")
    def _window(self) -> SelectSpec:
        if self.trust_lo >= self.trust_hi:
            raise ValueError(
                f"trust_lo ({self.trust_lo}) must be below trust_hi ({self.trust_hi}); swap or widen them"
            )
        return self


class LoopSpec(_Section):
    """Stopping rule."""

    max_iterations: int = Field(3, ge=1, description="Most training/exploration iterations.")
    accurate_ratio: float = Field(
        0.95, gt=0, le=1, description="Stop when this fraction of explored frames is accurate."
    )


class CampaignSpec(_Section):
    """A whole concurrent-learning campaign."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Campaign name (letters, digits, _ . -).")
    system: SystemSpec
    initial: InitialSpec = Field(default_factory=InitialSpec)
    dft: DFTSpec = Field(default_factory=DFTSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    explore: ExploreSpec = Field(default_factory=ExploreSpec)
    select: SelectSpec = Field(default_factory=SelectSpec)
    loop: LoopSpec = Field(default_factory=LoopSpec)


class SpecError(ValueError):
    """A campaign spec that cannot be run; the message is one line naming the field."""


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign spec, raising :class:`SpecError` with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a campaign spec is a YAML mapping with at least 'name' and 'system'")
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "spec"
        raise SpecError(f"{path}: {field}: {first['msg']}") from err
    from ilflows.systems import check_system

    try:
        check_system(spec.system)
    except ValueError as err:
        raise SpecError(f"{path}: {err}") from err
    return spec

"""Spec sections of what a campaign starts from: its liquids, initial and validation sets, imports."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ilflows.schemas.section import Section


class SystemSpec(Section):
    """What liquid to simulate: the ions of one box and its reference density.

    Names, electroneutrality, positive counts and whether Packmol can fill the box are checked
    by :func:`ilflows.systems.check_system`, first of the campaign spec's own checks.
    """

    ions: dict[str, int] = Field(
        min_length=1,
        description=(
            "Composition of one box: ion name in the ion library -> number of those ions "
            "(molecules) in the box, e.g. {PYR14: 8, Li: 2, TFSI: 10}; the total charge must be 0."
        ),
    )
    density: float = Field(gt=0, description="Reference density of the boxes, g/cm^3.")
    tolerance: float = Field(2.0, gt=0, description="Packmol minimum distance between molecules, Å.")
    reference_density_source: str | None = Field(
        None, description="Where the reference density comes from (paper, table, method, temperature)."
    )

    @field_validator("ions")
    @classmethod
    def _sorted(cls, ions: dict[str, int]) -> dict[str, int]:
        # the same composition written in another order is the same campaign
        return dict(sorted(ions.items()))


class ImportSpec(Section):
    """Labelled frames someone else computed, imported as training or validation data."""

    path: Path = Field(
        description="extxyz file or DeePMD system folder; relative to the spec file's folder. "
        "Workers read it, so on a cluster it must sit on a shared file system."
    )
    format: Literal["extxyz", "deepmd-npy"] = Field(description="File format.")
    stage: Literal["initial", "validation"] = Field(
        "initial", description="initial: trained on; validation: held out of training."
    )
    energy_unit: str = Field("eV", description="Energy unit of the file (eV, Hartree, kcal/mol, ...).")
    force_unit: str = Field("eV/Å", description="Force unit of the file (eV/Å, Hartree/bohr, ...).")
    level_of_theory: str = Field(
        description="Method of the labels, e.g. 'PBE-D3, 600 eV, VASP'; 'not stated'."
    )
    source: str = Field(
        description="Who computed the labels and where they come from (paper, repository, commit)."
    )


class MDFramesSpec(Section):
    """Frames from short NVT MD runs (CP2K) of freshly packed boxes, labelled by the run itself.

    Paper 1's protocol, each a list entry: EQ frames from MD near the exploration temperature
    (``potential: dft`` is its 100-frame AIMD); "barely relaxed" nEQ boxes from a very short
    run of boxes packed over a density range (its 2-frame AIMD); nEQ "distorted" molecules from
    hot runs with a large time step.  Frames are checked by the structure guards: a nEQ run is
    cut at its first flagged frame ("just short of decomposition"), an EQ run skips flagged ones.
    """

    potential: Literal["xtb", "dft"] = Field(
        "xtb",
        description="'xtb': CP2K GFN1-xTB MD, its frames relabelled by dft.engine unless that is xTB; "
        "'dft': AIMD with dft.engine itself (cp2k-xtb or cp2k-dft), its labels kept.",
    )
    density_factors: list[float] = Field(
        [1.0], min_length=1, description="Packed density / system.density of the boxes, one set per factor."
    )
    boxes: int = Field(1, ge=1, description="Boxes packed per density factor and run, one job each.")
    temperature: float = Field(450.0, gt=0, description="Thermostat (CSVR) temperature, K.")
    timestep: float = Field(0.5, gt=0, description="Time step, fs.")
    n_steps: int = Field(200, ge=1, description="MD steps per box.")
    every: int = Field(20, ge=1, description="Keep a frame every this many steps.")
    equilibrated: bool = Field(True, description="Record the frames as EQ (true) or as nEQ ones (false).")

    @property
    def n_boxes(self) -> int:
        """Boxes this entry packs and runs."""
        return self.boxes * len(self.density_factors)

    @model_validator(mode="after")
    def _frames(self) -> MDFramesSpec:
        if self.every > self.n_steps:
            raise ValueError(f"every ({self.every}) exceeds n_steps ({self.n_steps}): no frame is kept")
        return self


class InitialSpec(Section):
    """The initial (nEQ) training set: packed boxes over a density range plus rattled copies."""

    density_factors: list[float] = Field(
        [0.77, 1.0, 1.26],
        min_length=1,
        description="Packed density / reference density, one box set per factor.",
    )
    boxes_per_density: int = Field(
        2, ge=0, description="Independently packed boxes per density factor (0: MD frames and imports only)."
    )
    rattled_copies: int = Field(1, ge=0, description="Rattled copies of each packed box.")
    rattle_stdev: float = Field(
        0.05, ge=0, description="Gaussian displacement per atom of rattled copies, Å."
    )
    seed: int = Field(7, ge=0, description="Seed of packing and rattling (frame i uses seed + i).")
    imports: list[ImportSpec] = Field(
        default_factory=list, description="External labelled data sets added before iteration 0."
    )
    md: list[MDFramesSpec] = Field(
        default_factory=list, description="Short MD runs (xTB or AIMD) whose frames join the initial set."
    )

    @model_validator(mode="after")
    def _some_frames(self) -> InitialSpec:
        if not (self.boxes_per_density or self.md or self.imports):
            raise ValueError("boxes_per_density is 0 with no md runs or imports: nothing to train on")
        return self


class ValidationSpec(Section):
    """Labels never trained on: a validation set, and a held-out fraction of the campaign's own labels.

    The validation set: nEQ boxes packed apart from the training set, and frames of MD runs.
    """

    density_factors: list[float] = Field(
        [0.8, 1.0, 1.2], min_length=1, description="Packed density / reference density (paper 1: +-20 %)."
    )
    boxes_per_density: int = Field(
        0, ge=0, description="Boxes per density factor; 0: no validation set (paper 1: 200 nEQ in all)."
    )
    seed: int = Field(100_000, ge=0, description="Seed of the validation boxes (box i uses seed + i).")
    md: list[MDFramesSpec] = Field(
        default_factory=list, description="Short MD runs (xTB or AIMD) whose frames join the validation set."
    )
    holdout_fraction: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Fraction of the campaign's own labels (initial set, imports, explored frames) held "
        "out of training, chosen by frame id so that a frame stays on its side in every iteration; each "
        "iteration's committee is scored on them and on all its training labels.  0: none held out.",
    )

"""The campaign spec: one YAML file validated here before anything is queued."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NUMBERS = (int, float, int | None, float | None)  # field types a YAML yes/no must not fill


class _Section(BaseModel):
    # every number finite: a NaN temperature or an infinite rattle is a typo, never a request
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_yes_or_no(cls, data):
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and field.annotation in NUMBERS:
                    raise ValueError(f"{name}: {value} is a yes/no, not a number; give a number")
        return data

    # monty's MSONable protocol: Makers holding a section serialise it as data, not as its repr
    def as_dict(self) -> dict:
        """Serialise for jobflow/FireWorks."""
        return {"@module": type(self).__module__, "@class": type(self).__name__, **self.model_dump()}

    @classmethod
    def from_dict(cls, d: dict):
        """Rebuild from :meth:`as_dict`."""
        return cls.model_validate({k: v for k, v in d.items() if not k.startswith("@")})


class SystemSpec(_Section):
    """What liquid to simulate: the ions of one box and its reference density.

    Names, electroneutrality, positive counts and whether Packmol can fill the box are checked
    by :func:`ilflows.systems.check_system` (run by :func:`load_spec`).
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


class ImportSpec(_Section):
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


class MDFramesSpec(_Section):
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


class InitialSpec(_Section):
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


class ValidationSpec(_Section):
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


class DFTSpec(_Section):
    """Labelling engine and its settings; a setting left unset takes the engine's default.

    Setting a field that the chosen engine does not use is refused, so a spec never claims a
    setting its labels did not run with.
    """

    engine: Literal["cp2k-xtb", "cp2k-dft", "vasp"] = Field(
        "cp2k-xtb",
        description="DFT engine: 'cp2k-xtb' (CP2K GFN1-xTB), 'cp2k-dft' (CP2K Quickstep GPW), "
        "'vasp' (VASP PAW; needs licensed POTCARs).",
    )
    max_scf: int | None = Field(
        None,
        gt=0,
        description="SCF iterations: CP2K inner iterations per outer step; VASP NELM.  Unset: the "
        "engine's own (cp2k-xtb 10, cp2k-dft 50, vasp 50).",
    )
    eps_scf: float = Field(1e-6, gt=0, description="CP2K SCF convergence threshold, Hartree.")
    stress: bool = Field(
        True, description="Compute the analytical stress tensor (needed for virial training)."
    )
    functional: Literal["PBE", "SCAN", "B97-3c"] | None = Field(
        None,
        description="Exchange-correlation functional: cp2k-dft PBE (default) or B97-3c; "
        "vasp PBE (default) or SCAN.",
    )
    dispersion: Literal["D3", "D3(BJ)", "none"] | None = Field(
        None,
        description="Grimme D3 correction, zero ('D3') or Becke-Johnson ('D3(BJ)') damping; "
        "default D3(BJ) for cp2k-dft, D3 for vasp (paper 1). B97-3c always uses its D3(BJ).",
    )
    dispersion_cutoff: float | None = Field(
        None,
        gt=0,
        description="cp2k-dft D3 R_CUTOFF, Å; CP2K sums pairs to twice this (default: CP2K's 20 bohr; "
        "8 for B97-3c, the BMIM-BF4 paper's input).",
    )
    basis: str | None = Field(
        None,
        description="cp2k-dft Gaussian basis set name from BASIS_MOLOPT or GTH_BASIS_SETS "
        "(default DZVP-MOLOPT-SR-GTH; TZVP-GTH for B97-3c).",
    )
    pseudopotential: str | None = Field(
        None, description="cp2k-dft GTH pseudopotential family from GTH_POTENTIALS (default GTH-PBE)."
    )
    cutoff: float | None = Field(
        None, gt=0, description="cp2k-dft density grid cutoff, Ry (default 400; 800 for B97-3c)."
    )
    rel_cutoff: float = Field(
        50.0, gt=0, description="cp2k-dft cutoff that maps Gaussians onto grid levels, Ry."
    )
    encut: float = Field(450.0, gt=0, description="vasp plane-wave cutoff ENCUT, eV.")
    ediff: float = Field(1e-6, gt=0, description="vasp electronic convergence EDIFF, eV.")
    sigma: float = Field(0.05, gt=0, description="vasp Gaussian smearing width SIGMA (ISMEAR 0), eV.")
    max_errors: int = Field(
        3,
        ge=1,
        description="cp2k-dft and vasp: errors custodian may detect and correct (e.g. by another "
        "SCF solver) before a label fails; the engine runs at most this many times.",
    )

    @model_validator(mode="after")
    def _engine_settings(self) -> DFTSpec:
        users = {
            "functional": ("cp2k-dft", "vasp"),
            "dispersion": ("cp2k-dft", "vasp"),
            "dispersion_cutoff": ("cp2k-dft",),
            "basis": ("cp2k-dft",),
            "pseudopotential": ("cp2k-dft",),
            "cutoff": ("cp2k-dft",),
            "rel_cutoff": ("cp2k-dft",),
            "encut": ("vasp",),
            "ediff": ("vasp",),
            "sigma": ("vasp",),
            "max_errors": ("cp2k-dft", "vasp"),
        }
        # Compared with the default rather than model_fields_set: a dumped and reloaded spec
        # carries every field.
        for name, engines in users.items():
            if self.engine not in engines and getattr(self, name) != type(self).model_fields[name].default:
                raise ValueError(f"{name} applies to engine {' or '.join(engines)}, not {self.engine}")
        functionals = {"cp2k-dft": ("PBE", "B97-3c"), "vasp": ("PBE", "SCAN")}
        if self.functional and self.functional not in functionals[self.engine]:
            raise ValueError(
                f"functional {self.functional} is not available with engine {self.engine}; "
                f"choose {' or '.join(functionals[self.engine])}"
            )
        if self.functional == "B97-3c" and self.dispersion not in (None, "D3(BJ)"):
            raise ValueError(
                f"dispersion {self.dispersion}: B97-3c includes its own D3(BJ) with C9 and "
                "short-range bond terms; leave dispersion unset"
            )
        return self


class TrainSpec(_Section):
    """One model family of the ensemble: a trainer and its members, which differ only by seed."""

    engine: Literal["deepmd", "mace"] = Field(
        "deepmd", description="Trainer name: 'deepmd' (DeePMD-kit se_e2_a) or 'mace' (MACE)."
    )
    preset: Literal["tiny", "small", "paper"] = Field(
        "tiny",
        description="Hyperparameter preset: 'tiny' (tests, a few steps), 'small' (mace: sized to learn a "
        "one-pair box on two cores), 'paper' (paper 1's production set).",
    )
    n_models: int = Field(4, ge=1, description="Members of this family; they differ only by seed.")
    seed: int = Field(1, description="Seed of member 0; member i uses seed + i.")
    overrides: dict = Field(
        default_factory=dict, description="Nested keys merged into the preset's trainer input."
    )
    finetune: bool = Field(
        False,
        description="From iteration 1 on, start each member from its own model of the previous "
        "iteration instead of from scratch (mace only).",
    )
    finetune_overrides: dict = Field(
        default_factory=dict,
        description="Trainer options merged on top when a member starts from its previous model, e.g. "
        "fewer epochs (DP-GEN's training_reuse_numb_steps, training_reuse_start_lr): training is most of "
        "an iteration's time and grows with the labels.",
    )

    @model_validator(mode="after")
    def _finetune(self) -> TrainSpec:
        if self.preset == "small" and self.engine != "mace":
            raise ValueError(f"preset small is for engine mace; {self.engine} has tiny and paper")
        if self.finetune_overrides and not self.finetune:
            raise ValueError(
                "finetune_overrides apply to fine-tuned members; set finetune: true or drop them"
            )
        if self.finetune and self.engine != "mace":
            raise ValueError(f"finetune is for engine mace, not {self.engine}; drop finetune")
        return self


class Ramp(_Section):
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


class StageSpec(_Section):
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


class ExploreSpec(_Section):
    """MD exploration with the ensemble."""

    engine: Literal["lammps-deepmd", "ase"] = Field(
        "lammps-deepmd",
        description="Explorer name: 'lammps-deepmd' (LAMMPS pair_style deepmd, DeePMD models) or "
        "'ase' (ASE MD with a committee of any families, MACE and DeePMD).",
    )
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
        return ExploreSpec.model_validate({**self.model_dump(exclude={"stages"}), **conditions})

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
        asked = [
            name for name in ("temperature_ramp", "density_ramp", "stop_deviation") if getattr(self, name)
        ]
        if asked and self.engine != "ase":
            raise ValueError(f"{asked[0]} is run by the ase explorer only; set engine: ase")
        ramps = [name for name in ("temperature_ramp", "density_ramp") if getattr(self, name)]
        if ramps and self.ensemble != "nvt":
            raise ValueError(
                f"{ramps[0]} drives an NVT run (Bussi thermostat, scaled cell); set ensemble: nvt"
            )
        return self


class DispersionSpec(_Section):
    """Hybrid models, MLP + D3 (the BMIM-BF4 paper): trained on labels less D3, D3 added in MD.

    D3 is Grimme's two-body term computed by torch-dftd (:mod:`ilflows.dispersion`); its
    three-body (C9) forces are wrong in periodic boxes in torch-dftd 0.5.3, and the paper's
    hybrids used the two-body term too.  The same D3 is subtracted from every training label and
    added on top of the committee in exploration, so model + D3 reproduces the labels and the
    MLP learns the rest, the long-range tail beyond ``cutoff`` included.
    """

    functional: str = Field(
        "b97-3c", description="torch-dftd's functional name of the D3 parameters, e.g. 'pbe', 'b97-3c'."
    )
    damping: Literal["bj", "zero"] = Field("bj", description="Damping: Becke-Johnson or zero.")
    cutoff: float = Field(
        8.0, gt=0, description="Pair cutoff of the D3 sum, Å (the BMIM-BF4 paper: 8 and 20)."
    )


class AdaptiveLoSpec(_Section):
    """DP-GEN's adaptive lower trust level: trust_lo is raised until only so many frames are candidates."""

    n_candidates: int = Field(
        10, ge=1, description="Candidates wanted per iteration at least (DP-GEN model_devi_numb_candi_f)."
    )
    percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Or this percent of the frames under trust_hi, if more (DP-GEN model_devi_perc_candi_f).",
    )


class SystemWindowSpec(_Section):
    """One composition's own trust window and cap (dpgen #453); unset values are the select section's."""

    system: int = Field(ge=0, description="Index of the composition in system (from 0).")
    trust_lo: float | None = Field(None, ge=0, description="Its lower trust level, eV/Å.")
    trust_hi: float | None = Field(None, gt=0, description="Its upper trust level, eV/Å.")
    max_candidates: int | None = Field(
        None, ge=1, description="Most of its frames sent to DFT per iteration."
    )


class SelectSpec(_Section):
    """Trust window and candidate cap."""

    trust_lo: float = Field(
        0.05, ge=0, description="Frames below this max force deviation are accurate, eV/Å."
    )
    trust_hi: float = Field(1.5, gt=0, description="Frames at or above this deviation are failed, eV/Å.")
    max_candidates: int = Field(10, ge=1, description="Most frames sent to DFT per iteration.")
    choose: Literal["spread", "farthest", "random"] = Field(
        "spread",
        description="How the candidates to label are picked when there are more than max_candidates: "
        "'spread', at evenly spaced ranks of deviation (both ends included); 'farthest', farthest-point "
        "sampling of a structural descriptor (per element pair distance distributions), away from each "
        "other and from the frames labelled before; 'random', uniformly (DP-GEN's pick up to fp_task_max).",
    )
    seed: int = Field(0, ge=0, description="Seed of choose: random (with the iteration).")
    energy_window: tuple[float, float] | None = Field(
        None,
        description="[lo, hi] of the energy-per-atom deviation, eV/atom (DP-GEN model_devi_e_trust_lo/hi): "
        "with it, a frame is accurate only when every criterion is below its lo and failed when any "
        "reaches its hi.  None: forces alone.",
    )
    virial_window: tuple[float, float] | None = Field(
        None,
        description="[lo, hi] of the max virial deviation per atom, eV/atom (DP-GEN "
        "model_devi_v_trust_lo/hi), combined as energy_window.  None: not used.",
    )
    systems: list[SystemWindowSpec] = Field(
        default_factory=list,
        description="Compositions with a window of their own (a multi-composition campaign whose liquids "
        "the committee resolves differently); the others use this section's.",
    )

    def window(self, system: int) -> tuple[float, float, int]:
        """Return (trust_lo, trust_hi, max_candidates) of composition ``system``."""
        own = next((w for w in self.systems if w.system == system), None)
        lo, hi, n = self.trust_lo, self.trust_hi, self.max_candidates
        if own is None:
            return lo, hi, n
        pick = lambda mine, default: default if mine is None else mine  # noqa: E731
        return pick(own.trust_lo, lo), pick(own.trust_hi, hi), pick(own.max_candidates, n)

    adaptive_lo: AdaptiveLoSpec | None = Field(
        None,
        description="Raise trust_lo each iteration so that only the frames of highest deviation under "
        "trust_hi are candidates, trust_lo being the floor (DP-GEN model_devi_adapt_trust_lo); the level "
        "used is in the iteration record.  None: the fixed window.",
    )

    @model_validator(mode="after")
    def _window(self) -> SelectSpec:
        if self.trust_lo >= self.trust_hi:
            raise ValueError(
                f"trust_lo ({self.trust_lo}) must be below trust_hi ({self.trust_hi}); swap or widen them"
            )
        for name in ("energy_window", "virial_window"):
            window = getattr(self, name)
            if window is not None and not 0 <= window[0] < window[1]:
                raise ValueError(f"{name}: {list(window)} must be [lo, hi] with 0 <= lo < hi")
        seen = set()
        for k, own in enumerate(self.systems):
            lo, hi, _ = self.window(own.system)
            if lo >= hi:
                raise ValueError(
                    f"systems.{k}: trust_lo ({lo}) must be below trust_hi ({hi}); swap or widen them"
                )
            if own.system in seen:
                raise ValueError(
                    f"systems.{k}.system: composition {own.system} has a window already; merge them"
                )
            seen.add(own.system)
        return self


class GuardSpec(_Section):
    """Structure guards run on candidate frames before they are labelled (ilflows.systems.guards).

    A flagged frame (broken, compressed or fused molecules, collapse, vacuum, density far off) is left out of
    labelling and counted in the iteration record.
    """

    enabled: bool = Field(True, description="Check candidate frames and leave out flagged ones.")
    max_stretch: float = Field(
        1.5, gt=1, description="A template bond longer than this multiple of its length is broken."
    )
    min_squeeze: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="A template bond shorter than this multiple of its length is compressed (its DFT forces "
        "would wreck a fit).",
    )
    fuse_factor: float = Field(
        1.1,
        gt=0,
        description="Atoms of two molecules closer than this multiple of their covalent radii sum are fused.",
    )
    min_distance: float = Field(0.6, gt=0, description="Any two atoms closer than this are collapsed, Å.")
    max_void: float | None = Field(
        6.5,
        gt=0,
        description="A point farther than this from every atom is vacuum, Å; null turns the check off "
        "(gas-like demo boxes).",
    )
    density_range: tuple[float, float] = Field(
        (0.5, 2.0), description="Allowed box density as multiples of system.density."
    )
    label_outlier_k: float | None = Field(
        10.0,
        gt=0,
        description="An explored label whose energy per atom or largest force lies more than this many "
        "median absolute deviations from the median of its composition's labels is held back from "
        "training and listed (10 MAD: about 7 standard deviations; never closer than 0.1 eV/atom or "
        "10 eV/Å, thermal spread); null trains on every converged label.",
    )


class WorkersSpec(_Section):
    """FireWorks category of each kind of job: a worker runs only jobs of its own category.

    A worker started with a category (``ilflows worker --category cpu``, or ``category:`` in an
    fworker file) takes only those jobs; ``ilflows run`` and a worker without one take any.
    null: no category, any worker may run the job.
    """

    dft: str | None = Field("cpu", description="DFT labels and initial MD runs (CP2K, VASP).")
    train: str | None = Field("gpu", description="Model training (DeePMD, MACE).")
    explore: str | None = Field("gpu", description="MD explorations with the committee.")
    other: str | None = Field(
        "cpu", description="Short bookkeeping jobs: initial set, selection, imported and MD labels."
    )


class TimeLimitsSpec(_Section):
    """Most wall time of one engine run, per kind of job, s; null: no limit.

    A program past its limit is killed with every process it started (SIGTERM, then SIGKILL 10 s
    later): a hung SCF, an MPI deadlock or a dead file system never holds a worker for ever.
    A DFT label that timed out is a failed label (left out of training; the campaign goes on);
    a training or exploration that timed out fails its job, which ``ilflows status`` names.
    """

    label: float | None = Field(None, gt=0, description="One DFT label (CP2K, VASP), s.")
    md: float | None = Field(None, gt=0, description="One initial or validation MD run (xTB, AIMD), s.")
    train: float | None = Field(None, gt=0, description="One member's training and freezing, s.")
    explore: float | None = Field(None, gt=0, description="One exploration MD run (LAMMPS, ASE), s.")


class ProductionSpec(_Section):
    """One production MD run with the final models, and the liquid properties computed from it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the run, e.g. 'npt-450K'.")
    ensemble: Literal["nvt", "npt"] = Field("npt", description="NPT for the density; NVT for diffusion.")
    temperature: float = Field(450.0, gt=0, description="Temperature, K.")
    pressure: float = Field(1.0, description="Pressure (NPT), bar.")
    n_steps: int = Field(100_000, gt=0, description="MD steps.")
    timestep: float = Field(0.5, gt=0, description="Time step, fs.")
    frame_every: int = Field(1000, gt=0, description="Steps between written frames.")
    system: int = Field(0, ge=0, description="Index of the composition in `system` to simulate.")
    molecule: str | None = Field(
        None,
        description="Run one ion of this name alone in a large box (paper 1's vacuum runs), not the liquid.",
    )
    vacuum_box: float = Field(30.0, gt=0, description="Edge of the cubic box of a single-ion run, Å.")
    model: int = Field(
        0, ge=0, description="Committee member that drives the MD; the others record the deviation."
    )
    seed: int = Field(0, ge=0, description="Seed of the packed box and of the MD velocities.")
    discard: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the frames at the start left out of every property (equilibration).",
    )
    density_blocks: int = Field(5, ge=2, description="Blocks of the density's confidence interval.")
    rdf_pairs: list[tuple[str, str]] = Field(
        default_factory=list, description="Element pairs of the RDFs, e.g. [[B, B], [B, N]]."
    )
    rdf_max: float = Field(8.0, gt=0, description="RDF range, Å (at most half the box).")
    diffusion_window: tuple[float, float] | None = Field(
        None, description="Lag-time window of the Einstein fit, ps (lo < hi); none: no diffusion."
    )
    li_cutoff: float = Field(6.0, gt=0, description="First shell of the Li-TFSI cluster count, Å (paper 1).")
    viscosity: float | None = Field(
        None,
        gt=0,
        description="Shear viscosity, Pa s, for the Yeh-Hummer finite-size correction of D (cubic box); "
        "none: no correction.",
    )

    @model_validator(mode="after")
    def _window(self) -> ProductionSpec:
        if self.diffusion_window and not 0 <= self.diffusion_window[0] < self.diffusion_window[1]:
            raise ValueError(
                f"diffusion_window: {list(self.diffusion_window)} must be [lo, hi] with 0 <= lo < hi, ps"
            )
        if self.diffusion_window and self.ensemble != "nvt":
            raise ValueError(
                "diffusion_window: diffusion is measured in NVT (a barostat perturbs it); set ensemble: nvt"
            )
        return self


class ObservablesSpec(_Section):
    """Stop when short runs driven by each committee member agree on density and diffusion.

    Every run of ``runs`` is repeated once per member (that member driving); the loop stops
    when, for every run, the members' densities (NPT) spread by at most ``density_tolerance``
    and each ion's diffusion coefficient (runs with a ``diffusion_window``) by at most
    ``diffusion_tolerance``, the spread being (max - min) / mean over the members.
    """

    runs: list[ProductionSpec] = Field(
        min_length=1, description="Short runs repeated with each member driving."
    )
    density_tolerance: float = Field(0.02, gt=0, description="Largest relative spread of the densities.")
    diffusion_tolerance: float = Field(0.3, gt=0, description="Largest relative spread of each ion's D.")


class LoopSpec(_Section):
    """Stopping rule."""

    max_iterations: int = Field(3, ge=1, description="Most training/exploration iterations.")
    accurate_ratio: float = Field(
        0.95, gt=0, le=1, description="Stop when this fraction of explored frames is accurate."
    )
    observables: ObservablesSpec | None = Field(
        None, description="Also stop when the members agree on liquid observables; none: accurate ratio only."
    )
    converge_over: int = Field(
        1,
        ge=1,
        description="Iterations in a row (of one stage) whose accurate ratio must meet the threshold before "
        "the stage, or the loop, counts as converged.",
    )
    production_unconverged: bool = Field(
        False,
        description="Run production also when the loop stopped without converging (iteration cap, no "
        "candidates, failed walkers); by default its models are not trusted for production.",
    )


class CampaignSpec(_Section):
    """A whole concurrent-learning campaign."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
        max_length=100,
        description="Campaign name (letters, digits, _ . -, not starting with a dot; at most 100): it names "
        "folders and files.",
    )
    system: list[SystemSpec] = Field(
        min_length=1,
        description="Compositions of the campaign (a mapping: one); every composition gets its own "
        "packed boxes, MD runs and walkers, and one committee learns them all (paper 1: 0-40 % LiTFSI).",
    )
    initial: InitialSpec = Field(default_factory=InitialSpec)
    dft: DFTSpec = Field(default_factory=DFTSpec)
    train: list[TrainSpec] = Field(
        default_factory=lambda: [TrainSpec()],
        min_length=1,
        description="Model families of the ensemble, each trained on the same labels (a mapping: one "
        "family); the committee of all their members explores and selects with one rule.",
    )
    explore: ExploreSpec = Field(default_factory=ExploreSpec)
    dispersion: DispersionSpec | None = Field(
        None, description="Hybrid MLP + D3 models; none: the models learn the labels as they are."
    )
    select: SelectSpec = Field(default_factory=SelectSpec)
    guards: GuardSpec = Field(default_factory=GuardSpec)
    loop: LoopSpec = Field(default_factory=LoopSpec)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    time_limits: TimeLimitsSpec = Field(default_factory=TimeLimitsSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    production: list[ProductionSpec] = Field(
        default_factory=list, description="Production runs with the final models once the loop stops."
    )

    @property
    def n_models(self) -> int:
        """Members of the committee, all families together."""
        return sum(family.n_models for family in self.train)

    @field_validator("train", "system", mode="before")
    @classmethod
    def _one_entry(cls, value):
        return value if isinstance(value, list | tuple) else [value]

    @model_validator(mode="after")
    def _committee(self) -> CampaignSpec:
        n_models = self.n_models
        if n_models < 2:
            raise ValueError(
                f"train: a committee needs at least 2 models in all, got {n_models}; raise train.n_models"
            )
        if self.dispersion and self.explore.engine != "ase":
            raise ValueError(
                "dispersion: D3 is added on top of the committee by the ase explorer; set explore.engine: ase"
            )
        engines = sorted({family.engine for family in self.train})
        if self.explore.engine == "lammps-deepmd" and engines != ["deepmd"]:
            raise ValueError(
                f"explore.engine: lammps-deepmd drives DeePMD models only, train has {', '.join(engines)}; "
                "use explore.engine: ase"
            )
        return self

    def stages(self) -> list[StageSpec]:
        """Return ``explore.stages``, or one stage of the explore section's conditions."""
        return self.explore.stages or [StageSpec(max_iterations=self.loop.max_iterations)]

    @model_validator(mode="after")
    def _stages(self) -> CampaignSpec:
        for k, stage in enumerate(self.explore.stages):
            try:
                self.explore.at_stage(stage)
            except ValidationError as err:
                raise ValueError(
                    f"explore.stages.{k}: {err.errors()[0]['msg'].removeprefix('Value error, ')}"
                ) from None
            if stage.systems and max(stage.systems) >= len(self.system):
                raise ValueError(
                    f"explore.stages.{k}.systems: {max(stage.systems)}, but the campaign has "
                    f"{len(self.system)} compositions (from 0)"
                )
        for k, own in enumerate(self.select.systems):
            if own.system >= len(self.system):
                raise ValueError(
                    f"select.systems.{k}.system: {own.system}, but the campaign has {len(self.system)} "
                    "compositions (from 0)"
                )
        return self

    @model_validator(mode="after")
    def _validation_apart(self) -> CampaignSpec:
        init, val = self.initial, self.validation
        per_system = len(init.density_factors) * init.boxes_per_density * (1 + init.rattled_copies)
        per_system += self.explore.n_walkers + sum(run.n_boxes for run in init.md)
        used = range(init.seed, init.seed + len(self.system) * per_system)
        per_system = len(val.density_factors) * val.boxes_per_density + sum(run.n_boxes for run in val.md)
        n_validation = len(self.system) * per_system
        if n_validation and val.seed < used.stop and used.start < val.seed + n_validation:
            raise ValueError(
                f"validation.seed {val.seed} reuses seeds of the training boxes "
                f"({used.start}-{used.stop - 1}); pick a seed of {used.stop} or more"
            )
        return self

    @model_validator(mode="after")
    def _production(self) -> CampaignSpec:
        from ilflows.systems.packing import elements, species  # here: packing imports this module

        n_models = self.n_models
        observed = self.loop.observables.runs if self.loop.observables else []
        entries = [(f"production.{k}", run) for k, run in enumerate(self.production)]
        entries += [(f"loop.observables.runs.{k}", run) for k, run in enumerate(observed)]
        for field, run in entries:
            if run.system >= len(self.system):
                raise ValueError(
                    f"{field}.system: {run.system}, but the campaign has {len(self.system)} (from 0)"
                )
            if run.model >= n_models:
                raise ValueError(
                    f"{field}.model: {run.model} but the committee has {n_models} members (from 0)"
                )
            if run.molecule is not None and run.molecule not in self.system[run.system].ions:
                ions = ", ".join(self.system[run.system].ions)
                raise ValueError(
                    f"{field}.molecule: {run.molecule!r} is not an ion of the composition ({ions})"
                )
            if run.molecule is not None and run.ensemble == "npt":
                raise ValueError(f"{field}.ensemble: a single ion in vacuum runs in nvt")
            known = set(elements(self.system[run.system]))
            atoms = [] if run.molecule else species(self.system[run.system])
            for pair in run.rdf_pairs:
                if not set(pair) <= known:
                    raise ValueError(
                        f"{field}.rdf_pairs: {list(pair)} names elements not in the composition "
                        f"({', '.join(sorted(known))})"
                    )
                if pair[0] == pair[1] and atoms.count(pair[0]) < 2:
                    raise ValueError(
                        f"{field}.rdf_pairs: {list(pair)} needs two {pair[0]} atoms, the box has "
                        f"{atoms.count(pair[0])}; add ion pairs or drop the pair"
                    )
        return self

    @model_validator(mode="after")
    def _aimd_engine(self) -> CampaignSpec:
        for stage in ("initial", "validation"):
            for k, run in enumerate(getattr(self, stage).md):
                if run.potential == "dft" and self.dft.engine == "vasp":
                    raise ValueError(
                        f"{stage}.md.{k}.potential: 'dft' runs AIMD with dft.engine, and ilflows has no "
                        "VASP AIMD; use potential: xtb (frames relabelled by VASP) or dft.engine: cp2k-dft"
                    )
        return self


LOCAL_KEY = "local"
# pydantic errors whose own message names no fix; the others say what the value should be
FIXES = {
    "extra_forbidden": "not a field of this section; remove it or correct its spelling",
    "missing": "required; add it",
}


class SpecError(ValueError):
    """A campaign spec that cannot be run; the message is one line naming the field."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_spec(path: str | Path, local: bool = False) -> CampaignSpec:
    """Read and validate a campaign spec, raising :class:`SpecError` with a one-line message.

    A spec may carry a ``local:`` mapping: the same campaign scaled down for one machine.  With
    ``local=True`` (``ilflows run --local``) each section named there replaces the spec's
    section of that name, and ``-local`` is appended to the campaign name; otherwise it is
    ignored.
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file; give the campaign's YAML spec") from None
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a campaign spec is a YAML mapping with at least 'name' and 'system'")
    overlay = raw.pop(LOCAL_KEY, None)
    if local:
        if not isinstance(overlay, dict):
            raise SpecError(
                f"{path}: {LOCAL_KEY}: --local needs a '{LOCAL_KEY}:' mapping of sections in the spec"
            )
        raw = {**raw, **overlay, "name": f"{raw.get('name')}-local"}
    for entry in (raw.get("initial") or {}).get("imports") or []:
        if isinstance(entry, dict) and "path" in entry:  # relative to the spec, absolute for workers
            entry["path"] = str((path.parent / str(entry["path"])).resolve())
    explore = raw.get("explore")
    if isinstance(explore, dict) and isinstance(explore.get("starts"), list):
        explore["starts"] = [str((path.parent / str(start)).resolve()) for start in explore["starts"]]
    try:
        spec = CampaignSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        if loc[1:2] == [0] and isinstance(raw.get(loc[0]), dict):
            del loc[1]  # one entry given as a mapping (train, system): name its field as written
        # a check across sections (no location) names its fields in its message
        where = ".".join(str(p) for p in loc)
        message = FIXES.get(first["type"], first["msg"].removeprefix("Value error, "))
        raise SpecError(f"{path}: {where}: {message}" if where else f"{path}: {message}") from err
    from ilflows.systems import check_system

    for k, system in enumerate(spec.system):
        try:
            check_system(system)
        except ValueError as err:
            message = str(err) if len(spec.system) == 1 else str(err).replace("system.", f"system.{k}.", 1)
            raise SpecError(f"{path}: {message}") from err
    return spec

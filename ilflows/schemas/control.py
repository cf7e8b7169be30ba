"""Spec sections that steer a campaign: selection, guards, stopping, production, workers, limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ilflows.schemas.section import Section


class DispersionSpec(Section):
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


class AdaptiveLoSpec(Section):
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


class SystemWindowSpec(Section):
    """One composition's own trust window and cap (dpgen #453); unset values are the select section's."""

    system: int = Field(ge=0, description="Index of the composition in system (from 0).")
    trust_lo: float | None = Field(None, ge=0, description="Its lower trust level, eV/Å.")
    trust_hi: float | None = Field(None, gt=0, description="Its upper trust level, eV/Å.")
    max_candidates: int | None = Field(
        None, ge=1, description="Most of its frames sent to DFT per iteration."
    )


class SelectSpec(Section):
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


class GuardSpec(Section):
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


class WorkersSpec(Section):
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


class TimeLimitsSpec(Section):
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


class ProductionSpec(Section):
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


class ObservablesSpec(Section):
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


class LoopSpec(Section):
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

"""Documents of the analysis jobs: a committee's errors on labels, and a liquid's properties.

Like :mod:`ilflows.schemas.records`, each carries ``kind``, ``campaign`` and ``iteration``; big
series sit in fields named in :data:`~ilflows.schemas.records.BIG_FIELDS`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorMetrics(BaseModel):
    """Errors of one model (or the ensemble mean) on one subset of one set of labels."""

    label_set: Literal["validation", "training", "held_out"] = Field(
        "validation",
        description="validation: the spec's validation set; training: every label the models trained on; "
        "held_out: the campaign's own labels held out of training (validation.holdout_fraction).",
    )
    model: str = Field(description="'m<k>' for committee member k, 'mean' for the ensemble mean.")
    subset: Literal["EQ", "nEQ", "all"] = Field(description="Equilibrated frames, non-equilibrated, or all.")
    n_frames: int = Field(description="Frames in the subset.")
    energy_rmse: float = Field(description="Root-mean-square error of the energy per atom, eV/atom.")
    energy_mae: float = Field(description="Mean absolute error of the energy per atom, eV/atom.")
    force_rmse: float = Field(description="Root-mean-square error over force components, eV/Å.")
    force_mae: float = Field(description="Mean absolute error over force components, eV/Å.")


class Calibration(BaseModel):
    """What the committee's deviation says about its true error, frame by frame (held-out labels)."""

    frame_ids: list[str] = Field(description="frame_id of each held-out frame.")
    deviation: list[float] = Field(description="Committee max force deviation of each frame, eV/Å.")
    error: list[float] = Field(
        description="True error of the ensemble mean: max over atoms of |F_mean - F_DFT|, eV/Å."
    )


class Parity(BaseModel):
    """Reference and predicted values of every validation frame, for parity plots (data store)."""

    frame_ids: list[str] = Field(description="frame_id of each validation frame.")
    equilibrated: list[bool] = Field(description="Whether each frame is EQ (relaxed) rather than nEQ.")
    n_atoms: list[int] = Field(description="Atoms of each frame.")
    models: list[str] = Field(description="Prediction rows: 'm<k>' per member, then 'mean'.")
    energy_ref: list[float] = Field(description="DFT energy per atom of each frame, eV/atom.")
    energy_pred: list[list[float]] = Field(
        description="Predicted energy per atom, (n_models + 1, n_frames), eV/atom."
    )
    force_ref: list[float] = Field(description="DFT force components of all frames, flattened, eV/Å.")
    force_pred: list[list[float]] = Field(
        description="Predicted force components, flattened like force_ref, one row per model, eV/Å."
    )


class Validation(BaseModel):
    """Errors of one iteration's committee on its training labels, held-out labels and validation set."""

    kind: Literal["validation"] = "validation"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Loop iteration whose models were scored.")
    members: list[int] = Field(description="Committee members scored (crashed trainings left out).")
    n_failed_labels: int = Field(description="Validation labels left out because their DFT failed.")
    metrics: list[ErrorMetrics] = Field(description="Per label set, model and subset (EQ, nEQ, all).")
    parity: Parity | None = Field(
        None,
        description="Per-frame reference and predictions on the validation set (data store); None: no set.",
    )
    held_out_parity: Parity | None = Field(
        None, description="The same on the held-out labels (data store); None: none held out yet."
    )
    calibration: Calibration | None = Field(
        None, description="Deviation against true force error on the held-out labels; None: none held out."
    )
    training_deviation: list[float] = Field(
        default_factory=list,
        description="Committee max force deviation on each of its own training frames, eV/Å: the "
        "smallest deviation it can resolve (a trust_lo below its median counts nothing as accurate).",
    )
    wall_time: float = Field(description="Wall time of the evaluation, s.")


class RDFCurve(BaseModel):
    """A radial distribution function."""

    pair: tuple[str, str] = Field(description="The two elements.")
    r: list[float] = Field(description="Bin centres, Å.")
    g: list[float] = Field(description="g(r), dimensionless.")


class DiffusionCoefficient(BaseModel):
    """Self-diffusion of one ion species from its centres of mass."""

    ion: str = Field(description="Ion name.")
    d: float = Field(description="Einstein-relation diffusion coefficient in the periodic box, m^2/s.")
    d_ci: float | None = Field(
        None,
        description="Half width of the 95 % interval of D from independent time blocks (Student-t), m^2/s; "
        "None when the run is shorter than two blocks of twice the window.",
    )
    n_blocks: int = Field(0, description="Time blocks behind d_ci.")
    log_slope: float | None = Field(
        None, description="d ln MSD / d ln t over the window: 1 diffusive, 2 ballistic, < 1 caged."
    )
    diffusive: bool = Field(
        True, description="Whether log_slope is within 0.8-1.2 (the window is diffusive)."
    )
    d_corrected: float | None = Field(
        None, description="With the Yeh-Hummer finite-size correction (given a viscosity), m^2/s."
    )
    window: tuple[float, float] = Field(description="Lag-time window of the fit, ps.")
    lags: list[float] = Field(description="Lag times of the MSD, ps.")
    msd: list[float] = Field(description="Mean squared displacement of the ion centres of mass, Å^2.")


class Properties(BaseModel):
    """Liquid (or single-ion) properties of one production run."""

    kind: Literal["properties"] = "properties"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Iteration whose models ran the production.")
    run: str = Field(description="Name of the production entry in the spec.")
    production_uuid: str = Field(description="uuid of the production job whose trajectory this analyses.")
    model_sha256: list[str] = Field(description="Models of the run, driving member first.")
    ensemble: str = Field(description="'nvt' or 'npt'.")
    temperature: float = Field(description="Thermostat temperature, K.")
    n_frames: int = Field(description="Frames analysed (after the discarded start).")
    time_span: float = Field(description="Time covered by the analysed frames, ps.")
    max_deviation: float | None = Field(None, description="Largest committee max force deviation, eV/Å.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes a number here doubtful: the committee beyond trust_hi, a ballistic diffusion "
        "window, density blocks shorter than the correlation time.",
    )
    density: float | None = Field(None, description="Mean mass density (NPT), g/cm^3.")
    density_correlation: float | None = Field(
        None, description="Integrated autocorrelation time of the density series, frames."
    )
    density_ci: float | None = Field(
        None, description="Half width of its 95 % block confidence interval, g/cm^3."
    )
    density_series: list[float] = Field(
        default_factory=list, description="Density of each analysed frame, g/cm^3."
    )
    diffusion: list[DiffusionCoefficient] = Field(default_factory=list, description="Per ion species.")
    rdfs: list[RDFCurve] = Field(default_factory=list, description="One per requested element pair.")
    li_clusters: dict[str, float] = Field(
        default_factory=dict,
        description="Fraction of Li with n distinct TFSI in the first shell, keyed by n.",
    )
    tfsi_conformers: dict[str, float] = Field(
        default_factory=dict, description="Fraction of TFSI in each class (Cis, aCis, Trans, aTrans)."
    )
    pyr14_butyl: dict[str, float] = Field(
        default_factory=dict,
        description="Fraction of PYR14 with an anti or gauche butyl tail (r2 cut at 6 Å).",
    )
    tfsi_angles: list[tuple[float, float]] = Field(
        default_factory=list, description="(phi, psi) of every TFSI in every analysed frame, degrees."
    )
    pyr14_distances: list[tuple[float, float]] = Field(
        default_factory=list, description="(r1, r2) of every PYR14 in every analysed frame, Å."
    )

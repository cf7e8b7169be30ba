"""Documents that jobs return and the JobStore keeps: labels, trainings, MD runs, selections.

Every document carries ``kind``, ``campaign`` and ``iteration`` so that queries and indexes
are the same on the embedded store and on MongoDB.  Big payloads (model files, trajectories)
sit in fields named in :data:`BIG_FIELDS`, which jobs send to the JobStore's ``data`` store.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ilflows.schemas.frames import Frame, FrameOrigin

BIG_FIELDS = [
    "model_file",
    "trajectory",
    "md_labels",
    "parity",
    "held_out_parity",
    "calibration",
    "training_deviation",
    "density_series",
    "tfsi_angles",
    "pyr14_distances",
    "label_ids",  # 10^4 frame ids in a paper-scale training record
    "learning_curve",  # 2,000 points for 2e6 DeePMD steps
]


class DFTResult(BaseModel):
    """What a DFT engine returns for one frame."""

    engine: str = Field(description="Engine name, e.g. 'cp2k-xtb'.")
    parameters: dict = Field(description="Every input parameter the engine used.")
    converged: bool = Field(description="True when the SCF converged and energy and forces were parsed.")
    error: str | None = Field(None, description="Why the label failed, when it did.")
    energy: float | None = Field(None, description="Total energy, eV.")
    forces: list[list[float]] | None = Field(None, description="Atomic forces, shape (n_atoms, 3), eV/Å.")
    stress: list[list[float]] | None = Field(
        None,
        description="Stress tensor, pressure sign (positive when compressed), shape (3, 3), GPa.",
    )
    wall_time: float = Field(description="Wall time of the engine run, s.")
    software: dict[str, str] = Field(
        default_factory=dict,
        description="Name -> version of the programs that made the label (ilflows, cp2k, vasp); empty for "
        "imported labels (their source says who made them).",
    )


class DFTLabel(DFTResult):
    """A labelled frame as stored: the engine result plus where the frame came from."""

    kind: Literal["dft_label"] = "dft_label"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Loop iteration that asked for the label (-1: initial set).")
    frame_id: str = Field(description="Identity of the labelled frame, see FrameOrigin.frame_id.")
    frame: Frame = Field(description="The labelled configuration.")
    origin: FrameOrigin = Field(description="How the frame was made.")
    frame_hash: str = Field(
        "", description="Frame.fingerprint() of the frame (filled in when empty): no frame is labelled twice."
    )
    formula: str = Field(
        "", description="Hill formula of the frame, e.g. 'C9H20BF4N' (filled in when empty)."
    )
    composition: dict[str, int] = Field(
        default_factory=dict, description="Element -> atoms of the frame (filled in when empty)."
    )

    @model_validator(mode="after")
    def _fingerprint(self) -> DFTLabel:
        from ase.formula import Formula

        if not self.frame_hash:
            self.frame_hash = self.frame.fingerprint()
        if not self.formula:
            self.formula = Formula.from_list(self.frame.species).format("hill")
        if not self.composition:
            self.composition = dict(Counter(self.frame.species))
        return self


class ModelFile(BaseModel):
    """A model file carried through the data store."""

    name: str = Field(description="File name, e.g. 'model.pb'.")
    sha256: str = Field(description="SHA-256 of the file content.")
    size: int = Field(description="File size, bytes.")
    content_b64: str = Field(description="File content, base64.")

    @classmethod
    def from_path(cls, path: Path) -> ModelFile:
        """Read a file into a document."""
        raw = Path(path).read_bytes()
        return cls(
            name=Path(path).name,
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            content_b64=base64.b64encode(raw).decode(),
        )

    def write(self, path: Path) -> Path:
        """Write the file, refusing content whose checksum does not match."""
        raw = base64.b64decode(self.content_b64)
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise ValueError(
                f"model file {self.name}: content does not match its sha256; it is corrupt, rerun the "
                "training job that made it"
            )
        Path(path).write_bytes(raw)
        return Path(path)


class LearningCurvePoint(BaseModel):
    """One point of a learning curve: a DeePMD lcurve line or a MACE epoch.

    A quantity the engine does not report is None: MACE gives no per-epoch training RMSE or
    learning rate, DeePMD no loss or validation errors.
    """

    step: int = Field(description="Training step (DeePMD: batch step; MACE: epoch, counted from 0).")
    rmse_energy: float | None = Field(None, description="Training-batch energy RMSE, eV/atom.")
    rmse_force: float | None = Field(None, description="Training-batch force RMSE, eV/Å.")
    learning_rate: float | None = Field(None, description="Learning rate at this step.")
    loss: float | None = Field(
        None,
        description="Training loss, mean over the epoch's batches: energy_weight x mean squared "
        "energy error per atom (eV^2/atom^2) + force_weight x mean squared force component "
        "error (eV^2/Å^2).",
    )
    valid_loss: float | None = Field(None, description="Validation loss, same terms and units as loss.")
    valid_rmse_energy: float | None = Field(None, description="Validation energy RMSE, eV/atom.")
    valid_rmse_force: float | None = Field(None, description="Validation force RMSE, eV/Å.")
    energy_weight: float | None = Field(
        None, description="Weight of the energy term of the loss at this step, atom^2/eV^2."
    )
    force_weight: float | None = Field(
        None, description="Weight of the force term of the loss at this step, Å^2/eV^2."
    )


class TrainResult(BaseModel):
    """What a trainer returns for one ensemble member."""

    engine: str = Field(description="Trainer name, e.g. 'deepmd'.")
    seed: int = Field(description="Random seed of this member.")
    type_map: list[str] = Field(description="Element of each model atom type, in order.")
    hyperparameters: dict = Field(description="Full trainer input.")
    learning_curve: list[LearningCurvePoint] = Field(description="Learning curve.")
    rmse_energy: float = Field(
        description="The trainer's own energy RMSE at its last step, eV/atom: DeePMD's last training batch, "
        "MACE's training set.  The scoring job's errors on every label (Validation) are the ones to trust."
    )
    rmse_force: float = Field(
        description="Trainer's force RMSE at its last step, eV/Å (DeePMD: last batch; see rmse_energy)."
    )
    valid_rmse_energy: float | None = Field(
        None, description="Final energy RMSE on held-out validation labels, eV/atom (None: none held out)."
    )
    valid_rmse_force: float | None = Field(
        None, description="Final force RMSE on held-out validation labels, eV/Å (None: none held out)."
    )
    stage_two_epoch: int | None = Field(
        None,
        description="First epoch (from 0) of the second loss stage (MACE stage two, formerly SWA: "
        "higher energy weight); None when the loss never switched.",
    )
    wall_time: float = Field(description="Wall time of training and freezing, s.")
    model_file: ModelFile = Field(description="Frozen model (data store).")
    software: dict[str, str] = Field(
        default_factory=dict, description="Name -> version of ilflows and the trainer's packages."
    )


class TrainingRun(TrainResult):
    """One trained ensemble member as stored."""

    kind: Literal["training"] = "training"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Loop iteration.")
    member: int = Field(description="Index of the model in its ensemble.")
    n_frames: int = Field(description="Number of labelled frames trained on.")
    n_failed_labels: int = Field(description="Labels given but left out because they failed.")
    n_held_out: int = Field(
        0, description="Converged labels held out of training (validation.holdout_fraction) to score it."
    )
    outliers: dict[str, str] = Field(
        default_factory=dict,
        description="Explored labels held back from training as outliers (guards.label_outlier_k): "
        "frame id -> why.",
    )
    label_ids: list[str] = Field(description="frame_id of every label trained on.")
    dispersion: dict | None = Field(
        None, description="D3 settings removed from the labels before training (hybrid MLP + D3); None: none."
    )


class Trajectory(BaseModel):
    """Frames of one MD run (data store)."""

    species: list[str] = Field(description="Chemical symbol of each atom.")
    steps: list[int] = Field(description="MD step of each frame.")
    positions: list[list[list[float]]] = Field(description="Positions, shape (n_frames, n_atoms, 3), Å.")
    cells: list[list[list[float]]] = Field(description="Cells, shape (n_frames, 3, 3), Å.")

    def frame(self, index: int) -> Frame:
        """Return one frame."""
        return Frame(species=self.species, positions=self.positions[index], cell=self.cells[index])


class MDResult(BaseModel):
    """What an explorer returns for one MD run with the ensemble."""

    engine: str = Field(description="Explorer name, e.g. 'lammps-deepmd'.")
    ensemble: str = Field(description="'nvt' or 'npt'.")
    temperature: float = Field(description="Thermostat temperature, K.")
    pressure: float | None = Field(None, description="Barostat pressure (NPT), bar.")
    n_steps: int = Field(description="MD steps run.")
    timestep: float = Field(description="Time step, fs.")
    frame_every: int = Field(description="Steps between written frames.")
    parameters: dict = Field(description="Every input parameter of the MD run.")
    deviations: list[float] = Field(description="Ensemble max force deviation per frame, eV/Å.")
    energy_deviations: list[float] | None = Field(
        None,
        description="Ensemble deviation of the energy per atom per frame (DeePMD's devi_e: standard "
        "deviation over members of E/N), eV/atom; None: not computed (LAMMPS without an energy criterion).",
    )
    virial_deviations: list[float] | None = Field(
        None,
        description="Ensemble max virial deviation per frame (DeePMD's max_devi_v: the largest standard "
        "deviation over members of a virial component / N), eV/atom; None without a periodic cell.",
    )
    stopped_at: int | None = Field(
        None,
        description="MD step at which the deviation reached explore.stop_deviation (None: ran to the end).",
    )
    wall_time: float = Field(description="Wall time of the MD run, s.")
    trajectory: Trajectory = Field(description="Written frames (data store).")
    software: dict[str, str] = Field(
        default_factory=dict, description="Name -> version of ilflows and the explorer's packages."
    )

    @classmethod
    def of_run(cls, engine: str, spec, parameters: dict, trajectory: Trajectory, **results) -> MDResult:
        """Return the record of a run of ``spec`` (an ExploreSpec): its settings, and ``results``.

        ``results``: ``deviations`` (and energy and virial deviations where known), ``wall_time``
        and, for a walker that stopped, ``stopped_at``.
        """
        return cls(
            engine=engine,
            ensemble=spec.ensemble,
            temperature=spec.temperature,
            pressure=spec.pressure if spec.ensemble == "npt" else None,
            n_steps=spec.n_steps,
            timestep=spec.timestep,
            frame_every=spec.frame_every,
            parameters=parameters,
            trajectory=trajectory,
            **results,
        )


class Exploration(MDResult):
    """One MD exploration as stored."""

    kind: Literal["exploration"] = "exploration"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Loop iteration.")
    walker: int = Field(description="Index of this MD run in its iteration.")
    start_frame_id: str = Field(description="frame_id of the starting configuration.")


class MDFrames(BaseModel):
    """One short MD run (xTB or AIMD) of the initial or validation set and the frames it gave."""

    kind: Literal["md_frames"] = "md_frames"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(-1, description="Always -1: before the loop.")
    box_frame_id: str = Field(description="frame_id of the packed box the run started from.")
    engine: str = Field(description="Engine that ran the MD and labelled its frames, e.g. 'cp2k-xtb'.")
    equilibrated: bool = Field(description="True: EQ frames; False: nEQ frames.")
    trajectory: Trajectory = Field(description="Written frames (data store).")
    md_labels: list[DFTResult] = Field(description="The run's own label of each written frame (data store).")
    kept: list[str] = Field(description="frame_id of each frame sent on to labelling.")
    flagged: dict[str, list[str]] = Field(
        description="frame_id -> what the guards found, for frames left out."
    )
    error: str | None = Field(None, description="Why the run stopped early (None: it finished).")
    wall_time: float = Field(description="Wall time of the MD run, s.")


class InitialSet(BaseModel):
    """The frames built before the loop: labelled set and MD starting boxes."""

    kind: Literal["initial_set"] = "initial_set"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(-1, description="Always -1: before the loop.")
    frame_ids: list[str] = Field(description="frame_id of each frame sent to DFT.")
    start_frame_ids: list[str] = Field(description="frame_id of each MD starting box.")
    type_map: list[str] = Field(description="Element of each model atom type, in order.")
    import_reports: list[str] = Field(
        description="Report of each imported data set: units, level of theory, oddities found."
    )
    spec: dict = Field(default_factory=dict, description="The campaign spec as run (CampaignSpec, JSON).")
    wall_time: float = Field(description="Time to build the frames, s.")


class SelectedFrame(BaseModel):
    """A candidate chosen for labelling."""

    walker: int = Field(description="Exploration index in its iteration.")
    frame_index: int = Field(description="Frame index in that exploration.")
    deviation: float = Field(description="Ensemble max force deviation, eV/Å.")


class FlaggedFrame(BaseModel):
    """A candidate left out by the structure guards."""

    walker: int = Field(description="Exploration index in its iteration.")
    frame_index: int = Field(description="Frame index in that exploration.")
    deviation: float = Field(description="Ensemble max force deviation, eV/Å.")
    reasons: list[str] = Field(description="What the guards found, one line each.")


class SelectionRecord(BaseModel):
    """The outcome of one iteration: deviation statistics, chosen candidates, convergence."""

    kind: Literal["selection"] = "selection"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Loop iteration.")
    trust_lo: float = Field(
        description="Lower edge of the trust window used (adapted or not; the first composition's), eV/Å."
    )
    trust_hi: float = Field(description="Upper edge of the trust window, eV/Å.")
    windows: dict[int, tuple[float, float]] = Field(
        default_factory=dict,
        description="Multi-composition campaigns: (trust_lo used, trust_hi) of each composition explored, "
        "eV/Å.",
    )
    n_frames: int = Field(description="Frames explored.")
    n_accurate: int = Field(description="Frames with deviation < trust_lo.")
    n_candidate: int = Field(description="Frames with trust_lo <= deviation < trust_hi.")
    n_failed: int = Field(description="Frames with deviation >= trust_hi.")
    accurate_ratio: float = Field(description="n_accurate / n_frames.")
    n_repeated: int = Field(
        0, description="Candidates left out because the campaign had labelled the same frame already."
    )
    n_flagged: int = Field(description="Candidates left out by the structure guards.")
    flagged: list[FlaggedFrame] = Field(description="Those candidates and why.")
    selected: list[SelectedFrame] = Field(description="Candidates sent to DFT.")
    n_labels: int = Field(description="Converged labels the ensemble of this iteration trained on.")
    n_held_out: int = Field(0, description="Converged labels held out of its training to score it.")
    n_failed_labels: int = Field(description="Labels that failed and were left out of training.")
    converged: bool = Field(
        description="True when the campaign stops here because its last stage converged (accurate ratio, "
        "or members agreeing on observables)."
    )
    stop_reason: str | None = Field(None, description="Why the loop stops here, if it does.")
    stage: int = Field(0, description="Exploration stage of this iteration (explore.stages, from 0).")
    stage_name: str = Field("stage 0", description="Its name.")
    conditions: str = Field("", description="Its MD conditions in words: ensemble, temperature, steps.")
    stage_converged: bool = Field(False, description="The stage's accurate ratio was met (or members agree).")
    next_stage: int | None = Field(None, description="Stage of the next iteration; None: the loop stops.")
    observables: dict[str, float] = Field(
        default_factory=dict,
        description="Relative spread (max - min) / mean over the members of each observable of the short "
        "runs (loop.observables), e.g. 'npt density'; empty without them or when a run failed.",
    )
    deviation_median: float | None = Field(
        None, description="Median max force deviation of the explored frames, eV/Å; None: no frames."
    )
    deviation_floor: float | None = Field(
        None,
        description="Median committee max force deviation on its own training frames, eV/Å: about the "
        "smallest deviation it resolves; None when not scored.",
    )
    notes: list[str] = Field(default_factory=list, description="Warnings about this iteration, in words.")


class Production(MDResult):
    """One production MD run with a campaign's final models, as stored."""

    kind: Literal["production"] = "production"
    campaign: str = Field(description="Campaign name.")
    iteration: int = Field(description="Iteration whose trained models ran it.")
    run: str = Field(description="Name of the production entry in the spec.")
    members: list[int] = Field(description="Committee members used, the driving one first.")
    model_sha256: list[str] = Field(
        description="SHA-256 of each member's model file, in ``members`` order: the link to its training "
        "record and hence to the labels it learned."
    )


# Queued jobs name their output schema by module (``output_schema: ilflows.schemas.records.X``):
# those of campaigns queued before the analysis records moved to results.py still find them here.
from ilflows.schemas.results import (  # noqa: E402, F401
    Calibration,
    DiffusionCoefficient,
    ErrorMetrics,
    Parity,
    Properties,
    RDFCurve,
    Validation,
)

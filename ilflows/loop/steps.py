"""One jobflow Maker per seam: label a frame, train one member, explore with the ensemble.

Each Maker picks its engine by name through the seam's lazy factory and runs it in the job's
launch folder (FireWorks' launch_dir), then wraps the engine result into the stored document.
Big fields (``model_file``, ``trajectory``) go to the JobStore's ``data`` store.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from jobflow import JobConfig, Maker, job

from ilflows.dft import ENGINES, DFTSpec
from ilflows.execute import time_limit
from ilflows.explore import EXPLORERS, ExploreSpec
from ilflows.schemas import (
    BIG_FIELDS,
    DFTLabel,
    Exploration,
    Frame,
    FrameOrigin,
    ModelFile,
    TrainingRun,
    Trajectory,
    Validation,
)
from ilflows.schemas.control import DispersionSpec
from ilflows.select.labels import training_split
from ilflows.train import TRAINERS, TrainSpec


def ilflows_job(output_schema: type):
    """Make a function a job that runs an engine: its output document is ``output_schema``.

    Its big fields go to the JobStore's ``data`` store, it may read the JobStore (older labels,
    explored frames), and it runs once (:func:`stored_or_run`).
    """

    def decorate(function):
        once = stored_or_run(function)
        return job(once, data=BIG_FIELDS, output_schema=output_schema, config=JobConfig(expose_store=True))

    return decorate


def stored_or_run(function):
    """Wrap a job's function: when the JobStore already holds this job's output, return it unrun.

    A job's output is stored before the queue records the job as done, so a worker killed in
    between, a lost queue rebuilt from the spec (job uuids come from the campaign and the job's
    name) or a job queued again never runs its engine twice: it returns what its first run stored.
    """

    @functools.wraps(function)
    def run(*args, **kwargs):
        from jobflow import CURRENT_JOB

        current = CURRENT_JOB.job
        if current is not None and CURRENT_JOB.store is not None:
            criteria = {"uuid": current.uuid, "index": current.index}
            doc = CURRENT_JOB.store.query_one(criteria=criteria, properties=["output"], load=True)
            if doc is not None and doc.get("output") is not None:
                return doc["output"]
        return function(*args, **kwargs)

    return run


def _workdir(name: str) -> Path:
    """Make a fresh folder for one engine run inside the job's launch folder."""
    path = Path.cwd() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class LabelMaker(Maker):
    """Label one frame with the campaign's DFT engine.

    A label that fails (SCF not converged, engine crash) is returned with ``converged=False``
    and its reason, so the campaign goes on and training leaves the frame out.
    """

    name: str = "label"
    campaign: str = ""
    spec: DFTSpec = field(default_factory=ENGINES.section)
    time_limit: float | None = None  # s per label (time_limits.label); past it the label is failed

    @ilflows_job(output_schema=DFTLabel)
    def make(self, origin: FrameOrigin, iteration: int, frame: Frame | None = None) -> DFTLabel:
        """Run the engine on the frame and return the label with the frame's provenance.

        ``frame`` is None for explored frames: they are read from their exploration's
        trajectory in the store, which keeps queued job specs small.
        """
        from jobflow import CURRENT_JOB

        from ilflows.dft import get_engine

        if frame is None:
            frame = explored_frame(CURRENT_JOB.store, origin)
        with time_limit(self.time_limit):
            result = get_engine(self.spec.engine).label(frame, self.spec, _workdir("dft"))
        return DFTLabel(
            **result.model_dump(),
            campaign=self.campaign,
            iteration=iteration,
            frame_id=origin.frame_id,
            frame=frame,
            origin=origin,
        )


def explored_frame(store, origin: FrameOrigin) -> Frame:
    """Read one explored frame from its exploration's trajectory (data store)."""
    criteria = {
        "output.kind": "exploration",
        "output.campaign": origin.campaign,
        "output.iteration": origin.iteration,
        "output.walker": origin.walker,
    }
    doc = store.query_one(criteria=criteria, properties=["output.trajectory"], load=True)
    if doc is None:
        raise LookupError(f"no exploration for {origin.frame_id} in the store")
    return Trajectory.model_validate(doc["output"]["trajectory"]).frame(origin.frame_index)


@dataclass
class TrainMaker(Maker):
    """Train one ensemble member on every converged training label of the campaign so far."""

    name: str = "train"
    campaign: str = ""
    spec: TrainSpec = field(default_factory=TRAINERS.section)
    type_map: list[str] = field(default_factory=list)
    dispersion: DispersionSpec | None = None
    holdout_fraction: float = 0.0
    outlier_k: float | None = None
    time_limit: float | None = None  # s per training (time_limits.train)

    @ilflows_job(output_schema=TrainingRun)
    def make(self, after: list, iteration: int, member: int, seed: int) -> TrainingRun:
        """Train committee member ``member`` with ``seed`` on every label so far.

        The labels are read from the JobStore: every label of an earlier iteration (initial set:
        -1), validation ones excepted.  ``after`` holds the outputs of the jobs queued just before
        this one (labels, MD runs), so that it waits for them; one that crashed arrives as None.
        Failed and crashed labels are left out and counted; outliers (``outlier_k``) and the
        held-out fraction are held back (:func:`ilflows.select.labels.training_split`).
        """
        from jobflow import CURRENT_JOB

        from ilflows.train import get_trainer

        labels = earlier_labels(CURRENT_JOB.store, self.campaign, before_iteration=iteration)
        crashed = sum(out is None for out in after)
        converged = [lab for lab in labels if lab.converged]
        split = training_split(converged, self.holdout_fraction, self.outlier_k)
        good = split.train
        if not good:  # e.g. a 2-frame initial set whose frame ids both fall in the held-out fraction
            raise ValueError(
                f"no label to train on: of {len(labels)} labels {len(converged)} converged, "
                f"{len(split.held_out)} held out (validation.holdout_fraction {self.holdout_fraction}), "
                f"{len(split.outliers)} outliers; label more initial frames or lower "
                "validation.holdout_fraction"
            )
        if self.dispersion:  # hybrid MLP + D3: the model learns the labels less D3
            from ilflows.dispersion import without_d3

            good = [without_d3(lab, **self.dispersion.model_dump(), three_body=False) for lab in good]
        trainer = get_trainer(self.spec.engine)
        hyperparameters = trainer.hyperparameters(self.spec, self.type_map, seed)
        if self.spec.continues and iteration > 0:
            # a member whose previous training crashed starts from scratch
            if parent := previous_model(CURRENT_JOB.store, self.campaign, iteration - 1, member):
                hyperparameters = self.spec.from_parent(hyperparameters, parent)
        with time_limit(self.time_limit):
            result = trainer.train(good, self.type_map, hyperparameters, _workdir("train"))
        return TrainingRun(
            **result.model_dump(),
            campaign=self.campaign,
            iteration=iteration,
            member=member,
            n_frames=len(good),
            n_failed_labels=len(labels) - len(converged) + crashed,
            n_held_out=len(split.held_out),
            outliers=split.outliers,
            label_ids=[lab.frame_id for lab in good],
            dispersion=self.dispersion.model_dump() if self.dispersion else None,
        )


def previous_model(store, campaign: str, iteration: int, member: int) -> ModelFile | None:
    """Model file of committee member ``member`` trained in ``iteration`` (None: not in the store)."""
    criteria = {
        "output.kind": "training",
        "output.campaign": campaign,
        "output.iteration": iteration,
        "output.member": member,
    }
    doc = store.query_one(criteria=criteria, properties=["output.model_file"], load=True)
    return ModelFile.model_validate(doc["output"]["model_file"]) if doc else None


@ilflows_job(output_schema=Validation)
def score_models(
    campaign: str,
    iteration: int,
    models: list[ModelFile | None],
    holdout_fraction: float,
    outlier_k: float | None,
    dispersion: DispersionSpec | None = None,
    after: list | None = None,
) -> Validation:
    """Score the iteration's committee: members and mean on training, held-out and validation labels.

    Errors on every label the members trained on, on the campaign's held-out labels and on the
    validation set; the committee's deviation on its training frames and, per held-out frame,
    beside its true error, say what its deviation means.  ``after`` holds the outputs of the
    validation labels' jobs when they were queued with this iteration, so that it waits for
    them.  Hybrid models are compared with the labels less D3, as they were trained.
    """
    import time

    from jobflow import CURRENT_JOB

    from ilflows.analysis.validation import calibration, deviations, error_metrics, parity, predict

    t0 = time.perf_counter()
    store = CURRENT_JOB.store
    criteria = {"output.kind": "dft_label", "output.campaign": campaign, "output.origin.stage": "validation"}
    docs = store.query(criteria=criteria, properties=["output"], sort={"output.frame_id": 1})
    validation = [DFTLabel.model_validate(d["output"]) for d in docs]
    own = [lab for lab in earlier_labels(store, campaign, before_iteration=iteration) if lab.converged]
    split = training_split(own, holdout_fraction, outlier_k)  # as the members' training split them
    validated = [lab for lab in validation if lab.converged]
    sets = {"training": split.train, "held_out": split.held_out, "validation": validated}
    if dispersion:
        from ilflows.dispersion import without_d3

        d3 = dispersion.model_dump()
        sets = {
            name: [without_d3(lab, **d3, three_body=False) for lab in labs] for name, labs in sets.items()
        }
    members = [k for k, model in enumerate(models) if model is not None]
    folder = _workdir("models")
    paths = [models[k].write(folder / f"m{k}_{models[k].name}") for k in members]
    metrics, parities, record = [], {}, {}
    for name, labs in sets.items():
        if not labs:
            continue
        energies, forces = predict(paths, labs)
        parities[name] = parity(labs, members, energies, forces)
        metrics += error_metrics(parities[name], name)
        if name == "held_out" and len(members) > 1:
            record["calibration"] = calibration(labs, forces)
        if name == "training" and len(members) > 1:
            record["training_deviation"] = deviations(forces).tolist()
    return Validation(
        campaign=campaign,
        iteration=iteration,
        members=members,
        n_failed_labels=len(validation) - len(validated),
        metrics=metrics,
        parity=parities.get("validation"),
        held_out_parity=parities.get("held_out"),
        wall_time=time.perf_counter() - t0,
        **record,
    )


def _labels_before(campaign: str, before: int) -> dict:
    """Store criteria of ``campaign``'s labels from iterations before ``before`` (initial: -1)."""
    return {"output.kind": "dft_label", "output.campaign": campaign, "output.iteration": {"$lt": before}}


def labelled_fingerprints(store, campaign: str, before: int) -> set[str]:
    """Fingerprints (``Frame.fingerprint``) of the frames ``campaign`` labelled before iteration ``before``.

    Validation and initial labels (iteration -1) included.  Reads the stored prints; only records
    older than them are read whole.
    """
    criteria = _labels_before(campaign, before)
    outs = [d["output"] for d in store.query(criteria, properties=["output.frame_hash", "output.frame_id"])]
    prints = {out["frame_hash"] for out in outs if out.get("frame_hash")}
    older = [out["frame_id"] for out in outs if not out.get("frame_hash")]
    if older:
        criteria["output.frame_id"] = {"$in": older}
        for doc in store.query(criteria, properties=["output.frame"]):
            prints.add(Frame.model_validate(doc["output"]["frame"]).fingerprint())
    return prints


def labelled_frames(store, campaign: str, before: int) -> list[Frame]:
    """Return the frames ``campaign`` labelled before iteration ``before`` (for diversity selection)."""
    labels = store.query(_labels_before(campaign, before), properties=["output.frame"])
    return [Frame.model_validate(d["output"]["frame"]) for d in labels]


def stage_ratios(store, campaign: str, stage: int, before: int) -> list[float]:
    """Accurate ratios of stage ``stage``'s iterations before iteration ``before``, in order."""
    criteria = {"output.kind": "selection", "output.campaign": campaign, "output.iteration": {"$lt": before}}
    docs = store.query(criteria, properties=["output.iteration", "output.stage", "output.accurate_ratio"])
    records = sorted((d["output"] for d in docs), key=lambda out: out["iteration"])
    return [out["accurate_ratio"] for out in records if out.get("stage", 0) == stage]


def earlier_labels(store, campaign: str, before_iteration: int) -> list[DFTLabel]:
    """Training labels of ``campaign`` queued before ``before_iteration`` (initial set: -1).

    Validation labels are never returned: they are held out of training.
    """
    criteria = {
        "output.kind": "dft_label",
        "output.campaign": campaign,
        "output.iteration": {"$lt": before_iteration},
        "output.origin.stage": {"$ne": "validation"},
    }
    docs = store.query(criteria=criteria, properties=["output"], sort={"output.frame_id": 1})
    return [DFTLabel.model_validate(d["output"]) for d in docs]


@dataclass
class ExploreMaker(Maker):
    """Run one MD walker with the whole ensemble and record per-frame deviations."""

    name: str = "explore"
    campaign: str = ""
    spec: ExploreSpec = field(default_factory=EXPLORERS.section)
    type_map: list[str] = field(default_factory=list)
    dispersion: DispersionSpec | None = None
    energy_deviation: bool = False  # selection needs each frame's energy deviation
    time_limit: float | None = None  # s per exploration (time_limits.explore)

    @ilflows_job(output_schema=Exploration)
    def make(
        self,
        models: list[ModelFile],
        start: Frame,
        start_frame_id: str,
        iteration: int,
        walker: int,
    ) -> Exploration:
        """Explore from ``start``; the MD seed depends on iteration and walker.

        A member whose training crashed arrives as None and is left out of the committee,
        which needs two members at least.
        """
        from ilflows.explore import get_explorer

        trained = [model for model in models if model is not None]
        if len(trained) < 2:
            raise ValueError(
                f"only {len(trained)} of {len(models)} committee models were trained (see the train jobs "
                f"of iteration {iteration}); an exploration needs 2 at least"
            )
        models = trained

        seed = 1000 * iteration + walker + 1
        with time_limit(self.time_limit):
            result = get_explorer(self.spec.engine).explore(
                models,
                start,
                self.type_map,
                self.spec,
                seed,
                _workdir("md"),
                self.dispersion,
                energy_deviation=self.energy_deviation,
            )
        return Exploration(
            **result.model_dump(),
            campaign=self.campaign,
            iteration=iteration,
            walker=walker,
            start_frame_id=start_frame_id,
        )

"""Job documents stay small: big objects go to the data store.  Printed as measured sizes.

Documents of the paper-scale campaign (10 PYR14+ BF4- pairs, 350 atoms; explorations of 1e5
steps with a frame every 1e3; a 2e6-step production run; the DeePMD paper model; a 400-frame
validation set; 3,000 selected frames) are stored the way jobs store them
(``JobStore.update(..., save={"data": BIG_FIELDS})``, as ``job(data=BIG_FIELDS)`` does) in an
in-memory JobStore, and the BSON size of each job document and of what went to the data store
is printed, with the bytes per stored trajectory frame.  Target: every job document under
1 MB (MongoDB's limit is 16 MB; GridFS holds the rest).

Run: ``.venv/bin/python benchmarks/document_sizes.py [--model-mb 5]``
"""

from __future__ import annotations

import argparse
import os

import bson
import numpy as np
from jobflow import JobStore
from maggma.stores import MemoryStore

from ilflows.schemas import BIG_FIELDS, DFTLabel, Frame, FrameOrigin, ModelFile, SelectionRecord
from ilflows.schemas.inputs import SystemSpec
from ilflows.schemas.records import (
    ErrorMetrics,
    Exploration,
    Parity,
    Production,
    SelectedFrame,
    TrainingRun,
    Trajectory,
    Validation,
)
from ilflows.systems import species

RNG = np.random.default_rng(0)
SYSTEM = SystemSpec(ions={"PYR14": 10, "BF4": 10}, density=1.0707)
SPECIES = species(SYSTEM)
N = len(SPECIES)
CELL = np.diag([16.1] * 3).tolist()


def trajectory(n_frames: int) -> Trajectory:
    return Trajectory(
        species=SPECIES,
        steps=list(range(0, 1000 * n_frames, 1000)),
        positions=RNG.uniform(0, 16.1, (n_frames, N, 3)).tolist(),
        cells=[CELL] * n_frames,
    )


def md_fields(n_frames: int) -> dict:
    return {
        "engine": "lammps-deepmd",
        "ensemble": "npt",
        "temperature": 450.0,
        "pressure": 1.0,
        "n_steps": 1000 * (n_frames - 1),
        "timestep": 0.5,
        "frame_every": 1000,
        "parameters": {"models": ["0" * 64] * 4},
        "deviations": RNG.uniform(0, 0.3, n_frames).tolist(),
        "wall_time": 3600.0,
        "trajectory": trajectory(n_frames),
    }


def documents(model_mb: float) -> dict[str, object]:
    frame = Frame(species=SPECIES, positions=RNG.uniform(0, 16.1, (N, 3)).tolist(), cell=CELL)
    origin = FrameOrigin(campaign="c", stage="explored", method="md", iteration=0, walker=0, frame_index=7)
    label = DFTLabel(
        engine="vasp",
        parameters={"ENCUT": 450},
        converged=True,
        energy=-2000.0,
        forces=RNG.normal(size=(N, 3)).tolist(),
        stress=np.eye(3).tolist(),
        wall_time=600.0,
        campaign="c",
        iteration=0,
        frame_id=origin.frame_id,
        frame=frame,
        origin=origin,
    )
    raw = os.urandom(int(model_mb * 1e6))
    model = ModelFile(
        name="model.pb",
        sha256="0" * 64,
        size=len(raw),
        content_b64=__import__("base64").b64encode(raw).decode(),
    )
    curve = [
        {"step": s, "rmse_energy": 1e-3, "rmse_force": 0.1, "learning_rate": 1e-4}
        for s in range(0, 2_000_000, 1000)
    ]
    training = TrainingRun(
        engine="deepmd",
        seed=1,
        type_map=["H", "B", "C", "N", "F"],
        hyperparameters={"model": {}},
        learning_curve=curve,
        rmse_energy=1e-3,
        rmse_force=0.1,
        wall_time=86400.0,
        model_file=model,
        campaign="c",
        iteration=0,
        member=0,
        n_frames=20_000,
        n_failed_labels=0,
        label_ids=[f"c/it0/w{w}/f{f}" for w in range(200) for f in range(100)],
    )
    exploration = Exploration(
        **md_fields(101), campaign="c", iteration=0, walker=0, start_frame_id="c/initial/0"
    )
    production = Production(
        **md_fields(2001),
        campaign="c",
        iteration=6,
        run="nvt",
        members=[0, 1, 2, 3],
        model_sha256=["0" * 64] * 4,
    )
    n_val = 400
    parity = Parity(
        frame_ids=[f"c/validation/{i}" for i in range(n_val)],
        equilibrated=[i % 2 == 0 for i in range(n_val)],
        n_atoms=[N] * n_val,
        models=["m0", "m1", "m2", "m3", "mean"],
        energy_ref=[0.0] * n_val,
        energy_pred=[[0.0] * n_val] * 5,
        force_ref=RNG.normal(size=n_val * N * 3).tolist(),
        force_pred=[RNG.normal(size=n_val * N * 3).tolist() for _ in range(5)],
    )
    metrics = [
        ErrorMetrics(
            model="mean",
            subset="all",
            n_frames=n_val,
            energy_rmse=1e-3,
            energy_mae=1e-3,
            force_rmse=0.1,
            force_mae=0.1,
        )
    ]
    validation = Validation(
        campaign="c",
        iteration=0,
        members=[0, 1, 2, 3],
        n_failed_labels=0,
        metrics=metrics,
        parity=parity,
        wall_time=60.0,
    )
    selection = SelectionRecord(
        campaign="c",
        iteration=0,
        trust_lo=0.05,
        trust_hi=1.5,
        n_frames=20_000,
        n_accurate=10_000,
        n_candidate=9_000,
        n_failed=1_000,
        accurate_ratio=0.5,
        n_flagged=0,
        flagged=[],
        selected=[SelectedFrame(walker=i % 200, frame_index=i % 101, deviation=0.1) for i in range(3000)],
        n_labels=6000,
        n_failed_labels=0,
        converged=False,
    )
    return {
        "DFT label (350 atoms)": label,
        "training (DeePMD, 2e6 steps)": training,
        "exploration (1e5 steps, 101 frames)": exploration,
        "production (2e6 steps, 2001 frames)": production,
        "validation (400 frames x 5 rows)": validation,
        "selection (3,000 frames)": selection,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mb", type=float, default=5.0, help="size of the frozen model file, MB")
    args = parser.parse_args()
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    print(f"{'document':40s}{'job doc':>12s}{'data store':>14s}   (target: job doc < 1 MB)")
    largest = 0
    for k, (name, doc) in enumerate(documents(args.model_mb).items()):
        uuid = f"doc-{k}"
        store.update(
            {"uuid": uuid, "index": 1, "output": doc.model_dump(mode="json")},
            key=["uuid", "index"],
            save={"data": BIG_FIELDS},
        )
        job_doc = store.docs_store.query_one({"uuid": uuid})
        job_bytes = len(bson.encode(job_doc))
        data_bytes = sum(
            len(bson.encode(d)) for d in store.additional_stores["data"].query({"job_uuid": uuid})
        )
        largest = max(largest, job_bytes)
        print(f"{name:40s}{job_bytes / 1e3:10.1f} kB{data_bytes / 1e6:11.2f} MB")
        if "exploration" in name:
            per_frame = data_bytes / 101
    print(f"largest job document: {largest / 1e3:.1f} kB ({'under' if largest < 1e6 else 'OVER'} 1 MB)")
    print(f"bytes per stored trajectory frame (350 atoms): {per_frame / 1e3:.1f} kB")


if __name__ == "__main__":
    main()

"""Shared fixtures: the 20 peer CP2K-xTB frames and a tiny DeePMD pair trained on them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cli_runs import registries_kept
from pydantic import TypeAdapter

from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.records import DFTLabel, ModelFile, TrainResult
from ilflows.train import TRAINERS

PEER_DATA = Path(__file__).resolve().parents[2] / "shared/peer-dpgen/init_data/ip35"
TYPE_MAP = ["H", "B", "C", "N", "F"]
# A few steps are enough for models that load, run MD and disagree with each other;
# type_one_side (5 embedding nets instead of 25) halves TensorFlow's graph set-up time.
FEW_STEPS = {
    "model": {"descriptor": {"type_one_side": True}},
    "training": {"numb_steps": 20, "disp_freq": 10, "save_freq": 20},
}


def pytest_collection_modifyitems(items):
    """Put the modules that run real engines (a ``slow`` test) first, in collection order.

    pytest-xdist hands out whole modules (``--dist loadfile``) in this order (pyproject turns
    off its reordering by test count, which put the one-test campaign modules last): a long
    campaign taken last would keep one worker busy while the other idles.
    """
    real = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in real)


@pytest.fixture(scope="module")
def fake_engines():
    """The module of the fake engines, registered in this process for the requesting module's tests."""
    with registries_kept():
        import fake_engines

        fake_engines.register()
        yield fake_engines


@pytest.fixture(scope="session")
def type_map() -> list[str]:
    return list(TYPE_MAP)


@pytest.fixture(scope="session")
def peer_labels() -> list[DFTLabel]:
    """The peer's 20 labelled frames of one PYR14+ BF4- pair as DFTLabel documents."""
    if not PEER_DATA.is_dir():
        pytest.skip(f"peer data not found at {PEER_DATA}")
    type_map = (PEER_DATA / "type_map.raw").read_text().split()
    species = [type_map[int(t)] for t in (PEER_DATA / "type.raw").read_text().split()]
    data = {k: np.load(PEER_DATA / "set.000" / f"{k}.npy") for k in ("box", "coord", "energy", "force")}
    labels = []
    for i in range(len(data["energy"])):
        origin = FrameOrigin(campaign="peer", stage="initial", method="md", index=i)
        labels.append(
            DFTLabel(
                engine="cp2k-xtb",
                parameters={"source": "peer-dpgen init_data/ip35"},
                converged=True,
                energy=float(data["energy"][i].item()),
                forces=data["force"][i].reshape(-1, 3).tolist(),
                wall_time=0.0,
                campaign="peer",
                iteration=-1,
                frame_id=origin.frame_id,
                frame=Frame(
                    species=species,
                    positions=data["coord"][i].reshape(-1, 3).tolist(),
                    cell=data["box"][i].reshape(3, 3).tolist(),
                ),
                origin=origin,
            )
        )
    return labels


@pytest.fixture(scope="session")
def tiny_train_results(peer_labels, type_map, tmp_path_factory) -> list[TrainResult]:
    """Two tiny DeePMD models (seeds 1 and 2) of a few steps, trained side by side, once per test run.

    Under pytest-xdist each worker is its own session: the first to ask trains, under a lock on
    a file all workers see (pytest-xdist's recipe for a session fixture), and the others read its
    TrainResult documents, model files included, instead of training the same two again.
    """
    from filelock import FileLock  # a torch dependency

    from ilflows.train import get_trainer

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    cache = shared / "tiny_train_results.json"
    adapter = TypeAdapter(list[TrainResult])
    with FileLock(f"{cache}.lock"):
        if cache.is_file():
            return adapter.validate_json(cache.read_bytes())
        trainer = get_trainer("deepmd")
        spec = TRAINERS.section(dict(preset="tiny", overrides=FEW_STEPS))
        root = tmp_path_factory.mktemp("tiny_models")

        def member(i: int) -> TrainResult:
            params = trainer.hyperparameters(spec, type_map, seed=spec.seed + i)
            return trainer.train(peer_labels, type_map, params, root / f"m{i}")

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(member, range(2)))
        cache.write_bytes(adapter.dump_json(results))
        return results


@pytest.fixture(scope="session")
def tiny_models(tiny_train_results) -> list[ModelFile]:
    return [result.model_file for result in tiny_train_results]


@pytest.fixture(scope="session")
def model_forces(tmp_path_factory):
    """Return a function: forces of each model on each frame, (n_models, n_frames, n_atoms, 3)."""
    from deepmd.infer import DeepPot

    folder = tmp_path_factory.mktemp("deeppot")

    def forces(models: list[ModelFile], frames: list[Frame]) -> np.ndarray:
        coords = np.array([f.positions for f in frames]).reshape(len(frames), -1)
        cells = np.array([f.cell for f in frames]).reshape(len(frames), 9)
        out = []
        for model in models:
            pot = DeepPot(str(model.write(folder / f"{model.sha256[:16]}.pb")))
            atype = [pot.get_type_map().index(el) for el in frames[0].species]
            out.append(pot.eval(coords, cells, atype)[1].reshape(len(frames), -1, 3))
        return np.array(out)

    return forces

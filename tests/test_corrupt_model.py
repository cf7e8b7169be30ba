"""A corrupt or missing model file fails its own exploration job with a clear reason, nothing else."""

from __future__ import annotations

import pytest
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from ilflows.dft import ENGINES
from ilflows.explore import EXPLORERS
from ilflows.loop.steps import ExploreMaker, LabelMaker
from ilflows.schemas import FrameOrigin
from ilflows.train import TRAINERS


@pytest.fixture(scope="module")
def models(fake_engines, peer_labels, type_map, tmp_path_factory):
    """Two members of the fake trainer: what a committee does with its model files is tested, not DeePMD."""
    from ilflows.train import get_trainer

    trainer = get_trainer("pair-fit")
    spec = TRAINERS.section(dict(engine="pair-fit"))
    root = tmp_path_factory.mktemp("pair_models")
    return [
        trainer.train(
            peer_labels, type_map, trainer.hyperparameters(spec, type_map, seed), root / f"m{seed}"
        ).model_file
        for seed in (1, 2)
    ]


def _explorer(type_map) -> ExploreMaker:
    return ExploreMaker(
        campaign="c",
        spec=EXPLORERS.section(dict(engine="rattle-walk", n_steps=10, frame_every=5)),
        type_map=type_map,
    )


def test_corrupt_model_fails_only_its_exploration(models, peer_labels, type_map, tmp_path):
    frame = peer_labels[0].frame
    broken = models[1].model_copy(update={"content_b64": models[1].content_b64[:-8] + "AAAAAAA="})
    explore = _explorer(type_map).make([models[0], broken], frame, "c/initial/0", 0, 0)
    origin = FrameOrigin(campaign="c", stage="initial", method="packmol", index=0)
    # an independent job in the same queue
    label = LabelMaker(campaign="c", spec=ENGINES.section(dict(engine="pair-dft"))).make(origin, -1, frame)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(Flow([explore, label]), store=store, root_dir=tmp_path, log=False)
    assert explore.uuid not in responses  # failed: no output
    assert responses[label.uuid][1].output.converged  # the other job ran to the end
    assert store.query_one({"output.kind": "exploration"}) is None


def test_the_corrupt_file_is_named_with_the_fix(models, tmp_path):
    broken = models[0].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(
        ValueError, match=r"model file model\.pairfit: content does not match its sha256; it is corrupt"
    ):
        broken.write(tmp_path / "model.pairfit")


def test_a_member_whose_training_crashed_is_left_out(models, peer_labels, type_map, tmp_path):
    maker = _explorer(type_map)
    frame = peer_labels[0].frame
    three = maker.make([models[0], None, models[1]], frame, "c/initial/0", 0, 0)
    one = maker.make([models[0], None], frame, "c/initial/0", 0, 1)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(Flow([three, one]), store=store, root_dir=tmp_path, log=False)
    explored = responses[three.uuid][1].output
    assert explored.parameters["models"] == [models[0].sha256, models[1].sha256]
    assert one.uuid not in responses  # a committee of one cannot give a deviation

"""A corrupt or missing model file fails its own exploration job with a clear reason, nothing else."""

from __future__ import annotations

from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from ilflows.explore import EXPLORERS
from ilflows.loop.steps import ExploreMaker, LabelMaker
from ilflows.schemas import FrameOrigin


def test_corrupt_model_fails_only_its_exploration(tiny_models, peer_labels, type_map, tmp_path):
    frame = peer_labels[0].frame
    broken = tiny_models[1].model_copy(update={"content_b64": tiny_models[1].content_b64[:-8] + "AAAAAAA="})
    explore = ExploreMaker(
        campaign="c", spec=EXPLORERS.section(dict(n_steps=10, frame_every=5)), type_map=type_map
    ).make([tiny_models[0], broken], frame, "c/initial/0", 0, 0)
    origin = FrameOrigin(campaign="c", stage="initial", method="packmol", index=0)
    label = LabelMaker(campaign="c").make(origin, -1, frame)  # an independent job in the same queue
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(Flow([explore, label]), store=store, root_dir=tmp_path, log=False)
    assert explore.uuid not in responses  # failed: no output
    assert responses[label.uuid][1].output.converged  # the other job ran to the end
    assert store.query_one({"output.kind": "exploration"}) is None


def test_the_corrupt_file_is_named_with_the_fix(tiny_models, tmp_path):
    import pytest

    broken = tiny_models[0].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(
        ValueError, match=r"model file model\.pb: content does not match its sha256; it is corrupt"
    ):
        broken.write(tmp_path / "model.pb")


def test_a_member_whose_training_crashed_is_left_out(tiny_models, peer_labels, type_map, tmp_path):
    maker = ExploreMaker(
        campaign="c", spec=EXPLORERS.section(dict(n_steps=10, frame_every=5)), type_map=type_map
    )
    frame = peer_labels[0].frame
    three = maker.make([tiny_models[0], None, tiny_models[1]], frame, "c/initial/0", 0, 0)
    one = maker.make([tiny_models[0], None], frame, "c/initial/0", 0, 1)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(Flow([three, one]), store=store, root_dir=tmp_path, log=False)
    explored = responses[three.uuid][1].output
    assert explored.parameters["models"] == [tiny_models[0].sha256, tiny_models[1].sha256]
    assert one.uuid not in responses  # a committee of one cannot give a deviation

"""A DFT label that fails is recorded with its reason and left out of training; nothing stops."""

from pathlib import Path

import pytest
from ase.io import read
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from ilflows.dft import ENGINES
from ilflows.loop.jobs import TOLERANT
from ilflows.loop.steps import LabelMaker, TrainMaker
from ilflows.schemas import Frame, FrameOrigin
from ilflows.train import TRAINERS

POSCAR = Path(__file__).resolve().parents[2] / "shared/peer-dpgen/confs/ip35.POSCAR"


def test_failed_label_is_recorded_and_left_out_of_training(tmp_path, fake_engines):
    if not POSCAR.exists():
        pytest.skip(f"peer frame not found at {POSCAR}")
    frame = Frame.from_ase(read(POSCAR))
    origins = [FrameOrigin(campaign="f", stage="initial", method="packmol", index=i) for i in range(2)]
    # what training does with the labels is tested: a fake label and a fake trainer will do
    good = LabelMaker(campaign="f", spec=ENGINES.section(dict(engine="pair-dft"))).make(origins[0], -1, frame)
    # one SCF step cannot converge: a real CP2K failure, not a mock
    bad = LabelMaker(campaign="f", spec=ENGINES.section(dict(max_scf=1))).make(origins[1], -1, frame)
    train = TrainMaker(
        campaign="f", spec=TRAINERS.section(dict(engine="pair-fit")), type_map=["H", "B", "C", "N", "F"]
    )
    member = train.make([good.output, bad.output], 0, 0, seed=1)
    member.update_config(TOLERANT)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(Flow([good, bad, member]), store=store, root_dir=tmp_path, ensure_success=True)

    failed = responses[bad.uuid][1].output
    assert not failed.converged and failed.energy is None and failed.forces is None
    assert failed.error.startswith("SCF not converged") and failed.frame_id == "f/initial/1"
    stored = store.query_one({"output.kind": "dft_label", "output.frame_id": "f/initial/1"})
    assert stored["output"]["converged"] is False  # the failure is a record, not a gap
    trained = responses[member.uuid][1].output
    assert trained.n_frames == 1 and trained.n_failed_labels == 1
    assert trained.label_ids == ["f/initial/0"]

"""Initial MD entries: AIMD with the campaign's DFT engine keeps its own labels, xTB MD is relabelled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from ilflows.loop.initial import md_frames
from ilflows.schemas.campaign import CampaignSpec
from ilflows.systems import md_boxes

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("cp2k") and shutil.which("packmol")), reason="cp2k and packmol are needed"
    ),
    pytest.mark.slow,
]

# One Li+ BF4- pair: the smallest neutral box of the ion library, so PBE runs in seconds; a loose
# SCF (as in test_dispersion.py) since no check here depends on how well it converged.
SPEC = {
    "name": "aimd",
    "system": {"ions": {"Li": 1, "BF4": 1}, "density": 1.0, "tolerance": 1.5},
    "initial": {"density_factors": [1.0], "boxes_per_density": 1, "rattled_copies": 0},
    "dft": {"engine": "cp2k-dft", "cutoff": 150.0, "rel_cutoff": 30.0, "eps_scf": 1e-4, "stress": False},
    "explore": {"n_walkers": 1},
    "guards": {"max_void": None},
}


def _run(tmp_path, md: list[dict]) -> JobStore:
    spec = CampaignSpec.model_validate({**SPEC, "initial": {**SPEC["initial"], "md": md}})
    jobs = [md_frames(spec, run, box, origin) for run, box, origin in md_boxes(spec, tmp_path / "boxes")]
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(Flow(jobs), store=store, root_dir=tmp_path, ensure_success=True)
    return store


def _labels(store: JobStore) -> list[dict]:
    docs = store.query({"output.kind": "dft_label"}, load=True)
    return sorted((d["output"] for d in docs), key=lambda label: label["frame_id"])


def test_aimd_frames_keep_the_dft_labels_and_how_they_were_made(tmp_path):
    # paper 1: EQ frames from AIMD, and nEQ boxes packed over a density range, barely relaxed
    eq = {"potential": "dft", "temperature": 400.0, "timestep": 0.5, "n_steps": 2, "every": 1}
    barely = {"potential": "dft", "density_factors": [0.8, 1.2], "n_steps": 1, "every": 1}
    store = _run(tmp_path, [eq, {**barely, "equilibrated": False}])

    runs = store.query({"output.kind": "md_frames"}, load=True)
    runs = {r["output"]["box_frame_id"]: r["output"] for r in runs}
    assert sorted(runs) == ["aimd/initial/2", "aimd/initial/3", "aimd/initial/4"]  # after box 0 and walker 1
    assert {r["engine"] for r in runs.values()} == {"cp2k-dft"} and all(
        r["error"] is None for r in runs.values()
    )
    labels = _labels(store)
    assert [label["frame_id"] for label in labels] == [
        "aimd/initial/md2/0",
        "aimd/initial/md2/1",
        "aimd/initial/md3/0",
        "aimd/initial/md4/0",
    ]
    for label in labels:
        assert label["converged"] and label["engine"] == "cp2k-dft" and label["origin"]["method"] == "aimd"
        assert label["parameters"]["run_type"] == "MD" and label["origin"]["timestep"] == 0.5
    eq_label, barely_low, barely_high = labels[1], labels[2], labels[3]
    assert eq_label["origin"]["equilibrated"] and eq_label["origin"]["md_step"] == 2
    assert not barely_low["origin"]["equilibrated"] and barely_low["origin"]["md_step"] == 1
    assert (barely_low["origin"]["density_factor"], barely_high["origin"]["density_factor"]) == (0.8, 1.2)
    volumes = [abs(np.linalg.det(label["frame"]["cell"])) for label in (barely_low, barely_high)]
    assert volumes[0] / volumes[1] == pytest.approx(1.2 / 0.8)
    # the kept label is the run's own: the same energy as the trajectory's record of that step
    run = runs["aimd/initial/2"]
    assert run["md_labels"][1]["energy"] == eq_label["energy"]


def test_xtb_md_frames_are_relabelled_by_the_campaign_engine(tmp_path):
    store = _run(tmp_path, [{"potential": "xtb", "n_steps": 4, "every": 2}])
    (run,) = (r["output"] for r in store.query({"output.kind": "md_frames"}, load=True))
    assert run["engine"] == "cp2k-xtb"
    labels = _labels(store)
    assert [label["frame_id"] for label in labels] == ["aimd/initial/md2/0", "aimd/initial/md2/1"]
    for label, xtb in zip(labels, run["md_labels"], strict=True):
        assert label["engine"] == "cp2k-dft" and label["origin"]["method"] == "md"
        assert label["converged"] and label["parameters"].get("run_type") != "MD"  # a single point
        assert label["energy"] != pytest.approx(xtb["energy"], abs=1.0)  # PBE, not xTB, energies

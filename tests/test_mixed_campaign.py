"""DeePMD and MACE in one campaign: both families train on the same labels, one committee explores."""

from __future__ import annotations

import pytest
import yaml
from cli_runs import ilflows

# 1 pair, 4 initial xTB labels; 1 DeePMD model of 60 steps and 2 MACE models of 3 epochs (loss
# switch at epoch 2) fine-tuned from their own previous models; 1 ASE walker driven by the DeePMD
# member, the deviation taken over all three.  The window is widened to keep candidates.
MIXED = {
    "name": "mixed",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "initial": {"density_factors": [1.0], "boxes_per_density": 2, "rattled_copies": 1},
    "train": [
        {
            "engine": "deepmd",
            "n_models": 1,
            "overrides": {
                "model": {"descriptor": {"type_one_side": True}},  # half TensorFlow's graph set-up
                "training": {"numb_steps": 60, "disp_freq": 20, "save_freq": 60},
            },
        },
        {
            "engine": "mace",
            "n_models": 2,
            "seed": 11,
            "finetune": True,
            "overrides": {"max_num_epochs": 3, "start_swa": 2, "valid_fraction": 0.25},
        },
    ],
    "explore": {"engine": "ase", "n_steps": 60, "frame_every": 20, "n_walkers": 1, "temperature": 300},
    "select": {"trust_lo": 0.01, "trust_hi": 50.0, "max_candidates": 2},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 2, "accurate_ratio": 0.999},
}


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """Run the mixed campaign with `ilflows run`; return its JobStore."""
    from ilflows.settings import IlflowsSettings
    from ilflows.store import connect_jobstore

    home = tmp_path_factory.mktemp("home")
    spec = home / "mixed.yaml"
    spec.write_text(yaml.safe_dump(MIXED))
    proc = ilflows(["run", str(spec)], home, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # e.g. a FireWorks thread racing the store
    assert "0 fizzled" in proc.stdout
    return connect_jobstore(IlflowsSettings(home=home))


def _outputs(store, kind: str, iteration: int, load: bool = False) -> list[dict]:
    docs = store.query({"output.kind": kind, "output.iteration": iteration}, load=load)
    return [d["output"] for d in docs]


@pytest.mark.slow
@pytest.mark.parametrize("iteration", [0, 1])
def test_both_families_train_on_the_same_labels(mixed_store, iteration):
    runs = sorted(_outputs(mixed_store, "training", iteration, load=True), key=lambda t: t["member"])
    assert [(t["member"], t["engine"], t["seed"]) for t in runs] == [
        (0, "deepmd", 1),
        (1, "mace", 11),
        (2, "mace", 12),
    ]
    assert len({tuple(t["label_ids"]) for t in runs}) == 1  # one label set for every member
    expected = 4 if iteration == 0 else 4 + len(_outputs(mixed_store, "selection", 0)[0]["selected"])
    assert runs[0]["n_frames"] + runs[0]["n_held_out"] + runs[0]["n_failed_labels"] == expected


@pytest.mark.slow
def test_mace_members_start_from_their_own_previous_models(mixed_store):
    previous = {t["member"]: t for t in _outputs(mixed_store, "training", 0, load=True)}
    for run in _outputs(mixed_store, "training", 1):
        if run["engine"] == "mace":
            parent = previous[run["member"]]["model_file"]["sha256"]
            assert run["hyperparameters"]["init_model"]["sha256"] == parent
            assert run["stage_two_epoch"] == 2
        else:
            assert "init_model" not in run["hyperparameters"]


@pytest.mark.slow
def test_one_committee_of_both_families_explores_and_selects(mixed_store):
    explorations = _outputs(mixed_store, "exploration", 0, load=True)
    assert len(explorations) == 1
    for exploration in explorations:
        assert exploration["engine"] == "ase" and len(exploration["deviations"]) == 4  # steps 0..60
        assert len(exploration["parameters"]["models"]) == 3
    selection = _outputs(mixed_store, "selection", 0)[0]
    deviations = [d for e in explorations for d in e["deviations"]]
    assert selection["n_frames"] == len(deviations)
    chosen = {(s["walker"], s["frame_index"]) for s in selection["selected"]}
    labels = _outputs(mixed_store, "dft_label", 0)
    assert {(lab["origin"]["walker"], lab["origin"]["frame_index"]) for lab in labels} == chosen

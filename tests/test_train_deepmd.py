"""DeePMD trainer: a real 2-member training on the peer frames, presets, overrides, inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ilflows.train import TRAINERS, deep_merge, get_trainer
from ilflows.train.deepmd import EV_PER_A3_IN_GPA, DeepmdTrainer, write_inputs


@pytest.mark.slow
def test_members_train_with_their_own_seeds(tiny_train_results, type_map):
    assert [r.seed for r in tiny_train_results] == [1, 2]
    assert len({r.model_file.sha256 for r in tiny_train_results}) == 2
    for r in tiny_train_results:
        assert r.engine == "deepmd" and r.type_map == type_map
        assert r.hyperparameters["model"]["descriptor"]["seed"] == r.seed
        assert r.hyperparameters["training"]["numb_steps"] == 20
        assert [p.step for p in r.learning_curve] == [0, 10, 20]
        for p in r.learning_curve:
            assert all(math.isfinite(v) and v > 0 for v in (p.rmse_energy, p.rmse_force, p.learning_rate))
        assert r.rmse_energy == r.learning_curve[-1].rmse_energy
        assert r.rmse_force == r.learning_curve[-1].rmse_force
        assert r.learning_curve[-1].learning_rate < r.learning_curve[0].learning_rate
        # Peer frames carry no stress: no virial loss.
        assert r.hyperparameters["loss"]["start_pref_v"] == 0
        assert r.wall_time > 0 and r.model_file.name == "model.pb"


@pytest.mark.slow
def test_models_load_and_disagree(tiny_models, peer_labels, model_forces):
    frames = [label.frame for label in peer_labels[:3]]
    forces = model_forces(tiny_models, frames)
    assert forces.shape == (2, 3, 35, 3) and np.isfinite(forces).all()
    assert not np.allclose(forces[0], forces[1], atol=1e-6)


def test_paper_preset_has_paper_numbers(type_map):
    params = DeepmdTrainer().hyperparameters(TRAINERS.section(dict(preset="paper")), type_map, seed=11)
    descriptor = params["model"]["descriptor"]
    assert descriptor["type"] == "se_e2_a" and descriptor["sel"] == "auto"
    assert (descriptor["rcut"], descriptor["rcut_smth"]) == (10.0, 0.5)
    assert descriptor["neuron"] == [25, 50, 100]
    assert params["model"]["fitting_net"]["neuron"] == [240, 240, 240]
    assert params["learning_rate"]["type"] == "exp"
    assert (params["learning_rate"]["start_lr"], params["learning_rate"]["stop_lr"]) == (
        1e-3,
        3.5e-8,
    )
    loss = params["loss"]
    assert (loss["start_pref_e"], loss["start_pref_f"], loss["start_pref_v"]) == (0.02, 1000, 0.02)
    assert (loss["limit_pref_e"], loss["limit_pref_f"], loss["limit_pref_v"]) == (1, 1, 1)
    assert params["training"]["numb_steps"] == 2_000_000
    assert params["model"]["type_map"] == type_map
    assert descriptor["seed"] == params["model"]["fitting_net"]["seed"] == params["training"]["seed"] == 11


def test_overrides_deep_merge_and_seed_wins(type_map):
    overrides = {"model": {"descriptor": {"rcut": 6.0, "seed": 99}}, "training": {"numb_steps": 7}}
    params = DeepmdTrainer().hyperparameters(TRAINERS.section(dict(overrides=overrides)), type_map, seed=3)
    descriptor = params["model"]["descriptor"]
    assert descriptor["rcut"] == 6.0 and descriptor["rcut_smth"] == 1.0 and descriptor["neuron"] == [8, 16]
    assert descriptor["seed"] == 3
    assert params["training"]["numb_steps"] == 7 and params["training"]["disp_freq"] == 50
    assert deep_merge({"a": {"b": [1, 2], "c": 1}}, {"a": {"b": [3]}}) == {"a": {"b": [3], "c": 1}}


def test_tiny_sel_follows_type_map():
    trainer, spec = DeepmdTrainer(), TRAINERS.section()
    assert trainer.hyperparameters(spec, ["H", "B", "C", "N", "F"], 1)["model"]["descriptor"]["sel"] == [
        24,
        2,
        12,
        2,
        6,
    ]
    assert trainer.hyperparameters(spec, ["C", "H"], 1)["model"]["descriptor"]["sel"] == [12, 24]
    assert trainer.hyperparameters(spec, ["H", "C", "N", "O", "S"], 1)["model"]["descriptor"]["sel"] == "auto"


def test_write_inputs_systems_and_virial(peer_labels, type_map, tmp_path):
    stress = [[1.0, 0.1, 0.0], [0.1, 2.0, 0.0], [0.0, 0.0, 3.0]]
    reordered = peer_labels[2].model_copy(
        update={
            "frame": peer_labels[2].frame.model_copy(update={"species": peer_labels[2].frame.species[::-1]})
        }
    )
    labels = [lab.model_copy(update={"stress": stress}) for lab in (*peer_labels[:2], reordered)]
    params = DeepmdTrainer().hyperparameters(TRAINERS.section(dict(preset="paper")), type_map, seed=1)
    written = write_inputs(labels, type_map, params, tmp_path / "with")
    assert written["training"]["training_data"]["systems"] == ["data/sys000", "data/sys001"]
    assert json.loads((tmp_path / "with/input.json").read_text()) == written
    virial = np.load(tmp_path / "with/data/sys000/set.000/virial.npy")
    assert virial.shape == (2, 9)
    np.testing.assert_allclose(virial[0], np.ravel(stress) * 12.0**3 / EV_PER_A3_IN_GPA)
    assert written["loss"]["start_pref_v"] == 0.02
    types = (tmp_path / "with/data/sys001/type.raw").read_text().split()
    assert types[0] == "4" and types[-1] == "0"

    labels[1] = labels[1].model_copy(update={"stress": None})
    written = write_inputs(labels, type_map, params, tmp_path / "without")
    assert not (tmp_path / "without/data/sys000/set.000/virial.npy").exists()
    assert written["loss"]["start_pref_v"] == written["loss"]["limit_pref_v"] == 0


def test_bad_inputs_raise(peer_labels, type_map, tmp_path):
    params = DeepmdTrainer().hyperparameters(TRAINERS.section(), type_map, seed=1)
    with pytest.raises(ValueError, match="no labels"):
        DeepmdTrainer().train([], type_map, params, tmp_path)
    with pytest.raises(ValueError, match="not in type_map"):
        write_inputs(peer_labels[:1], ["H", "C"], params, tmp_path)
    with pytest.raises(ValueError, match="known: deepmd"):
        get_trainer("nequip")

"""MACE trainer: real tiny trainings on DFT frames of ethylammonium nitrate, presets, inputs, errors."""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units

from ilflows.execute import EngineError
from ilflows.external import read_extxyz
from ilflows.schemas.records import DFTLabel, TrainResult
from ilflows.train import TRAINERS, TrainSpec, get_trainer
from ilflows.train.mace import FLAGS, MaceTrainer, mace_command, write_inputs

# 75 DFT frames of EAN (15 ion pairs, 225 atoms, 12.9 Å cubic cell), eV and eV/Å, no stress.
EAN = Path(__file__).resolve().parents[2] / "shared/reference-data/EAN_neuralil_validation_75frames.extxyz"
TYPE_MAP = ["H", "C", "N", "O"]
N_FRAMES = 8  # tiny preset: 6 to train on, 2 held out


@pytest.fixture(scope="module")
def ean_labels() -> list[DFTLabel]:
    if not EAN.is_file():
        pytest.skip(f"reference data not found at {EAN}")
    imported = read_extxyz(
        EAN,
        campaign="ean",
        stage="initial",
        level_of_theory="not stated (NeuralIL EAN validation set)",
        source="Madsen-s-research-group/neuralil-public-releases@dcfadc67",
    )
    return imported.labels[:N_FRAMES]


@pytest.fixture(scope="module")
def tiny_pair(ean_labels, tmp_path_factory) -> list[TrainResult]:
    """Two tiny-preset models (seeds 1 and 2), trained side by side on one thread each."""
    trainer, spec = MaceTrainer(), TRAINERS.section(dict(engine="mace", preset="tiny"))
    root = tmp_path_factory.mktemp("mace_pair")

    def member(i: int) -> TrainResult:
        params = trainer.hyperparameters(spec, TYPE_MAP, seed=spec.seed + i)
        return trainer.train(ean_labels, TYPE_MAP, params, root / f"m{i}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(member, range(2)))


def _calculator(result: TrainResult, folder: Path):
    from mace.calculators import MACECalculator

    path = result.model_file.write(folder / f"{result.model_file.sha256[:12]}.model")
    return MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")


@pytest.mark.slow
def test_two_seeds_give_two_models_that_load(tiny_pair, ean_labels, tmp_path):
    first, second = tiny_pair
    assert [r.seed for r in tiny_pair] == [1, 2] and first.engine == "mace" and first.type_map == TYPE_MAP
    assert first.model_file.sha256 != second.model_file.sha256
    assert first.model_file.name == "mace_stagetwo.model"
    # Members differ only in seed: same options, same held-out frames.
    assert {**first.hyperparameters, "seed": 0} == {**second.hyperparameters, "seed": 0}
    assert len(first.hyperparameters["valid_ids"]) == 2
    import mace

    assert first.software["mace-torch"] == mace.__version__ and first.software["torch"].startswith("2.")

    label = ean_labels[0]
    atoms = label.frame.to_ase()
    energies, forces = [], []
    for result in tiny_pair:
        atoms.calc = _calculator(result, tmp_path)
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    for energy, force in zip(energies, forces, strict=True):
        assert isinstance(energy, float) and force.shape == (225, 3) and np.isfinite(force).all()
        # eV: within 0.1 eV/atom of the DFT energy (a unit slip would be off by orders of magnitude).
        assert abs(energy - label.energy) / 225 < 0.1
        assert np.abs(force).max() < 50  # eV/Å
    assert energies[0] != pytest.approx(energies[1], abs=1e-6)
    assert not np.allclose(forces[0], forces[1], atol=1e-6)


@pytest.mark.slow
def test_learning_curve_has_one_point_per_epoch_and_the_loss_switch(tiny_pair):
    for result in tiny_pair:
        params, curve = result.hyperparameters, result.learning_curve
        assert [p.step for p in curve] == list(range(params["max_num_epochs"])) == list(range(6))
        assert result.stage_two_epoch == params["start_swa"] == 4
        weights = [(p.energy_weight, p.force_weight) for p in curve]
        assert weights == [(1.0, 100.0)] * 4 + [(1000.0, 100.0)] * 2
        for p in curve:
            values = (p.loss, p.valid_loss, p.valid_rmse_energy, p.valid_rmse_force)
            assert all(math.isfinite(v) and v > 0 for v in values)
            assert p.rmse_energy is None and p.learning_rate is None  # MACE does not report them
        assert 0 < result.rmse_energy < 1 and 0 < result.rmse_force < 5
        # The model is stage two's best validation checkpoint; the table rounds to 0.1 meV.
        best = min(curve[4:], key=lambda p: p.valid_loss)
        assert result.valid_rmse_force == pytest.approx(best.valid_rmse_force, abs=1e-4)
        assert result.valid_rmse_energy == pytest.approx(best.valid_rmse_energy, abs=1e-4)
        assert result.wall_time > 0


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_model(tiny_pair, ean_labels, tmp_path):
    parent = tiny_pair[0]
    trainer = get_trainer("mace")
    spec = TRAINERS.section(dict(engine="mace", overrides={"max_num_epochs": 1, "swa": False}))
    params = {**trainer.hyperparameters(spec, TYPE_MAP, seed=7), "init_model": parent.model_file}
    result = trainer.train(ean_labels, TYPE_MAP, params, tmp_path)
    assert result.hyperparameters["init_model"]["sha256"] == parent.model_file.sha256
    assert result.hyperparameters["foundation_model"] == str(tmp_path / "init.model")
    assert "start_swa" not in result.hyperparameters and result.stage_two_epoch is None
    assert result.model_file.name == "mace.model" and len(result.learning_curve) == 1
    # Before its first step the run scores the parent's validation errors: it holds its weights.
    lines = (tmp_path / "results/mace_run-7_train.txt").read_text().splitlines()
    initial = next(e for e in map(json.loads, lines) if e["mode"] == "eval" and e["epoch"] is None)
    assert initial["rmse_f"] == pytest.approx(parent.valid_rmse_force, abs=1e-4)
    assert initial["rmse_e_per_atom"] == pytest.approx(parent.valid_rmse_energy, abs=1e-4)


def test_mace_trains_on_the_device_setting_unless_the_spec_names_one(ean_labels, monkeypatch, tmp_path):
    import torch

    from ilflows.settings import get_settings

    def command(spec: TrainSpec, device: str, folder: str) -> list[str]:
        monkeypatch.setenv("ILFLOWS_DEVICE", device)
        get_settings.cache_clear()
        params = MaceTrainer().hyperparameters(spec, TYPE_MAP, seed=1)
        return mace_command(write_inputs(ean_labels[:4], TYPE_MAP, params, tmp_path / folder))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: what torch would see
    try:
        assert "--device=cuda" in command(TRAINERS.section(dict(engine="mace")), "auto", "gpu")
        assert "--device=cpu" in command(TRAINERS.section(dict(engine="mace")), "cpu", "cpu")
        named = TRAINERS.section(dict(engine="mace", overrides={"device": "cpu"}))
        assert "--device=cpu" in command(named, "auto", "named")
    finally:
        monkeypatch.delenv("ILFLOWS_DEVICE")
        get_settings.cache_clear()


def test_paper_preset_builds_the_paper_command(ean_labels, tmp_path):
    from mace.tools import build_default_arg_parser

    params = MaceTrainer().hyperparameters(
        TRAINERS.section(dict(engine="mace", preset="paper")), TYPE_MAP, seed=11
    )
    command = mace_command(write_inputs(ean_labels, TYPE_MAP, params, tmp_path))
    assert Path(command[0]).name == "mace_run_train"
    expected = {
        "--model=ScaleShiftMACE",
        "--hidden_irreps=16x0e+16x1o",
        "--batch_size=4",
        "--r_max=6.0",
        "--max_num_epochs=100",
        "--loss=weighted",
        "--energy_weight=1.0",
        "--forces_weight=100.0",
        "--swa",
        "--start_swa=75",
        "--swa_energy_weight=1000.0",
        "--swa_forces_weight=100.0",
        "--seed=11",
        "--device=cpu",
        "--atomic_numbers=[1, 6, 7, 8]",
        "--train_file=train.xyz",
        "--valid_file=valid.xyz",
        "--energy_key=dft_energy",
        "--forces_key=dft_forces",
        "--stress_key=dft_stress",
    }
    assert expected <= set(command)
    assert not any(arg.startswith(("--valid_fraction", "--valid_ids", "--foundation")) for arg in command)
    # MACE's own parser reads it as the recipe.
    args = build_default_arg_parser().parse_args(command[1:])
    assert (args.model, args.hidden_irreps) == ("ScaleShiftMACE", "16x0e+16x1o")
    assert (args.batch_size, args.r_max) == (4, 6.0)
    assert (args.max_num_epochs, args.swa, args.start_swa) == (100, True, 75)
    assert (args.energy_weight, args.forces_weight) == (1.0, 100.0)
    assert (args.swa_energy_weight, args.swa_forces_weight) == (1000.0, 100.0)
    assert args.save_cpu and not args.plot and args.default_dtype == "float64"

    train = ase.io.read(tmp_path / "train.xyz", index=":")
    valid = ase.io.read(tmp_path / "valid.xyz", index=":")
    assert (len(train), len(valid)) == (7, 1)  # valid_fraction 0.1
    by_id = {lab.frame_id: lab for lab in ean_labels}
    held_out = by_id[json.loads((tmp_path / "options.json").read_text())["valid_ids"][0]]
    assert valid[0].info["dft_energy"] == pytest.approx(held_out.energy)
    np.testing.assert_allclose(valid[0].arrays["dft_forces"], held_out.forces, atol=1e-8)  # ASE: %.8f
    assert "dft_stress" not in valid[0].info


def test_flags_are_the_options_without_value():
    from mace.tools import build_default_arg_parser

    no_value = {
        action.option_strings[0].lstrip("-")
        for action in build_default_arg_parser()._actions
        if action.nargs == 0 and not isinstance(action, argparse._HelpAction)
    }
    assert no_value == FLAGS


def test_overrides_stress_and_init_model_path(ean_labels, tmp_path):
    overrides = {"r_max": 4.5, "seed": 99, "max_ell": None, "swa": False}
    params = MaceTrainer().hyperparameters(
        TRAINERS.section(dict(engine="mace", overrides=overrides)), TYPE_MAP, seed=3
    )
    assert params["r_max"] == 4.5 and params["hidden_irreps"] == "8x0e+8x1o" and params["seed"] == 3
    stress = [[1.0, 0.1, 0.0], [0.1, 2.0, 0.0], [0.0, 0.0, 3.0]]  # GPa, pressure sign
    labels = [lab.model_copy(update={"stress": stress}) for lab in ean_labels[:3]]
    parent = tmp_path / "parent.model"
    parent.write_bytes(b"weights")
    record = write_inputs(labels, TYPE_MAP, {**params, "init_model": str(parent)}, tmp_path / "run")
    command = mace_command(record)
    assert "--r_max=4.5" in command and "--seed=3" in command
    assert "--swa" not in command and not any(arg.startswith(("--max_ell", "--start_swa")) for arg in command)
    assert f"--foundation_model={parent}" in command and "--multiheads_finetuning=False" in command
    assert record["init_model"]["path"] == str(parent) and len(record["init_model"]["sha256"]) == 64
    frame = ase.io.read(tmp_path / "run/train.xyz", index=0)
    np.testing.assert_allclose(frame.info["dft_stress"], -np.array(stress) * units.GPa)


@pytest.mark.slow
def test_mace_failure_raises_engine_error_with_its_reason(ean_labels, tmp_path):
    # The paper's literal irreps: mace-torch refuses different channel counts per L.
    spec = TRAINERS.section(dict(engine="mace", overrides={"hidden_irreps": "16x0e+4x1e"}))
    trainer = MaceTrainer()
    params = trainer.hyperparameters(spec, TYPE_MAP, seed=1)
    with pytest.raises(EngineError, match="AssertionError: All channels must have the same dimension"):
        trainer.train(ean_labels[:4], TYPE_MAP, params, tmp_path)


def test_bad_inputs_raise(ean_labels, tmp_path):
    trainer = get_trainer("mace")
    assert isinstance(trainer, MaceTrainer)
    params = trainer.hyperparameters(TRAINERS.section(dict(engine="mace")), TYPE_MAP, seed=1)
    with pytest.raises(ValueError, match="at least two"):
        trainer.train(ean_labels[:1], TYPE_MAP, params, tmp_path)
    with pytest.raises(ValueError, match="not in type_map"):
        write_inputs(ean_labels[:2], ["H", "C", "N"], params, tmp_path)
    failed = ean_labels[1].model_copy(update={"energy": None, "converged": False})
    with pytest.raises(ValueError, match="no energy or forces"):
        write_inputs([ean_labels[0], failed], TYPE_MAP, params, tmp_path)
    with pytest.raises(ValueError, match="not a file"):
        write_inputs(ean_labels[:2], TYPE_MAP, {**params, "init_model": tmp_path / "none.model"}, tmp_path)


def test_batch_never_exceeds_the_training_frames(ean_labels, tmp_path):
    # MACE drops an incomplete last batch: 3 training frames with batch 4 would train on none
    params = MaceTrainer().hyperparameters(TRAINERS.section(dict(engine="mace")), TYPE_MAP, seed=1)
    options = write_inputs(ean_labels[:4], TYPE_MAP, {**params, "valid_fraction": 0.25}, tmp_path)
    assert (options["batch_size"], len(ase.io.read(tmp_path / "train.xyz", ":"))) == (3, 3)
    options = write_inputs(ean_labels, TYPE_MAP, params, tmp_path / "all")
    assert options["batch_size"] == 4  # the paper's batch when there are enough frames


def test_finetuned_members_take_the_finetune_overrides(type_map):
    from ilflows.schemas import ModelFile
    from ilflows.train import get_trainer

    spec = TRAINERS.section(
        dict(
            engine="mace",
            preset="small",
            finetune=True,
            finetune_overrides={"max_num_epochs": 20, "start_swa": 15},
        )
    )
    fresh = get_trainer("mace").hyperparameters(spec, type_map, seed=3)
    parent = ModelFile(name="m.model", sha256="0", size=0, content_b64="")
    tuned = spec.from_parent(fresh, parent)
    assert spec.continues and not TRAINERS.section({"engine": "mace"}).continues
    assert (fresh["max_num_epochs"], fresh["start_swa"]) == (60, 45)  # from scratch: the preset's
    assert (tuned["max_num_epochs"], tuned["start_swa"], tuned["seed"]) == (20, 15, 3)
    assert tuned["init_model"] is parent and tuned["hidden_irreps"] == "16x0e+16x1o"
    with pytest.raises(ValueError, match="finetune_overrides apply to fine-tuned members"):
        TRAINERS.section(dict(engine="mace", finetune_overrides={"max_num_epochs": 20}))

"""MACE trainer (mace-torch's ``mace_run_train``): extxyz in, a ``.model`` file out.

Units: energies eV, forces eV/Å, positions and cells Å.  The extxyz stress is ASE's (eV/Å^3,
positive when stretched); labels carry GPa with the pressure sign.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Literal

import ase.io
import numpy as np
from ase import Atoms, units
from ase.data import atomic_numbers
from pydantic import Field, model_validator

from ilflows.execute import EngineError, require_executable, run_command, torch_device
from ilflows.schemas.records import DFTLabel, ModelFile, TrainResult
from ilflows.settings import get_settings
from ilflows.software import software
from ilflows.train import TrainSpec, check_labels, deep_merge
from ilflows.train.mace_output import parse_training

NAME = "mace"  # --name: MACE names its files after it (mace.model, logs/mace_run-<seed>.log, ...)
# extxyz keys of the labels, given to MACE explicitly so that it never falls back on ASE's
# calculator results or on its own default key names.
ENERGY_KEY, FORCES_KEY, STRESS_KEY = "dft_energy", "dft_forces", "dft_stress"

# ilflows keys of the hyperparameters; every other key is a mace_run_train option.
# valid_fraction: share of the labels held out for validation (same split for every seed).
# init_model: model to fine-tune from, a path or a ModelFile (see MaceTrainer.train).
OWN_KEYS = ("valid_fraction", "init_model")

# mace_run_train options that take no value (argparse store_true/store_false in 0.3.16).
FLAGS = {
    "amsgrad",
    "disallow_random_padding_pt",
    "distributed",
    "dry_run",
    "ema",
    "foundation_model_readout",
    "keep_checkpoints",
    "lbfgs",
    "pair_repulsion",
    "restart_latest",
    "save_all_checkpoints",
    "save_cpu",
    "swa",
    "wandb",
}

# Paper 1's MACE recipe; options it does not name keep mace_run_train's defaults
# (max_ell 3, correlation 3, 2 interactions, lr 0.01, stage-two lr 0.001).
PAPER: dict = {
    "model": "ScaleShiftMACE",
    # The paper writes 16x0e+4x1e, which mace-torch 0.3.16 refuses (every L must have the same
    # channel count); 16x0e+16x1e trains but crashes when the model is saved (the 1e block gets
    # no parameters and deepcopy fails on them).  16x0e+16x1o is MACE's own "16 channels, L=1".
    "hidden_irreps": "16x0e+16x1o",
    "r_max": 6.0,
    "batch_size": 4,
    "max_num_epochs": 100,
    # Two-stage loss: energy/force weights 1/100 for epochs 0-74, 1000/100 from epoch 75 on.
    "loss": "weighted",
    "energy_weight": 1.0,
    "forces_weight": 100.0,
    "swa": True,
    "start_swa": 75,
    "swa_energy_weight": 1000.0,
    "swa_forces_weight": 100.0,
    # Stage-two epoch parsing reads the first evaluation after the switch: evaluate every epoch.
    "eval_interval": 1,
    # No isolated-atom energies in the labels: least-squares average per element.
    "E0s": "average",
    "error_table": "PerAtomRMSE",
    "default_dtype": "float64",
    "save_cpu": True,  # a model trained on a GPU still loads on a CPU
    "plot": False,  # the end-of-training plots re-run inference and fail on one head anyway
    "valid_fraction": 0.1,
}

PRESETS: dict[str, dict] = {
    "paper": PAPER,
    # Same model family for tests and demos: 8 channels, L=1 spherical harmonics, 5 Å, 6 epochs
    # with the loss switch at epoch 4: 10 frames of 225 atoms train in about 20 s on one CPU
    # core, 6 s of it MACE's start-up.
    "tiny": deep_merge(
        PAPER,
        {
            "hidden_irreps": "8x0e+8x1o",
            "MLP_irreps": "8x0e",
            "max_ell": 1,
            "correlation": 2,
            "radial_MLP": "[16, 16]",
            "r_max": 5.0,
            "max_num_epochs": 6,
            "start_swa": 4,
            "valid_fraction": 0.2,
        },
    ),
}
# Sized to learn the demo's one-pair box on two cores: the paper's 16 channels at L=1 on the tiny
# preset's small body (max_ell 1, correlation 2, 5 Å), 60 epochs with the loss switch at 45, in
# float32.  Trained on 62 xTB labels it reaches 0.07-0.08 eV/Å on held-out 300 K MD frames in
# 40-80 s per member (demo-lab sweep, README "Measured").
PRESETS["small"] = deep_merge(
    PRESETS["tiny"],
    {
        "hidden_irreps": "16x0e+16x1o",
        "MLP_irreps": "16x0e",
        "max_num_epochs": 60,
        "start_swa": 45,
        "default_dtype": "float32",
    },
)


class MaceSpec(TrainSpec):
    """A ``train:`` entry of trainer mace (MACE), which may fine-tune each member from its last model."""

    engine: Literal["mace"] = Field("mace", description="MACE.")
    preset: Literal["tiny", "small", "paper"] = Field(
        "tiny",
        description="'tiny' (tests, a few steps), 'small' (sized to learn a one-pair box on two cores), "
        "'paper' (paper 1's production set).",
    )
    finetune: bool = Field(
        False,
        description="From iteration 1 on, start each member from its own model of the previous "
        "iteration instead of from scratch.",
    )
    finetune_overrides: dict = Field(
        default_factory=dict,
        description="Options merged on top when a member starts from its previous model, e.g. fewer "
        "epochs (DP-GEN's training_reuse_numb_steps, training_reuse_start_lr): training is most of an "
        "iteration's time and grows with the labels.",
    )

    @model_validator(mode="after")
    def _finetune(self) -> MaceSpec:
        if self.finetune_overrides and not self.finetune:
            raise ValueError(
                "finetune_overrides apply to fine-tuned members; set finetune: true or drop them"
            )
        return self

    @property
    def continues(self) -> bool:
        """Members are fine-tuned from their previous models (``finetune``)."""
        return self.finetune

    def from_parent(self, hyperparameters: dict, parent: ModelFile) -> dict:
        """Return the input of a fine-tuned member: ``finetune_overrides`` on top, ``parent`` its start."""
        return super().from_parent(deep_merge(hyperparameters, self.finetune_overrides), parent)


class MaceTrainer:
    """Train one MACE model per call: ``write_inputs``, ``run_mace``, ``parse_training``."""

    name = "mace"
    section = MaceSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the ``mace_run_train`` command and its settings field."""
        return [(get_settings().mace_train_cmd, "mace_train_cmd")]

    def hyperparameters(self, spec: MaceSpec, type_map: list[str], seed: int) -> dict:
        """Return the mace_run_train options of ``spec.preset`` with ``spec.overrides`` merged, seeded.

        ``atomic_numbers`` follows ``type_map`` so that the model knows every element of the
        campaign even when the labels lack one; the seed is set after the overrides, so that
        ensemble members always differ.  An override of None drops a preset option (MACE's default
        applies).
        """
        zs = sorted(atomic_numbers[el] for el in type_map)
        params = deep_merge(PRESETS[spec.preset], {"atomic_numbers": str(zs)})
        params = deep_merge(params, spec.overrides)
        params["seed"] = seed
        return params

    def train(
        self, labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path
    ) -> TrainResult:
        """Train one model in ``workdir`` on converged ``labels``.

        A share ``valid_fraction`` of the labels is held out for validation.  With
        ``init_model`` (a path or a :class:`ModelFile`) the run fine-tunes that model through
        ``--foundation_model``: MACE then takes the architecture (irreps, r_max) from it and
        ignores the preset's.  The model returned is the last stage's best checkpoint on the
        validation set (MACE keeps the lowest validation loss of each loss stage).

        Raises
        ------
        ValueError
            When there are fewer than two labels, a label lacks energy or forces, or has an
            element outside ``type_map``.
        EngineError
            When mace_run_train fails; the message carries the error line of its log.

        """
        workdir = Path(workdir)
        options = write_inputs(labels, type_map, hyperparameters, workdir)
        wall_time = run_mace(options, workdir)
        curve, stage_two_epoch, errors = parse_training(workdir, options)
        model = workdir / f"{NAME}{'_stagetwo' if stage_two_epoch is not None else ''}.model"
        return TrainResult(
            engine=self.name,
            seed=options["seed"],
            type_map=list(type_map),
            hyperparameters=options,
            learning_curve=curve,
            rmse_energy=errors["train"][0],
            rmse_force=errors["train"][1],
            valid_rmse_energy=errors["valid"][0],
            valid_rmse_force=errors["valid"][1],
            stage_two_epoch=stage_two_epoch,
            wall_time=wall_time,
            model_file=ModelFile.from_path(model),
            software=software(("mace-torch", "torch")),
        )


def write_inputs(labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path) -> dict:
    """Write ``train.xyz`` and ``valid.xyz`` (and ``init.model``); return the full run record.

    The record is ``hyperparameters`` with the files and keys filled in: every mace_run_train
    option plus ``valid_fraction``, the ``frame_id`` of each validation label
    (``valid_ids``) and, when fine-tuning, the ``init_model`` path and sha256.  The validation
    labels are those whose ``frame_id`` hashes lowest, so every seed holds out the same frames
    and a frame stays held out as later iterations add labels.  Stress is written only when
    every label has one (the presets' loss does not train on it).  MACE's ``device`` is the
    ``device`` setting of the machine that trains (:func:`ilflows.execute.torch_device`) unless
    the spec's overrides name one.
    """
    if len(labels) < 2:
        raise ValueError("MACE needs at least two converged labels: one to train on, one to validate")
    check_labels(labels, type_map)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in hyperparameters.items() if k not in OWN_KEYS}
    options["device"] = options.get("device") or torch_device()
    fraction = hyperparameters["valid_fraction"]
    ranked = sorted(labels, key=lambda lab: hashlib.sha256(lab.frame_id.encode()).hexdigest())
    n_valid = min(max(1, round(fraction * len(labels))), len(labels) - 1)
    valid = {lab.frame_id for lab in ranked[:n_valid]}
    # MACE drops a last incomplete batch: more frames per batch than training frames leaves none
    n_train = len(labels) - n_valid
    if options.get("batch_size", 10) > n_train:
        options["batch_size"] = n_train
    with_stress = all(label.stress is not None for label in labels)
    _write_extxyz(workdir / "train.xyz", [lab for lab in labels if lab.frame_id not in valid], with_stress)
    _write_extxyz(workdir / "valid.xyz", [lab for lab in labels if lab.frame_id in valid], with_stress)
    options.update(
        name=NAME,
        train_file="train.xyz",
        valid_file="valid.xyz",
        energy_key=ENERGY_KEY,
        forces_key=FORCES_KEY,
        stress_key=STRESS_KEY,
    )
    if not options.get("swa"):
        # MACE names checkpoints from start_swa on "_swa" even without --swa, then cannot find
        # the last plain one when it saves the model.
        options.pop("start_swa", None)
    init = hyperparameters.get("init_model")
    if init is not None:
        init = _init_model(init, workdir)
        # Not a multi-head fine-tune: that needs the parent's own training data (pt_train_file).
        options.update(foundation_model=str(init), multiheads_finetuning=False)
    record = {**options, "valid_fraction": fraction, "valid_ids": sorted(valid)}
    if init is not None:
        record["init_model"] = {"path": str(init), "sha256": ModelFile.from_path(init).sha256}
    (workdir / "options.json").write_text(json.dumps(record, indent=2))
    return record


def _write_extxyz(path: Path, labels: list[DFTLabel], with_stress: bool) -> None:
    """Write labels to extxyz under the explicit keys (energy eV, forces eV/Å, stress eV/Å^3)."""
    frames = []
    for label in labels:
        frame = label.frame
        atoms = Atoms(frame.species, positions=frame.positions, cell=frame.cell, pbc=frame.volume > 0)
        atoms.info[ENERGY_KEY] = label.energy
        atoms.arrays[FORCES_KEY] = np.asarray(label.forces, dtype=float)
        if with_stress:
            # GPa with the pressure sign -> ASE's eV/Å^3, positive when stretched.
            atoms.info[STRESS_KEY] = -np.asarray(label.stress, dtype=float) * units.GPa
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def _init_model(value, workdir: Path) -> Path:
    """Return the model file to fine-tune from: a path, or a ModelFile (or its dump) written out."""
    if isinstance(value, str | Path):
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"init_model {path} is not a file")
        return path
    return ModelFile.model_validate(value).write(workdir / "init.model")


def mace_command(options: dict) -> list[str]:
    """Return the mace_run_train command line of ``options`` (a run record of :func:`write_inputs`).

    True flags become ``--flag``, false ones are left out; None leaves MACE's default; other
    values are passed as ``--key=value`` (lists and dicts in Python syntax, as MACE parses them).
    Record-only keys (``valid_fraction``, ``valid_ids``, ``init_model``) are not options.
    """
    command = [*shlex.split(get_settings().mace_train_cmd)]
    for key, value in options.items():
        if key in (*OWN_KEYS, "valid_ids") or value is None:
            continue
        if key in FLAGS:
            command += [f"--{key}"] if value else []
        else:
            command.append(f"--{key}={value}")
    return command


def run_mace(options: dict, workdir: Path) -> float:
    """Run mace_run_train once in ``workdir``; return its wall time, s.

    Raises
    ------
    EngineError
        When it fails; the message names the error line of ``mace_train.log``.

    """
    require_executable(get_settings().mace_train_cmd, "mace_train_cmd")
    # MACE appends to its results file: output of an earlier run would join the curve.
    for folder in ("results", "logs", "checkpoints"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    try:
        return run_command(mace_command(options), workdir, "mace_train.log")
    except EngineError as err:
        log = (workdir / "mace_train.log").read_text(errors="replace").splitlines()
        raise EngineError(f"mace_run_train failed in {workdir}: {_error_line(log)}") from err


def _error_line(lines: list[str]) -> str:
    """Return the exception line of a Python traceback, else the last non-empty line."""
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    filled = [line for line in lines if line.strip()]
    return (errors or filled or ["(empty log)"])[-1].strip()

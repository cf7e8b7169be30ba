"""DeePMD-kit trainer (TensorFlow backend): npy systems in, frozen ``model.pb`` out.

Units follow DeePMD: energies eV, forces eV/Å, coordinates and boxes Å, virials eV.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ilflows.execute import require_executable, run_command
from ilflows.schemas.records import DFTLabel, LearningCurvePoint, ModelFile, TrainResult
from ilflows.settings import get_settings
from ilflows.software import software
from ilflows.train import TrainSpec, check_labels, deep_merge

# 1 eV/Å^3 in GPa.
EV_PER_A3_IN_GPA = 160.21766208

# Neighbours per type within the tiny preset's 5.5 Å cutoff, from the peer DP-GEN run.
TINY_SEL = {"H": 24, "B": 2, "C": 12, "N": 2, "F": 6}

# The peer DP-GEN set-up that ran here: 4 models of 400 steps in about a minute.
TINY: dict = {
    "model": {
        "descriptor": {
            "type": "se_e2_a",
            "sel": "auto",
            "rcut_smth": 1.0,
            "rcut": 5.5,
            "neuron": [8, 16],
            "axis_neuron": 4,
            "resnet_dt": False,
        },
        "fitting_net": {"neuron": [32, 32], "resnet_dt": True},
    },
    "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 50},
    "loss": {
        "type": "ener",
        "start_pref_e": 0.02,
        "limit_pref_e": 1,
        "start_pref_f": 1000,
        "limit_pref_f": 1,
        "start_pref_v": 0,
        "limit_pref_v": 0,
    },
    "training": {
        "numb_steps": 400,
        "disp_file": "lcurve.out",
        "disp_freq": 50,
        "save_freq": 400,
        "training_data": {"systems": [], "batch_size": "auto"},
    },
}

PRESETS: dict[str, dict] = {
    "tiny": TINY,
    # Paper 1's production set. axis_neuron 16 is DeePMD's usual choice for these widths;
    # DeePMD derives the exp decay rate so that the rate reaches stop_lr at numb_steps.
    "paper": deep_merge(
        TINY,
        {
            "model": {
                "descriptor": {
                    "rcut_smth": 0.5,
                    "rcut": 10.0,
                    "neuron": [25, 50, 100],
                    "axis_neuron": 16,
                },
                "fitting_net": {"neuron": [240, 240, 240]},
            },
            "learning_rate": {"stop_lr": 3.5e-8, "decay_steps": 5000},
            "loss": {"start_pref_v": 0.02, "limit_pref_v": 1},
            "training": {"numb_steps": 2_000_000, "disp_freq": 1000, "save_freq": 10000},
        },
    ),
}


class DeepmdSpec(TrainSpec):
    """A ``train:`` entry of trainer deepmd: DeePMD-kit se_e2_a on its TensorFlow backend."""

    engine: Literal["deepmd"] = Field("deepmd", description="DeePMD-kit se_e2_a.")
    preset: Literal["tiny", "paper"] = Field(
        "tiny", description="'tiny' (tests, a few steps) or 'paper' (paper 1's production set)."
    )


class DeepmdTrainer:
    """Train one DeePMD-kit model per call: ``write_inputs``, ``run_dp``, ``parse_lcurve``."""

    name = "deepmd"
    section = DeepmdSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return the ``dp`` command and its settings field."""
        return [(get_settings().dp_cmd, "dp_cmd")]

    def hyperparameters(self, spec: DeepmdSpec, type_map: list[str], seed: int) -> dict:
        """Return the DeePMD input of ``spec.preset`` with ``spec.overrides`` merged, seeded.

        The tiny preset's ``sel`` takes the peer's numbers when every element of ``type_map``
        has one, else ``"auto"`` (DeePMD counts neighbours in the training data); a sel list
        cannot mix numbers and ``"auto"``.  The seed goes to descriptor, fitting net and
        training, after the overrides, so that ensemble members always differ.
        """
        params = deep_merge(PRESETS[spec.preset], {"model": {"type_map": list(type_map)}})
        if spec.preset == "tiny" and all(el in TINY_SEL for el in type_map):
            params["model"]["descriptor"]["sel"] = [TINY_SEL[el] for el in type_map]
        params = deep_merge(params, spec.overrides)
        params["model"]["descriptor"]["seed"] = seed
        params["model"]["fitting_net"]["seed"] = seed
        params["training"]["seed"] = seed
        return params

    def train(
        self, labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path
    ) -> TrainResult:
        """Train and freeze one model in ``workdir`` on converged ``labels``.

        Raises
        ------
        ValueError
            When ``labels`` is empty or a label lacks energy or forces.

        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        params = write_inputs(labels, type_map, hyperparameters, workdir)
        wall_time = run_dp(workdir)
        curve = parse_lcurve(workdir / params["training"]["disp_file"])
        return TrainResult(
            engine=self.name,
            seed=params["training"]["seed"],
            type_map=list(type_map),
            hyperparameters=params,
            learning_curve=curve,
            rmse_energy=curve[-1].rmse_energy,
            rmse_force=curve[-1].rmse_force,
            wall_time=wall_time,
            model_file=ModelFile.from_path(workdir / "model.pb"),
            software=software(("deepmd-kit", "tensorflow", "tensorflow-cpu")),
        )


def write_inputs(labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path) -> dict:
    """Write one npy system per distinct species sequence and ``input.json``; return the input.

    Virials are written, and the virial loss kept, only when every label has a stress;
    otherwise the virial prefactors are set to 0 so DeePMD does not train on missing data.
    """
    if not labels:
        raise ValueError("no labels to train on: at least one converged DFT label is needed")
    check_labels(labels, type_map)
    with_virial = all(label.stress is not None for label in labels)
    groups: dict[tuple[str, ...], list[DFTLabel]] = {}
    for label in labels:
        groups.setdefault(tuple(label.frame.species), []).append(label)
    systems = []
    for index, (species, group) in enumerate(groups.items()):
        system = Path("data") / f"sys{index:03d}"
        _write_system(workdir / system, species, group, type_map, with_virial)
        systems.append(str(system))
    params = deep_merge(hyperparameters, {"training": {"training_data": {"systems": systems}}})
    params["model"]["type_map"] = list(type_map)
    if not with_virial:
        params["loss"].update(start_pref_v=0, limit_pref_v=0)
    (workdir / "input.json").write_text(json.dumps(params, indent=2))
    return params


def _write_system(
    folder: Path,
    species: tuple[str, ...],
    labels: list[DFTLabel],
    type_map: list[str],
    with_virial: bool,
) -> None:
    """Write one DeePMD npy system (``set.000``) of frames sharing ``species``."""
    sets = folder / "set.000"
    sets.mkdir(parents=True, exist_ok=True)
    (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (folder / "type.raw").write_text("\n".join(str(type_map.index(el)) for el in species) + "\n")
    n = len(labels)
    cells = np.array([label.frame.cell for label in labels], dtype=float)
    arrays = {
        "box": cells.reshape(n, 9),
        "coord": np.array([label.frame.positions for label in labels]).reshape(n, -1),
        "energy": np.array([label.energy for label in labels], dtype=float),
        "force": np.array([label.forces for label in labels]).reshape(n, -1),
    }
    if with_virial:
        # DeePMD's virial is -V * (ASE's tensile-positive stress): our pressure-sign stress times V.
        stress = np.array([label.stress for label in labels], dtype=float)
        volumes = np.abs(np.linalg.det(cells))
        arrays["virial"] = (stress * volumes[:, None, None] / EV_PER_A3_IN_GPA).reshape(n, 9)
    for name, array in arrays.items():
        np.save(sets / f"{name}.npy", array)


def run_dp(workdir: Path) -> float:
    """Run ``dp --tf train`` then ``dp --tf freeze`` in ``workdir``; return their wall time, s."""
    dp = get_settings().dp_cmd
    require_executable(dp, "dp_cmd")
    dp_tf = [*shlex.split(dp), "--tf"]
    wall = run_command([*dp_tf, "train", "input.json"], workdir, "dp_train.log")
    return wall + run_command([*dp_tf, "freeze", "-o", "model.pb"], workdir, "dp_freeze.log")


def parse_lcurve(path: Path) -> list[LearningCurvePoint]:
    """Read the training columns of a TensorFlow ``lcurve.out``.

    ``rmse_e_trn`` is already per atom there: the RMSE of the total energy divided by the
    number of atoms, eV/atom; ``rmse_f_trn`` is the force component RMSE, eV/Å.

    Raises
    ------
    ValueError
        When the file has no header or no data lines.

    """
    lines = Path(path).read_text().splitlines()
    header = lines[0].lstrip("#").split() if lines else []
    rows = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    names = ("step", "rmse_e_trn", "rmse_f_trn", "lr")
    if not rows or not set(names) <= set(header):
        raise ValueError(f"{path}: no learning curve found (header or data lines missing)")
    col = {name: header.index(name) for name in names}
    return [
        LearningCurvePoint(
            step=int(row[col["step"]]),
            rmse_energy=float(row[col["rmse_e_trn"]]),
            rmse_force=float(row[col["rmse_f_trn"]]),
            learning_rate=float(row[col["lr"]]),
        )
        for row in rows
    ]

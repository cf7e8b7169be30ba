"""Energy and force errors of a committee on DFT labels (paper 1's validation), and its calibration.

:func:`predict` evaluates every member on every label (the only part that needs the models);
the rest is pure: :func:`parity` and :func:`error_metrics` give per member and for the
ensemble mean, on the EQ frames, the nEQ frames and all of them, RMSE and MAE of the energy
per atom and of the force components, and :func:`calibration` sets each frame's committee
deviation beside its true force error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ilflows.schemas import Calibration, DFTLabel, ErrorMetrics, Parity
from ilflows.select import max_force_deviation


def predict(model_paths: Sequence[Path], labels: Sequence[DFTLabel]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each member's energy (n_models, n_frames), eV, and forces (one (n_models, n_atoms, 3) per frame)."""
    from ilflows.execute import torch_threads
    from ilflows.explore.committee import CommitteeCalculator

    calc = CommitteeCalculator(model_paths, drive="mean")
    energies, forces = [], []
    with torch_threads():
        for label in labels:
            calc.calculate(label.frame.to_ase(), ["energies_comm", "forces_comm"])
            energies.append(calc.results["energies_comm"])
            forces.append(calc.results["forces_comm"])
    return np.array(energies).T.reshape(len(model_paths), len(labels)), forces


def parity(
    labels: Sequence[DFTLabel], members: Sequence[int], energies: np.ndarray, forces: list[np.ndarray]
) -> Parity:
    """Collect reference and predicted values per frame: a prediction row per member, then the mean."""
    n_atoms = np.array([label.frame.n_atoms for label in labels])
    e_pred = energies / n_atoms
    f_pred = np.concatenate([f.reshape(len(members), -1) for f in forces], axis=1)
    return Parity(
        frame_ids=[label.frame_id for label in labels],
        equilibrated=[label.origin.equilibrated for label in labels],
        n_atoms=n_atoms.tolist(),
        models=[f"m{k}" for k in members] + ["mean"],
        energy_ref=[label.energy / n for label, n in zip(labels, n_atoms, strict=True)],
        energy_pred=np.vstack([e_pred, e_pred.mean(axis=0)]).tolist(),
        force_ref=np.concatenate([np.ravel(label.forces) for label in labels]).tolist(),
        force_pred=np.vstack([f_pred, f_pred.mean(axis=0)]).tolist(),
    )


def error_metrics(data: Parity, label_set: str = "validation") -> list[ErrorMetrics]:
    """RMSE and MAE of every prediction row on the EQ, nEQ and all frames (empty subsets left out)."""
    e_ref = np.asarray(data.energy_ref)
    f_ref = np.asarray(data.force_ref)
    frame_of_component = np.repeat(np.arange(len(e_ref)), 3 * np.asarray(data.n_atoms))
    eq = np.array(data.equilibrated, dtype=bool)
    out = []
    for subset, frames in (("EQ", eq), ("nEQ", ~eq), ("all", np.ones_like(eq))):
        if not frames.any():
            continue
        components = frames[frame_of_component]
        for name, e_pred, f_pred in zip(data.models, data.energy_pred, data.force_pred, strict=True):
            de = np.asarray(e_pred)[frames] - e_ref[frames]
            df = np.asarray(f_pred)[components] - f_ref[components]
            out.append(
                ErrorMetrics(
                    label_set=label_set,
                    model=name,
                    subset=subset,
                    n_frames=int(frames.sum()),
                    energy_rmse=float(np.sqrt(np.mean(de**2))),
                    energy_mae=float(np.mean(np.abs(de))),
                    force_rmse=float(np.sqrt(np.mean(df**2))),
                    force_mae=float(np.mean(np.abs(df))),
                )
            )
    return out


def deviations(forces: list[np.ndarray]) -> np.ndarray:
    """Committee max force deviation of each frame (``max_force_deviation``), eV/Å.

    ``forces``: one (n_models, n_atoms, 3) array per frame, as :func:`predict` returns them.
    """
    return np.array([max_force_deviation(f[:, None])[0] for f in forces])


def calibration(labels: Sequence[DFTLabel], forces: list[np.ndarray]) -> Calibration:
    """Each frame's committee deviation beside the true error of the ensemble mean's forces, eV/Å."""
    errors = [
        float(np.linalg.norm(f.mean(axis=0) - np.asarray(label.forces), axis=1).max())
        for label, f in zip(labels, forces, strict=True)
    ]
    return Calibration(
        frame_ids=[label.frame_id for label in labels], deviation=deviations(forces).tolist(), error=errors
    )

"""Reading a ``mace_run_train`` run: its learning curve, loss-stage switch and final error table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ilflows.schemas.records import LearningCurvePoint


def parse_training(workdir: Path, options: dict) -> tuple[list[LearningCurvePoint], int | None, dict]:
    """Read one run's learning curve, loss-stage switch and final errors.

    The curve has one point per epoch from MACE's ``results/<tag>_train.txt`` (JSON lines):
    the training loss averaged over the epoch's batches, and the validation loss and RMSEs
    (eV/atom, eV/Å) of that epoch's evaluation; MACE does not report training RMSEs per epoch.
    The switch epoch comes from ``logs/<tag>.log``: the first epoch evaluated after MACE logs
    "Changing loss based on Stage Two Weights".  The final errors are those of the last
    error table of that log (the returned model on the train and validation sets, 0.1 meV
    resolution).

    Returns
    -------
    tuple
        Curve points; the first stage-two epoch (None: no switch); ``{"train": (eV/atom,
        eV/Å), "valid": (eV/atom, eV/Å)}``.

    Raises
    ------
    ValueError
        When the results file has no epoch or the log no PerAtomRMSE error table.

    """
    tag = f"{options['name']}_run-{options['seed']}"
    results = workdir / "results" / f"{tag}_train.txt"
    entries = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    losses: dict[int, list[float]] = {}
    evals: dict[int, dict] = {}
    for entry in entries:
        if entry["mode"] == "opt":
            losses.setdefault(entry["epoch"], []).append(entry["loss"])
        elif entry["mode"] == "eval" and entry["epoch"] is not None:  # None: before training
            evals[entry["epoch"]] = entry
    if not losses:
        raise ValueError(f"{results}: no training epoch found")
    log = (workdir / "logs" / f"{tag}.log").read_text().splitlines()
    stage_two_epoch = _stage_two_epoch(log)
    curve = []
    for epoch in sorted(losses):
        second = stage_two_epoch is not None and epoch >= stage_two_epoch
        valid = evals.get(epoch, {})
        curve.append(
            LearningCurvePoint(
                step=epoch,
                loss=float(np.mean(losses[epoch])),
                valid_loss=valid.get("loss"),
                valid_rmse_energy=valid.get("rmse_e_per_atom"),
                valid_rmse_force=valid.get("rmse_f"),
                energy_weight=options["swa_energy_weight" if second else "energy_weight"],
                force_weight=options["swa_forces_weight" if second else "forces_weight"],
            )
        )
    return curve, stage_two_epoch, _error_table(log, workdir)


def _stage_two_epoch(log: list[str]) -> int | None:
    """Return the first epoch evaluated after the stage-two message, None when there is none."""
    for i, line in enumerate(log):
        if "Changing loss based on Stage Two Weights" in line:
            for later in log[i + 1 :]:
                if match := re.search(r"INFO: Epoch (\d+):", later):
                    return int(match.group(1))
    return None


def _error_table(log: list[str], workdir: Path) -> dict[str, tuple[float, float]]:
    """Read the last "TRAIN and VALID" error table: RMSE of energy (eV/atom) and force (eV/Å)."""
    starts = [i for i, line in enumerate(log) if "Error-table on TRAIN and VALID" in line]
    if not starts:
        raise ValueError(f"{workdir}: no error table in the MACE log")
    rows = []
    for line in log[starts[-1] + 1 :]:
        if not line.startswith(("+", "|")):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header = rows[0] if rows else []
    if "RMSE E / meV / atom" not in header or "RMSE F / meV / A" not in header:
        raise ValueError(f"{workdir}: MACE's error table has no per-atom RMSE (set error_table PerAtomRMSE)")
    e_col, f_col = header.index("RMSE E / meV / atom"), header.index("RMSE F / meV / A")
    table = {}
    for row in rows[1:]:
        name = row[0].split("_")[0]
        if name in ("train", "valid") and name not in table:
            table[name] = (float(row[e_col]) / 1000, float(row[f_col]) / 1000)
    return table

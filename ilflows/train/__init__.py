"""Seam 2: ensemble trainers. Each engine turns labelled frames into one frozen model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Protocol

from ilflows.registry import instantiate
from ilflows.schemas.campaign import TrainSpec
from ilflows.schemas.records import DFTLabel, TrainResult

# Imported on demand so that choosing one engine never imports another's heavy stack.
TRAINERS = {"deepmd": "ilflows.train.deepmd:DeepmdTrainer", "mace": "ilflows.train.mace:MaceTrainer"}


class Trainer(Protocol):
    """What the training job needs from an engine."""

    name: str

    def executables(self) -> list[tuple[str, str]]:
        """Return (command, settings field) pairs of the programs :meth:`train` runs."""
        ...

    def hyperparameters(self, spec: TrainSpec, type_map: list[str], seed: int) -> dict:
        """Return the engine input: ``spec.preset`` deep-merged with ``spec.overrides``, seeded."""
        ...

    def train(
        self, labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path
    ) -> TrainResult:
        """Train one model in ``workdir`` (seed taken from ``hyperparameters``)."""
        ...


def get_trainer(name: str) -> Trainer:
    """Return a trainer instance by engine name.

    Raises
    ------
    ValueError
        When ``name`` is not a known trainer; the message lists the known ones.

    """
    return instantiate(TRAINERS, name, "trainer")


def check_labels(labels: list[DFTLabel], type_map: list[str]) -> None:
    """Raise a one-line :class:`ValueError` for a label a trainer cannot use.

    Every label needs an energy and forces, and only elements of ``type_map``.
    """
    for label in labels:
        if label.energy is None or label.forces is None:
            raise ValueError(f"label {label.frame_id} has no energy or forces; skip it before training")
        unknown = set(label.frame.species) - set(type_map)
        if unknown:
            raise ValueError(f"label {label.frame_id}: elements {sorted(unknown)} not in type_map {type_map}")


def deep_merge(base: dict, overrides: dict) -> dict:
    """Return a copy of ``base`` with ``overrides`` merged in, nested dicts key by key.

    A non-dict override value (lists included) replaces the base value whole.
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged

"""Seam 2: ensemble trainers. Each engine turns labelled frames into one frozen model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
from pydantic import Field

from ilflows.registry import Registry
from ilflows.schemas.records import DFTLabel, ModelFile, TrainResult
from ilflows.schemas.section import EngineSection

# Imported on demand so that choosing one engine never imports another's heavy stack.
TRAINERS = Registry(
    "trainer",
    default="deepmd",
    table={"deepmd": "ilflows.train.deepmd:DeepmdTrainer", "mace": "ilflows.train.mace:MaceTrainer"},
)


class TrainSpec(EngineSection):
    """One ``train:`` entry: a model family of the ensemble, its members differing only by seed.

    Each trainer adds its own settings and presets.
    """

    default_engine: ClassVar[str] = TRAINERS.default

    engine: str = Field(description="Trainer, a name of ilflows.train.TRAINERS.")
    preset: str = Field(description="Hyperparameter preset (each trainer lists its own).")
    n_models: int = Field(4, ge=1, description="Members of this family; they differ only by seed.")
    seed: int = Field(1, description="Seed of member 0; member i uses seed + i.")
    overrides: dict = Field(
        default_factory=dict, description="Nested keys merged into the preset's trainer input."
    )

    @property
    def continues(self) -> bool:
        """From iteration 1 on, each member starts from its own model of the previous iteration."""
        return False

    def from_parent(self, hyperparameters: dict, parent: ModelFile) -> dict:
        """Return the input of a member that starts from ``parent``: named as ``init_model``."""
        return {**hyperparameters, "init_model": parent}


class Member(Protocol):
    """A trained model as a committee member (what :func:`model_reader`'s readers return)."""

    def terms(self, atoms, periodic: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (eV/Å) and 3x3 stress (eV/Å^3, ASE's sign; None without a cell)."""
        ...


class Trainer(Protocol):
    """What the training job needs from an engine."""

    name: str
    section: type[TrainSpec]

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
    return TRAINERS.get(name)


def model_reader(suffix: str) -> Callable[[Path], Member]:
    """Return the reader of model files ending in ``suffix``, from the trainer that writes them.

    That is the ``read_model`` of the trainer whose ``model_suffix`` it is (committees load
    DeePMD ``.pb`` and MACE ``.model`` files themselves).

    Raises
    ------
    ValueError
        When no registered trainer writes such files.

    """
    for name in TRAINERS.names():
        trainer = TRAINERS.engine_class(name)
        if getattr(trainer, "model_suffix", None) == suffix:
            return trainer.read_model
    raise ValueError(f"no trainer writes {suffix!r} model files (trainers: {', '.join(TRAINERS.names())})")


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

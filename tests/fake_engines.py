"""Fake engines of each seam, for fast tests of the loop, the queue and the command line.

They go through the same registries, spec sections, records and queue as the real ones, in
milliseconds, with physics simple enough to check by hand:

- ``pair-dft`` labels with an analytic potential: per-element energies plus a Gaussian
  repulsion ``A_ab exp(-r^2 / (2 w^2))`` between every pair within ``CUTOFF`` (``w`` =
  ``LABEL_WIDTH``), with its exact forces and stress;
- ``pair-fit`` trains a model of the same form on other widths (``FIT_WIDTHS``, so the labels
  are never fitted exactly, each member's 2 % apart) by least squares on energies and forces,
  each member on a bootstrap resample of the labels (its seed), so the members disagree less
  as labels grow;
- ``rattle-walk`` explores without dynamics: a seeded random walk of the atoms from the start
  frame (steps of ``RATTLE`` Å times sqrt(T / 300 K)), each recorded frame scored by the
  committee (max force deviation, energy and virial deviations).

``FAKE_ENGINES_FAIL=dft,train,explore`` makes the named ones fail, as a crashing program would:
a failed label, a training or an exploration raising :class:`~ilflows.execute.EngineError`;
``FAKE_LABEL_SECONDS`` makes each label take that long, so that a test can stop a worker during one.

``register()`` adds them to the registries; a process that cannot call it (an ``ilflows``
command, its workers) gets them from the ``plugins`` setting: ``ILFLOWS_PLUGINS=fake_engines``
with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from ase.units import GPa
from pydantic import Field

from ilflows.dft import ENGINES, DFTSpec, finish_label
from ilflows.execute import EngineError
from ilflows.explore import EXPLORERS, ExploreSpec
from ilflows.schemas.frames import Frame
from ilflows.schemas.records import (
    DFTLabel,
    DFTResult,
    LearningCurvePoint,
    MDResult,
    ModelFile,
    TrainResult,
    Trajectory,
)
from ilflows.select import energy_deviation as energy_spread
from ilflows.select import force_deviations, virial_deviation
from ilflows.software import software
from ilflows.train import TRAINERS, TrainSpec, check_labels, model_reader

CUTOFF = 4.0  # Å
LABEL_WIDTH = 0.9  # Å, the labels' Gaussian
FIT_WIDTHS = (0.6, 1.4)  # Å, the model's Gaussians: the label width is not among them
RATTLE = 0.01  # Å per recorded frame at 300 K


def failing(seam: str) -> bool:
    """Whether FAKE_ENGINES_FAIL names ``seam``."""
    return seam in os.environ.get("FAKE_ENGINES_FAIL", "").split(",")


def pair_kind(a: str, b: str) -> str:
    """Name of an unordered element pair, e.g. 'B-F'."""
    return "-".join(sorted((a, b)))


def label_amplitude(kind: str) -> float:
    """The labels' repulsion of an element pair, eV: 0.1-0.4, set by the atomic numbers."""
    za, zb = (atomic_numbers[s] for s in kind.split("-"))
    return 0.1 + 0.05 * ((za + zb) % 7)


def _pairs(atoms: Atoms, widths) -> tuple:
    """Every ordered pair (i, j) within CUTOFF: i, j, their kinds, D = r_j - r_i, |D|, g, dg/dr."""
    i, j, d, vectors = neighbor_list("ijdD", atoms, CUTOFF)
    symbols = atoms.get_chemical_symbols()
    kinds = np.array([pair_kind(symbols[a], symbols[b]) for a, b in zip(i, j, strict=True)], dtype=object)
    w = np.asarray(widths, dtype=float)
    g = np.exp(-(d[:, None] ** 2) / (2 * w**2))
    return i, kinds, vectors, d, g, -g * d[:, None] / w**2


def pair_terms(atoms: Atoms, e0: dict, amplitudes: dict, widths) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (eV/Å) and 3x3 stress (eV/Å^3, ASE's sign) of a Gaussian pair potential.

    E = sum_i e0[s_i] + 1/2 sum_{i != j} sum_k A_k(kind_ij) g_k(r_ij); ``amplitudes``: kind -> A_k.
    """
    i, kinds, vectors, d, g, dg = _pairs(atoms, widths)
    a = np.array([amplitudes[kind] for kind in kinds], dtype=float).reshape(len(kinds), len(widths))
    energy = sum(e0[s] for s in atoms.get_chemical_symbols()) + 0.5 * float((a * g).sum())
    slope = (a * dg).sum(axis=1) / np.where(d > 0, d, 1.0)  # phi'(r) / r
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, i, slope[:, None] * vectors)
    stress = 0.5 * np.einsum("p,pa,pb->ab", slope, vectors, vectors) / atoms.get_volume()
    return energy, forces, stress


class PairDftSpec(DFTSpec):
    """``dft:`` of engine pair-dft (tests): no settings but the common ones."""

    engine: Literal["pair-dft"] = Field("pair-dft", description="Analytic Gaussian pair labels.")


class PairDft:
    """Labels from the analytic pair potential (no program is run)."""

    name = "pair-dft"
    section = PairDftSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return no programs."""
        return []

    def label(self, frame: Frame, spec: PairDftSpec, workdir: Path) -> DFTResult:
        """Label ``frame``: energy, forces and (with ``spec.stress``) stress in GPa, pressure sign."""
        start = time.perf_counter()
        time.sleep(float(os.environ.get("FAKE_LABEL_SECONDS", 0)))
        atoms = frame.to_ase()
        elements = set(frame.species)
        kinds = {pair_kind(a, b) for a in elements for b in elements}
        e0 = {s: -float(atomic_numbers[s]) for s in elements}
        energy, forces, stress = pair_terms(
            atoms, e0, {k: [label_amplitude(k)] for k in kinds}, [LABEL_WIDTH]
        )
        parsed = SimpleNamespace(
            energy=energy, forces=forces, stress=-stress / GPa if spec.stress else None, version="1"
        )
        parameters = {"width": LABEL_WIDTH, "cutoff": CUTOFF}
        error = "fake SCF failure (FAKE_ENGINES_FAIL)" if failing("dft") else None
        return finish_label(self.name, parameters, frame, spec, time.perf_counter() - start, parsed, error)


class PairFitSpec(TrainSpec):
    """A ``train:`` entry of trainer pair-fit (tests)."""

    engine: Literal["pair-fit"] = Field("pair-fit", description="Least-squares Gaussian pair model.")
    preset: Literal["tiny"] = Field("tiny", description="The one preset.")


class PairModel:
    """A trained pair model as a committee member."""

    def __init__(self, path: Path):
        model = json.loads(Path(path).read_text())
        self.e0, self.amplitudes, self.widths = model["e0"], model["amplitudes"], model["widths"]

    def terms(self, atoms: Atoms, periodic: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (eV/Å), stress (eV/Å^3, ASE's sign; None without a cell)."""
        energy, forces, stress = pair_terms(atoms, self.e0, self.amplitudes, self.widths)
        return energy, forces, stress if periodic else None


class PairFit:
    """Fit the pair model to energies and forces by linear least squares (no program is run)."""

    name = "pair-fit"
    section = PairFitSpec
    model_suffix = ".pairfit"
    read_model = PairModel

    def executables(self) -> list[tuple[str, str]]:
        """Return no programs."""
        return []

    def hyperparameters(self, spec: PairFitSpec, type_map: list[str], seed: int) -> dict:
        """Return the fit's widths and ridge, ``spec.overrides`` on top, and the seed."""
        return {"widths": list(FIT_WIDTHS), "ridge": 1e-8, **spec.overrides, "seed": seed}

    def train(
        self, labels: list[DFTLabel], type_map: list[str], hyperparameters: dict, workdir: Path
    ) -> TrainResult:
        """Fit one member on a bootstrap resample of ``labels`` (seeded) and write its model file."""
        if failing("train"):
            raise EngineError("fake trainer crashed (FAKE_ENGINES_FAIL)")
        check_labels(labels, type_map)
        start = time.perf_counter()
        kinds = sorted({pair_kind(a, b) for a in type_map for b in type_map})
        rng = np.random.default_rng(hyperparameters["seed"])
        # 2 % apart, as a network's initial weights: members differ even on the same resample
        widths = [w * (1 + 0.02 * rng.standard_normal()) for w in hyperparameters["widths"]]
        chosen = [labels[k] for k in rng.integers(len(labels), size=len(labels))]
        rows, targets = zip(*(self._rows(label, type_map, kinds, widths) for label in chosen), strict=True)
        x, y = np.vstack(rows), np.concatenate(targets)
        ridge = np.sqrt(hyperparameters["ridge"]) * np.eye(x.shape[1])
        theta = np.linalg.lstsq(np.vstack([x, ridge]), np.concatenate([y, np.zeros(x.shape[1])]), rcond=None)[
            0
        ]
        n_el = len(type_map)
        model = {
            "type_map": list(type_map),
            "widths": list(widths),
            "e0": dict(zip(type_map, theta[:n_el].tolist(), strict=True)),
            "amplitudes": {
                kind: theta[n_el + k * len(widths) : n_el + (k + 1) * len(widths)].tolist()
                for k, kind in enumerate(kinds)
            },
        }
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"model{self.model_suffix}"
        path.write_text(json.dumps(model))
        member = PairModel(path)
        errors_e, errors_f = [], []
        for label in chosen:
            energy, forces, _ = member.terms(label.frame.to_ase(), True)
            errors_e.append((energy - label.energy) / label.frame.n_atoms)
            errors_f.append(np.ravel(forces - np.asarray(label.forces)))
        rmse_e = float(np.sqrt(np.mean(np.square(errors_e))))
        rmse_f = float(np.sqrt(np.mean(np.square(np.concatenate(errors_f)))))
        return TrainResult(
            engine=self.name,
            seed=hyperparameters["seed"],
            type_map=list(type_map),
            hyperparameters=hyperparameters,
            learning_curve=[LearningCurvePoint(step=0, rmse_energy=rmse_e, rmse_force=rmse_f)],
            rmse_energy=rmse_e,
            rmse_force=rmse_f,
            wall_time=time.perf_counter() - start,
            model_file=ModelFile.from_path(path),
            software=software(("numpy",)),
        )

    @staticmethod
    def _rows(
        label: DFTLabel, type_map: list[str], kinds: list[str], widths
    ) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares rows of one label: its energy per atom, then every force component."""
        atoms = label.frame.to_ase()
        n, n_el, n_w = len(atoms), len(type_map), len(widths)
        i, pair_kinds, vectors, d, g, dg = _pairs(atoms, widths)
        first = {kind: n_el + k * n_w for k, kind in enumerate(kinds)}
        cols = np.array([first[kind] for kind in pair_kinds], dtype=int)[:, None] + np.arange(n_w)
        energy_row = np.zeros(n_el + len(kinds) * n_w)
        np.add.at(energy_row, [type_map.index(s) for s in atoms.get_chemical_symbols()], 1.0)
        np.add.at(energy_row, cols, 0.5 * g)
        force_rows = np.zeros((n, 3, energy_row.size))
        slope = dg / np.where(d > 0, d, 1.0)[:, None]
        np.add.at(
            force_rows,
            (i[:, None, None], np.arange(3)[None, :, None], cols[:, None, :]),
            vectors[:, :, None] * slope[:, None, :],
        )
        rows = np.vstack([energy_row / n, force_rows.reshape(3 * n, -1)])
        return rows, np.concatenate([[label.energy / n], np.ravel(label.forces)])


class RattleWalkSpec(ExploreSpec):
    """``explore:`` with the rattle walk (tests): any model family, no D3, no modifiers."""

    engine: Literal["rattle-walk"] = Field("rattle-walk", description="Seeded random walk of the atoms.")


class RattleWalk:
    """Explore by a seeded random walk of the atoms, each recorded frame scored by the committee."""

    name = "rattle-walk"
    section = RattleWalkSpec

    def executables(self) -> list[tuple[str, str]]:
        """Return no programs."""
        return []

    def explore(
        self,
        models: list[ModelFile],
        start: Frame,
        type_map: list[str],
        spec: RattleWalkSpec,
        seed: int,
        workdir: Path,
        dispersion=None,
        energy_deviation: bool = False,
    ) -> MDResult:
        """Walk ``spec.n_steps // spec.frame_every`` recorded frames from ``start``."""
        if failing("explore"):
            raise EngineError("fake explorer crashed (FAKE_ENGINES_FAIL)")
        t0 = time.perf_counter()
        workdir.mkdir(parents=True, exist_ok=True)
        members = [
            model_reader(Path(m.name).suffix)(m.write(workdir / f"model.{k:03d}{Path(m.name).suffix}"))
            for k, m in enumerate(models)
        ]
        rng = np.random.default_rng(seed)
        atoms = start.to_ase()
        step, n = RATTLE * np.sqrt(spec.temperature / 300.0), len(atoms)
        steps, positions, cells, forces_dev, energies_dev, virials_dev = [], [], [], [], [], []
        for record in range(spec.n_steps // spec.frame_every + 1):
            if record:
                atoms.positions += rng.normal(0.0, step, atoms.positions.shape)
            terms = [member.terms(atoms, True) for member in members]
            steps.append(record * spec.frame_every)
            positions.append(atoms.get_positions(wrap=True).tolist())
            cells.append(atoms.cell.array.tolist())
            forces_dev.append(force_deviations(np.stack([t[1] for t in terms]))[0])
            energies_dev.append(energy_spread(np.array([t[0] for t in terms]), n))
            virials = np.stack([-t[2] * atoms.get_volume() for t in terms])
            virials_dev.append(virial_deviation(virials, n)[0])
        trajectory = Trajectory(species=list(start.species), steps=steps, positions=positions, cells=cells)
        return MDResult.of_run(
            self.name,
            spec,
            {"seed": seed, "rattle": step, "models": [m.sha256 for m in models]},
            trajectory,
            deviations=forces_dev,
            energy_deviations=energies_dev,
            virial_deviations=virials_dev,
            wall_time=time.perf_counter() - t0,
            stopped_at=None,
            software=software(("numpy",)),
        )


def register() -> None:
    """Add the fake engines to the registries."""
    ENGINES.register(PairDft.name, f"{__name__}:PairDft")
    TRAINERS.register(PairFit.name, f"{__name__}:PairFit")
    EXPLORERS.register(RattleWalk.name, f"{__name__}:RattleWalk")


register()  # on import: ILFLOWS_PLUGINS=fake_engines

"""MACE committee MD against N separate MACECalculators, printed as measured figures.

Models: N random-weight ScaleShiftMACE members of the paper's size (16x0e+16x1o, r_max 6 Å,
two interaction layers, correlation 3, l_max 3), float64 on the CPU.  Box: 10 PYR14 BF4 pairs
packed by Packmol at paper 1's density, or without Packmol the first EAN frame of
``shared/reference-data``.

1. One committee evaluation per frame (all N members), on the same rattled frames:
   N separate ``mace.calculators.MACECalculator`` against
   :class:`~ilflows.explore.committee.CommitteeCalculator` (one graph shared by the members),
   and the largest difference of their max force deviations.  Target: equal to 1e-8 eV/Å.
2. MD steps per second (Bussi NVT, driven by member 0, deviation every ``frame_every`` steps):
   N separate calculators evaluated on every step against the committee, which evaluates
   members 1..N-1 only on recorded steps as ``pair_style deepmd`` does; both runs follow the
   same trajectory, so their deviations are compared too.  Target: >= 1.5x for N = 4.

Run: ``.venv/bin/python benchmarks/mace_committee.py [--members 4] [--frames 3] [--steps 10]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.io import read  # noqa: E402
from ase.md.bussi import Bussi  # noqa: E402
from ase.md.velocitydistribution import Stationary, thermalize_momenta  # noqa: E402
from mace.calculators import MACECalculator  # noqa: E402
from mace_models import write_committee  # noqa: E402

from ilflows.explore.committee import CommitteeCalculator  # noqa: E402
from ilflows.select import max_force_deviation  # noqa: E402

EAN_FRAMES = ROOT.parent / "shared/reference-data/EAN_neuralil_validation_75frames.extxyz"


def box(workdir: Path) -> tuple[Atoms, str]:
    """A realistic periodic box and where it comes from."""
    from ilflows.execute import EngineError
    from ilflows.systems import LIQUIDS, PackingError, pack_box

    liquid = LIQUIDS["PYR14BF4"]
    try:
        frame = pack_box(liquid.system(), liquid.density, seed=1, workdir=workdir / "pack")
        source = f"PYR14BF4, 10 pairs packed by Packmol at {liquid.density} g/cm^3"
    except (EngineError, PackingError) as err:
        return read(EAN_FRAMES, index=0), f"EAN frame 0 of {EAN_FRAMES.name} (no Packmol box: {err})"
    return Atoms(frame.species, positions=frame.positions, cell=frame.cell, pbc=True), source


def separate_calculators(paths: list[Path]) -> list[MACECalculator]:
    """One MACECalculator per member, as a user of mace-torch would attach them."""
    return [MACECalculator(model_paths=str(p), device="cpu", default_dtype="float64") for p in paths]


def per_frame(paths: list[Path], frames: list[Atoms]) -> tuple[float, float, float]:
    """Median seconds per frame of N separate calculators and of the committee; max |deviation diff|.

    The two are timed alternately on each frame so that load from other processes falls on both.
    """
    separate, committee = separate_calculators(paths), CommitteeCalculator(paths)
    for calc in separate:  # the first call of a model sets up e3nn's code: not timed
        calc.calculate(frames[0].copy(), ["energy", "forces", "stress"])
    committee.calculate(frames[0].copy(), ["energy", "forces", "stress", "deviation"])
    times: dict[str, list[float]] = {"separate": [], "committee": []}
    forces, found = [], []
    for atoms in frames:
        t0 = time.perf_counter()
        for calc in separate:
            calc.calculate(atoms, ["energy", "forces", "stress"])
        times["separate"].append(time.perf_counter() - t0)
        forces.append([calc.results["forces"] for calc in separate])
        t0 = time.perf_counter()
        committee.calculate(atoms, ["energy", "forces", "stress", "deviation"])
        times["committee"].append(time.perf_counter() - t0)
        found.append(committee.results["deviation"])
    expected = max_force_deviation(np.swapaxes(np.array(forces), 0, 1))
    diff = float(np.abs(np.array(found) - expected).max())
    return float(np.median(times["separate"])), float(np.median(times["committee"])), diff


class Walker:
    """Bussi NVT driven by member 0, recording the deviation every ``every`` steps.

    ``separate``: N MACECalculators, all evaluated on every step.  Otherwise the committee,
    whose members 1..N-1 run only on recorded steps.
    """

    def __init__(self, paths: list[Path], start: Atoms, every: int, separate: bool):
        self.atoms = start.copy()
        thermalize_momenta(self.atoms, 423.0, exact_temperature=True, rng=np.random.default_rng(7))
        Stationary(self.atoms)
        self.every, self.deviations, self.seconds = every, [], 0.0
        self.calcs = separate_calculators(paths) if separate else [CommitteeCalculator(paths)]
        self.atoms.calc = self.calcs[0]
        self.dyn = Bussi(self.atoms, 0.5 * units.fs, 423.0, taut=50 * units.fs, rng=np.random.default_rng(8))
        self.dyn.attach(self.observe_all if separate else self.observe, interval=1 if separate else every)

    def observe_all(self) -> None:
        forces = [self.atoms.get_forces()]
        for calc in self.calcs[1:]:
            calc.calculate(self.atoms, ["energy", "forces", "stress"])
            forces.append(calc.results["forces"])
        if self.dyn.nsteps % self.every == 0:
            self.deviations.append(float(max_force_deviation(np.array(forces)[:, None])[0]))

    def observe(self) -> None:
        self.deviations.append(self.calcs[0].get_property("deviation", self.atoms))

    def step(self) -> None:
        t0 = time.perf_counter()
        self.dyn.run(1)
        self.seconds += time.perf_counter() - t0


def md(paths: list[Path], start: Atoms, steps: int, every: int) -> tuple[Walker, Walker]:
    """Run the two walkers a step at a time, alternately, from the same start and seeds."""
    separate = Walker(paths, start, every, separate=True)
    committee = Walker(paths, start, every, separate=False)
    for _ in range(steps):
        separate.step()
        committee.step()
    return separate, committee


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--frames", type=int, default=3, help="rattled frames for the per-frame timing")
    parser.add_argument("--steps", type=int, default=10, help="MD steps per run")
    parser.add_argument("--frame-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (ilflows' default: 1)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="ilflows-mace-bench-"))
    atoms, source = box(workdir)
    elements = sorted(set(atoms.get_chemical_symbols()))
    paths = write_committee(workdir / "models", elements, args.members, seed=1)
    print(f"box: {source}: {len(atoms)} atoms, cell {np.round(atoms.cell.lengths(), 2).tolist()} Å")
    print(f"committee: {args.members} random MACE members, 16x0e+16x1o, r_max 6 Å, 2 layers, float64")
    print(f"torch threads: {args.threads}")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(args.frames):
        frame = atoms.copy()
        frame.positions += rng.normal(0.0, 0.05, frame.positions.shape)
        frames.append(frame)
    t_separate, t_committee, diff = per_frame(paths, frames)
    print(f"1. all {args.members} members per frame ({args.frames} frames)")
    print(f"  N separate MACECalculators  {t_separate:8.3f} s/frame")
    print(f"  CommitteeCalculator         {t_committee:8.3f} s/frame  ({t_separate / t_committee:.2f}x)")
    print(f"  max |deviation difference|  {diff:.1e} eV/Å  (target < 1e-8)")
    separate, committee = md(paths, atoms, args.steps, args.frame_every)
    rate_separate, rate_committee = args.steps / separate.seconds, args.steps / committee.seconds
    md_diff = float(np.abs(np.array(separate.deviations) - np.array(committee.deviations)).max())
    print(f"2. MD, {args.steps} steps, deviation every {args.frame_every} steps")
    print(f"  N separate, every step      {rate_separate:8.3f} steps/s")
    print(
        f"  committee (drive: model 0)  {rate_committee:8.3f} steps/s  "
        f"({rate_committee / rate_separate:.2f}x, target >= 1.5x)"
    )
    print(f"  max |deviation difference|  {md_diff:.1e} eV/Å over {len(committee.deviations)} frames")


if __name__ == "__main__":
    main()

"""Ensemble deviation and window selection at scale, printed as measured figures and ratios.

Synthetic forces of ``--frames`` frames x ``--atoms`` atoms x ``--models`` models (float64;
10^5 x 350 x 4 is 3.4 GB) go through:

1. the bound: numpy's plain sum over the same array, i.e. reading the forces once, on one core
   and split over the cores ilflows uses (the faster of the two is the bound);
2. ilflows: :func:`ilflows.select.max_force_deviation` (one BLAS projection per cache-sized chunk,
   frames split over the cores; and on one core) then :func:`ilflows.select.classify` and
   :func:`ilflows.select.choose_candidates`;
3. the reference: a ``dp model-devi``-style loop, one frame at a time (std over models, norm
   over xyz, max over atoms).

Targets: ilflows within 2x of the bound; the same deviations as the reference to 1e-10.

Run: ``.venv/bin/python benchmarks/deviation_scale.py [--frames 100000 --atoms 350 --models 4]``
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ilflows.select import choose_candidates, classify, max_force_deviation


def per_frame_reference(forces: np.ndarray) -> np.ndarray:
    """max_devi_f computed frame by frame, as dp model-devi's loops do."""
    return np.array(
        [np.linalg.norm(np.std(forces[:, f], axis=0), axis=-1).max() for f in range(forces.shape[1])]
    )


def threaded_sum(forces: np.ndarray, threads: int) -> float:
    """Plain sum with the frames split over ``threads`` threads: reading the forces once on all cores."""
    bounds = np.linspace(0, forces.shape[1], threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        return sum(
            pool.map(
                lambda ab: float(forces[:, ab[0] : ab[1]].sum()), zip(bounds[:-1], bounds[1:], strict=True)
            )
        )


def best_of(repeats: int, contenders: dict) -> tuple[dict[str, float], dict[str, object]]:
    """Shortest wall time of each contender over ``repeats`` rounds, s, and its last result.

    Each round runs every contender once, so that a slow spell of a shared machine hits all of
    them alike instead of one.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results = {}
    for _ in range(repeats):
        for name, call in contenders.items():
            t = time.perf_counter()
            results[name] = call()
            times[name].append(time.perf_counter() - t)
    return {name: min(t) for name, t in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--atoms", type=int, default=350)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = (args.models, args.frames, args.atoms, 3)
    forces = np.empty(shape)
    rng = np.random.default_rng(0)
    for f in range(0, args.frames, 1000):  # generated in slices: no second copy in memory
        block = forces[:, f : f + 1000]
        block[...] = rng.normal(scale=0.1, size=block.shape)
        block += rng.normal(scale=0.5, size=(1, *block.shape[1:]))  # members agree up to a spread
    gb = forces.nbytes / 1e9
    print(f"forces: {args.frames} frames x {args.atoms} atoms x {args.models} models, float64, {gb:.2f} GB")

    cores = len(os.sched_getaffinity(0))
    times, results = best_of(
        args.repeats,
        {
            "np.sum, one core": lambda: np.sum(forces),
            f"np.sum, {cores} cores": lambda: threaded_sum(forces, cores),
            f"ilflows deviation, {cores} cores": lambda: max_force_deviation(forces),
            "ilflows deviation, one core": lambda: max_force_deviation(forces, threads=1),
        },
    )
    bound = min(times["np.sum, one core"], times[f"np.sum, {cores} cores"])
    ours, devi = times[f"ilflows deviation, {cores} cores"], results[f"ilflows deviation, {cores} cores"]
    selection = {"select": lambda: choose_candidates(devi, classify(devi, 0.05, 1.5).candidate, 1000)}
    select_times, chosen = best_of(args.repeats, selection)
    loop_times, expected = best_of(1, {"loop": lambda: per_frame_reference(forces)})
    select_time, chosen = select_times["select"], chosen["select"]
    reference, expected = loop_times["loop"], expected["loop"]
    difference = float(np.abs(devi - expected).max())

    print(f"{'':34s}{'s':>9s}{'GB/s':>9s}{'x bound':>9s}   (bound: the faster np.sum)")
    for name, t in times.items():
        print(f"{name:34s}{t:9.3f}{gb / t:9.2f}{t / bound:9.2f}")
    print(f"ilflows deviation: {ours / bound:.2f}x the bound (target <= 2)")
    total = ours + select_time
    print(f"{'ilflows deviation + selection':34s}{total:9.3f}{gb / total:9.2f}{total / bound:9.2f}")
    print(f"{'reference: per-frame loop':34s}{reference:9.3f}{gb / reference:9.2f}{reference / bound:9.2f}")
    print(f"speed-up over the per-frame loop: {reference / ours:.1f}x")
    print(f"max |ilflows - reference|: {difference:.1e} eV/Å   (target <= 1e-10)")
    print(f"frames chosen for DFT (cap 1000): {len(chosen)}")


if __name__ == "__main__":
    main()

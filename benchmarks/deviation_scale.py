"""Ensemble deviation and window selection at scale, printed as measured figures and ratios.

Synthetic forces of ``--frames`` frames x ``--atoms`` atoms x ``--models`` models (float64;
10^5 x 350 x 4 is 3.4 GB) go through:

1. the bound: numpy's plain sum over the same array, i.e. reading the forces once;
2. ilflows: :func:`ilflows.select.max_force_deviation` (one BLAS projection per cache-sized chunk)
   then :func:`ilflows.select.classify` and :func:`ilflows.select.choose_candidates`;
3. the reference: a ``dp model-devi``-style loop, one frame at a time (std over models, norm
   over xyz, max over atoms).

Targets: ilflows within 2x of the bound; the same deviations as the reference to 1e-10.

Run: ``.venv/bin/python benchmarks/deviation_scale.py [--frames 100000 --atoms 350 --models 4]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ilflows.select import choose_candidates, classify, max_force_deviation


def per_frame_reference(forces: np.ndarray) -> np.ndarray:
    """max_devi_f computed frame by frame, as dp model-devi's loops do."""
    return np.array(
        [np.linalg.norm(np.std(forces[:, f], axis=0), axis=-1).max() for f in range(forces.shape[1])]
    )


def best_of(repeats: int, func, *args) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls, s, and the last result."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = func(*args)
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--atoms", type=int, default=350)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
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

    bound, _ = best_of(args.repeats, np.sum, forces)
    ours, devi = best_of(args.repeats, max_force_deviation, forces)
    select_time, chosen = best_of(
        args.repeats, lambda d: choose_candidates(d, classify(d, 0.05, 1.5).candidate, 1000), devi
    )
    reference, expected = best_of(1, per_frame_reference, forces)
    difference = float(np.abs(devi - expected).max())

    print(f"{'':34s}{'s':>9s}{'GB/s':>9s}{'x bound':>9s}")
    print(f"{'bound: np.sum over the forces':34s}{bound:9.3f}{gb / bound:9.2f}{1.0:9.2f}")
    print(f"{'ilflows deviation':34s}{ours:9.3f}{gb / ours:9.2f}{ours / bound:9.2f}   (target <= 2)")
    total = ours + select_time
    print(f"{'ilflows deviation + selection':34s}{total:9.3f}{gb / total:9.2f}{total / bound:9.2f}")
    print(f"{'reference: per-frame loop':34s}{reference:9.3f}{gb / reference:9.2f}{reference / bound:9.2f}")
    print(f"speed-up over the per-frame loop: {reference / ours:.1f}x")
    print(f"max |ilflows - reference|: {difference:.1e} eV/Å   (target <= 1e-10)")
    print(f"frames chosen for DFT (cap 1000): {len(chosen)}")


if __name__ == "__main__":
    main()

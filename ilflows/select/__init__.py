"""Seam 4: ensemble deviation, trust window and candidate choice. Pure functions, no I/O."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np


def max_force_deviation(
    forces: np.ndarray, chunk_bytes: int = 1 << 21, threads: int | None = None
) -> np.ndarray:
    """Ensemble max force deviation per frame (DeePMD's ``max_devi_f``).

    For each frame, max over atoms i of ``sqrt(mean_k |F_ik - <F_i>|^2)``, with k over models.
    The spread about the mean is the length of the forces projected onto an orthonormal basis
    of the zero-sum vectors over models (one BLAS product, no mean, no cancellation), and frames
    go in chunks of about ``chunk_bytes`` of forces, so that the forces are read from memory once
    and the rest stays in cache.  Arrays of several chunks are split over ``threads`` threads
    (numpy and BLAS release the GIL): one core computes more slowly than memory delivers
    (``benchmarks/deviation_scale.py``).

    Parameters
    ----------
    forces
        Forces of each model, shape (n_models, n_frames, n_atoms, 3), eV/Å.
    chunk_bytes
        Forces handled at once by one thread, bytes.
    threads
        Threads for large arrays; default: the cores this process may use.

    Returns
    -------
    numpy.ndarray
        Shape (n_frames,), eV/Å.
    """
    forces = np.asarray(forces, dtype=float)
    if forces.ndim != 4 or forces.shape[-1] != 3:
        raise ValueError(f"forces must have shape (n_models, n_frames, n_atoms, 3), got {forces.shape}")
    n_frames = forces.shape[1]
    step = max(1, chunk_bytes // max(forces[:, :1].nbytes, 1))
    threads = max(1, min(threads or len(os.sched_getaffinity(0)), -(-n_frames // step)))
    out = np.empty(n_frames)
    bounds = np.linspace(0, n_frames, threads + 1).astype(int)
    parts = [(forces[:, a:b], out[a:b], step) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if threads == 1:
        _squared_spread_max(*parts[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda part: _squared_spread_max(*part), parts))
    return np.sqrt(out / forces.shape[0])  # max and sqrt commute: one sqrt per frame, not per atom


def _squared_spread_max(forces: np.ndarray, out: np.ndarray, step: int) -> None:
    """Per frame, max over atoms of ``sum_k |F_ik - <F_i>|^2`` into ``out``; ``step`` frames at once."""
    n_models, n_frames, n_atoms = forces.shape[:3]
    if n_frames == 0:
        return
    step = min(step, n_frames)  # one frame of the committee gets buffers of one frame
    whole = n_frames - n_frames % step
    if whole < n_frames:  # the ragged end with its own buffers, so that the loop below reuses fixed views
        _squared_spread_max(forces[:, whole:], out[whole:], n_frames - whole)
    contrasts = _zero_sum_basis(n_models)
    projected = np.empty((n_models - 1, step * n_atoms * 3))
    squares = np.empty(step * n_atoms * 3)
    per_atom = np.empty((step, n_atoms))
    x, y, z = squares.reshape(-1, 3).T
    atoms = per_atom.reshape(-1)
    for start in range(0, whole, step):
        np.matmul(contrasts, forces[:, start : start + step].reshape(n_models, -1), out=projected)
        np.einsum("ck,ck->k", projected, projected, out=squares)
        np.add(np.add(x, y, out=atoms), z, out=atoms)
        per_atom.max(axis=1, out=out[start : start + step])


@cache  # the committee calls the deviation once per recorded frame
def _zero_sum_basis(n_models: int) -> np.ndarray:
    """Rows: an orthonormal basis of the vectors over models that sum to zero, (n_models - 1, n_models).

    ``sum_k (F_k - <F>)^2`` equals the squared length of F's projection onto this basis.
    """
    centring = np.eye(n_models) - 1.0 / n_models
    basis = np.ascontiguousarray(np.linalg.qr(centring)[0][:, : n_models - 1].T)
    basis.setflags(write=False)
    return basis


@dataclass(frozen=True)
class WindowCounts:
    """Frames below, inside and above the trust window."""

    accurate: np.ndarray
    candidate: np.ndarray
    failed: np.ndarray

    @property
    def accurate_ratio(self) -> float:
        """Fraction of frames below the window (0 when there are no frames)."""
        n = self.accurate.size
        return float(self.accurate.sum() / n) if n else 0.0


def classify(deviations: np.ndarray, trust_lo, trust_hi, more: list[tuple] = ()) -> WindowCounts:
    """Boolean masks: accurate ``d < lo``, candidate ``lo <= d < hi``, failed ``d >= hi``.

    ``trust_lo`` and ``trust_hi`` are numbers or one per frame.  ``more`` adds criteria, each
    (deviations, lo, hi), as DP-GEN combines force, virial and energy deviations: a frame is
    failed when any criterion reaches its hi, accurate when every one is below its lo, else a
    candidate.  NaN deviations (a model blew up) count as failed.
    """
    accurate = np.ones(len(deviations), dtype=bool)
    failed = np.zeros(len(deviations), dtype=bool)
    for d, lo, hi in [(deviations, trust_lo, trust_hi), *more]:
        d = np.asarray(d, dtype=float)
        accurate &= d < lo
        failed |= ~(d < hi)  # NaN too
    return WindowCounts(accurate=accurate, candidate=~(accurate | failed), failed=failed)


def force_deviations(forces: np.ndarray) -> tuple[float, float, float]:
    """(max, min, avg) over atoms of one frame's force spread ``sqrt(mean_k |F_ik - <F_i>|^2)``, eV/Å.

    ``forces``: (n_members, n_atoms, 3); the max is :func:`max_force_deviation`'s.
    """
    forces = np.asarray(forces, dtype=float)
    spread = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    return float(spread.max()), float(spread.min()), float(spread.mean())


def energy_deviation(energies: np.ndarray, n_atoms: int) -> float:
    """DeePMD's ``devi_e``: standard deviation over members of the energy per atom, eV/atom."""
    return float(np.std(np.asarray(energies, dtype=float) / n_atoms))


def virial_deviation(virials: np.ndarray, n_atoms: int) -> tuple[float, float, float]:
    """DeePMD's (max, min, avg)_devi_v, eV/atom.

    Over the 9 components, of the members' standard deviation of virial / N; ``virials``:
    (n_members, 3, 3), eV.
    """
    spread = np.std(np.asarray(virials, dtype=float).reshape(len(virials), 9) / n_atoms, axis=0)
    return float(spread.max()), float(spread.min()), float(spread.mean())


def choose_candidates(deviations: np.ndarray, candidate: np.ndarray, max_candidates: int) -> np.ndarray:
    """Return indices of at most ``max_candidates`` candidates, spread evenly over the deviation range.

    Candidates are sorted by deviation and taken at evenly spaced ranks, lowest and highest
    included, so each iteration labels frames from the whole window rather than only its top
    (often unphysical) or bottom (nearly learnt) end.  Deterministic: the same deviations give
    the same choice.
    """
    idx = np.flatnonzero(candidate)
    if idx.size <= max_candidates:
        return idx
    ranked = idx[np.argsort(np.asarray(deviations)[idx], kind="stable")]
    ranks = np.unique(np.round(np.linspace(0, ranked.size - 1, max_candidates)).astype(int))
    return np.sort(ranked[ranks])


def unseen(fingerprints: list[str], seen: set[str]) -> np.ndarray:
    """Mask of the frames whose fingerprint is not in ``seen`` nor earlier in ``fingerprints``.

    ``seen``: the fingerprints of the frames the campaign has labelled (``Frame.fingerprint``).
    A walker that starts each iteration from the same box writes that box again as its first
    frame; it is labelled once.
    """
    fresh = np.zeros(len(fingerprints), dtype=bool)
    taken = set(seen)
    for i, print_ in enumerate(fingerprints):
        if print_ not in taken:
            fresh[i] = True
            taken.add(print_)
    return fresh


def adaptive_trust_lo(
    deviations: np.ndarray, trust_lo: float, trust_hi: float, n_candidates: int, percent: float
) -> float:
    """DP-GEN's adaptive lower trust level (``model_devi_adapt_trust_lo``).

    The level below which the frames under ``trust_hi`` count as accurate is raised so that
    only the ``max(n_candidates, percent % of them)`` highest are candidates
    (``model_devi_numb_candi_f``, ``model_devi_perc_candi_f``); it never goes below ``trust_lo``,
    the floor.  Returns the level, eV/Å.
    """
    d = np.asarray(deviations, dtype=float)
    below = np.sort(d[d < trust_hi])[::-1]
    want = max(n_candidates, int(np.ceil(percent / 100 * below.size)))
    if want >= below.size:
        return trust_lo
    return float(max(trust_lo, below[want - 1]))

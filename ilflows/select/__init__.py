"""Seam 4: ensemble deviation, trust window and candidate choice. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def max_force_deviation(forces: np.ndarray, chunk_bytes: int = 1 << 21) -> np.ndarray:
    """Ensemble max force deviation per frame (DeePMD's ``max_devi_f``).

    For each frame, max over atoms i of ``sqrt(mean_k |F_ik - <F_i>|^2)``, with k over models.
    Frames are taken in chunks of about ``chunk_bytes`` of forces, so that the mean, the spread
    and its square stay in cache and the forces are read from memory once
    (``benchmarks/deviation_scale.py``).

    Parameters
    ----------
    forces
        Forces of each model, shape (n_models, n_frames, n_atoms, 3), eV/Å.
    chunk_bytes
        Forces handled at once, bytes.

    Returns
    -------
    numpy.ndarray
        Shape (n_frames,), eV/Å.
    """
    forces = np.asarray(forces, dtype=float)
    if forces.ndim != 4 or forces.shape[-1] != 3:
        raise ValueError(f"forces must have shape (n_models, n_frames, n_atoms, 3), got {forces.shape}")
    n_models, n_frames = forces.shape[:2]
    per_frame = max(forces[:, :1].nbytes, 1)
    step = max(1, chunk_bytes // per_frame)
    out = np.empty(n_frames)
    for start in range(0, n_frames, step):
        chunk = forces[:, start : start + step]
        spread = chunk - chunk.mean(axis=0)
        out[start : start + step] = np.einsum("kfad,kfad->fa", spread, spread).max(axis=1)
    return np.sqrt(out / n_models)  # max and sqrt commute: one sqrt per frame, not per atom


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


def classify(deviations: np.ndarray, trust_lo: float, trust_hi: float) -> WindowCounts:
    """Boolean masks: accurate ``d < lo``, candidate ``lo <= d < hi``, failed ``d >= hi``.

    NaN deviations (a model blew up) count as failed.
    """
    d = np.asarray(deviations, dtype=float)
    accurate = d < trust_lo
    candidate = (d >= trust_lo) & (d < trust_hi)
    return WindowCounts(accurate=accurate, candidate=candidate, failed=~(accurate | candidate))


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

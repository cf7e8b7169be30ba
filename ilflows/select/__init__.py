"""Seam 4: ensemble deviation, trust window and candidate choice. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


def max_force_deviation(forces: np.ndarray, chunk_bytes: int = 3 << 17) -> np.ndarray:
    """Ensemble max force deviation per frame (DeePMD's ``max_devi_f``).

    For each frame, max over atoms i of ``sqrt(mean_k |F_ik - <F_i>|^2)``, with k over models.
    The spread about the mean is the length of the forces projected onto an orthonormal basis
    of the zero-sum vectors over models (one BLAS product, no mean, no cancellation), and frames
    go in chunks of about ``chunk_bytes`` of forces, so that the forces are read from memory once
    and the rest stays in cache (``benchmarks/deviation_scale.py``).

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
    n_models, n_frames, n_atoms = forces.shape[:3]
    contrasts = _zero_sum_basis(n_models)
    step = max(1, chunk_bytes // max(forces[:, :1].nbytes, 1))
    projected = np.empty((n_models - 1, min(step, n_frames) * n_atoms * 3))
    squares = np.empty(projected.shape[1])
    per_atom = np.empty(projected.shape[1] // 3)
    out = np.empty(n_frames)
    for start in range(0, n_frames, step):
        chunk = forces[:, start : start + step]
        n = chunk.shape[1]
        y, sq, atom = projected[:, : n * n_atoms * 3], squares[: n * n_atoms * 3], per_atom[: n * n_atoms]
        np.matmul(contrasts, chunk.reshape(n_models, -1), out=y)
        np.einsum("ck,ck->k", y, y, out=sq)
        xyz = sq.reshape(-1, 3)
        np.add(np.add(xyz[:, 0], xyz[:, 1], out=atom), xyz[:, 2], out=atom)
        atom.reshape(n, n_atoms).max(axis=1, out=out[start : start + n])
    return np.sqrt(out / n_models)  # max and sqrt commute: one sqrt per frame, not per atom


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

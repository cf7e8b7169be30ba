"""Diverse candidates: farthest-point sampling in a structural descriptor space.  Pure numpy.

The descriptor of a frame is its smoothed radial distribution per element pair (a "k=2 many-body
tensor"): for every pair of elements, the interatomic distances up to ``CUTOFF`` (minimum image)
binned on a 0.02 Å grid, smoothed by a Gaussian of width ``SIGMA`` and divided by the number of
atoms (a histogram and one convolution per pair: about a millisecond for 350 atoms).  Frames
with the same local structure land close together whatever their atom order, translation or
periodic image; a squeezed bond or a new contact moves a frame away.  Farthest-point sampling
then picks candidates that differ most from each other and from what the campaign has labelled
(autoplex and IPSuite pick their candidates this way).
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np

from ilflows.geometry import nearest_image
from ilflows.schemas import Frame

CUTOFF = 6.0  # Å: first and second neighbours of the ions' atoms
SIGMA = 0.1  # Å
BIN = 0.02  # Å
EDGES = np.arange(0.0, CUTOFF + BIN / 2, BIN)
_offsets = np.arange(-4 * SIGMA, 4 * SIGMA + BIN / 2, BIN)
KERNEL = np.exp(-0.5 * (_offsets / SIGMA) ** 2)


def descriptor(frame: Frame, elements: list[str]) -> np.ndarray:
    """Smoothed pair-distance distribution of ``frame`` per element pair of ``elements``, flattened."""
    cell = np.asarray(frame.cell, dtype=float)
    positions = np.asarray(frame.positions, dtype=float)
    frac = positions @ np.linalg.inv(cell)
    distance = np.linalg.norm(nearest_image(frac[:, None, :] - frac[None, :, :]) @ cell, axis=-1)
    species = np.asarray(frame.species)
    parts = []
    for a, b in combinations_with_replacement(elements, 2):
        rows, cols = np.flatnonzero(species == a), np.flatnonzero(species == b)
        d = distance[np.ix_(rows, cols)]
        if a == b:
            d = d[np.triu_indices(len(rows), 1)]
        counts = np.histogram(d[d > 0], bins=EDGES)[0]
        parts.append(np.convolve(counts, KERNEL, mode="same") / len(species))
    return np.concatenate(parts)


def farthest_points(
    candidates: np.ndarray, labelled: np.ndarray, n: int, first: int | None = None
) -> list[int]:
    """Greedy farthest-point sampling of ``n`` rows of ``candidates``.

    Each pick is the candidate farthest (Euclidean) from everything picked so far and from the
    ``labelled`` descriptors.  Without labelled descriptors the first pick is ``first`` (e.g. the
    highest deviation), or row 0.  Ties go to the lower index: the choice is deterministic.
    Returns row indices in the order picked.
    """
    candidates = np.asarray(candidates, dtype=float)
    if len(candidates) == 0 or n <= 0:
        return []
    labelled = np.asarray(labelled, dtype=float).reshape(-1, candidates.shape[1])
    if len(labelled):
        nearest = np.min(np.linalg.norm(candidates[:, None] - labelled[None], axis=-1), axis=1)
        picked = []
    else:
        start = 0 if first is None else first
        picked = [start]
        nearest = np.linalg.norm(candidates - candidates[start], axis=1)
    while len(picked) < min(n, len(candidates)):
        nearest[picked] = -np.inf
        k = int(np.argmax(nearest))
        picked.append(k)
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[k], axis=1))
    return picked

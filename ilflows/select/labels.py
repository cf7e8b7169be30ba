"""Which labels a committee trains on: the held-out split and the outliers held back.  Pure functions."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ilflows.schemas import DFTLabel


def is_held_out(frame_id: str, fraction: float) -> bool:
    """Whether the label of ``frame_id`` is held out of training: a fixed ``fraction`` of frame ids.

    The frame id's SHA-256 read as a number in [0, 1): the same frames are held out in every
    iteration, on every machine, whatever else the campaign labels.
    """
    return int(hashlib.sha256(frame_id.encode()).hexdigest()[:12], 16) / 16**12 < fraction


# Below these distances from the median no label is an outlier, however narrow the reference:
# the frames that wrecked fits were 0.7-3 eV/atom and 50-175 eV/Å off, while a one-pair box at 500 K
# sits 0.06 eV/atom above its 300 K initial set (12 MAD of it) and is a label worth having.
FLOORS = {"energy per atom": 0.1, "largest force": 10.0}  # eV/atom, eV/Å


def outliers(labels: list[DFTLabel], k: float) -> dict[str, str]:
    """Explored labels far from the rest of their composition: frame id -> why.

    A label is an outlier when its energy per atom, or its largest atomic force, lies more than
    ``k`` median absolute deviations, and more than its :data:`FLOORS` distance, from the median
    of the converged labels of the same composition (initial set and imports included in the
    reference, as the import report does).
    Such frames (squeezed bonds with forces of 50-175 eV/Å, energies eV/atom above the rest) were
    seen to wreck a fit.  Only explored labels are judged: the initial set is the campaign's
    design, and imports get their own report.
    """
    groups: dict[tuple[str, ...], list[DFTLabel]] = defaultdict(list)
    for label in labels:
        groups[tuple(sorted(label.frame.species))].append(label)
    found = {}
    for group in groups.values():
        per_atom = np.array([lab.energy / lab.frame.n_atoms for lab in group])
        force = np.array([np.linalg.norm(np.asarray(lab.forces), axis=1).max() for lab in group])
        for name, values, unit in (
            ("energy per atom", per_atom, "eV/atom"),
            ("largest force", force, "eV/Å"),
        ):
            median = np.median(values)
            mad = np.median(np.abs(values - median))
            for lab, value in zip(group, values, strict=True):
                far = mad > 0 and abs(value - median) > max(k * mad, FLOORS[name])
                if far and lab.origin.stage == "explored" and lab.frame_id not in found:
                    found[lab.frame_id] = (
                        f"{name} {value:.4g} {unit} is {abs(value - median) / mad:.0f} MAD from the median "
                        f"{median:.4g} {unit} (limit {k:g} MAD)"
                    )
    return found


@dataclass
class TrainingSplit:
    """The converged labels of a campaign, split for one training."""

    train: list[DFTLabel] = field(default_factory=list)
    held_out: list[DFTLabel] = field(default_factory=list)  # scored, never trained on
    outliers: dict[str, str] = field(default_factory=dict)  # frame id -> why it was held back


def training_split(labels: list[DFTLabel], holdout_fraction: float, outlier_k: float | None) -> TrainingSplit:
    """Split converged ``labels``: outliers held back (``outlier_k`` None: none), then the held-out part."""
    far = outliers(labels, outlier_k) if outlier_k is not None else {}
    split = TrainingSplit(outliers=far)
    for label in labels:
        if label.frame_id in far:
            continue
        (split.held_out if is_held_out(label.frame_id, holdout_fraction) else split.train).append(label)
    return split

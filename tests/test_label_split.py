"""Which labels a committee trains on: the held-out split by frame id, and outliers held back."""

from __future__ import annotations

import numpy as np
import pytest

from ilflows.schemas import DFTLabel, Frame, FrameOrigin
from ilflows.select.labels import is_held_out, outliers, training_split


def _label(k: int, stage: str, energy_per_atom: float, largest_force: float) -> DFTLabel:
    origin = (
        FrameOrigin(campaign="c", stage="explored", method="md", iteration=0, walker=0, frame_index=k)
        if stage == "explored"
        else FrameOrigin(campaign="c", stage="initial", method="packmol", index=k)
    )
    forces = np.zeros((4, 3))
    forces[0, 0], forces[1, 0] = largest_force, -largest_force  # net force zero
    frame = Frame(species=["B", "F", "F", "F"], positions=np.eye(4, 3).tolist(), cell=np.eye(3).tolist())
    return DFTLabel(
        engine="cp2k-xtb",
        parameters={},
        converged=True,
        energy=4 * energy_per_atom,
        forces=forces.tolist(),
        wall_time=0.0,
        campaign="c",
        iteration=0,
        frame_id=origin.frame_id,
        frame=frame.model_copy(update={"positions": (np.eye(4, 3) + 0.01 * k).tolist()}),
        origin=origin,
    )


def test_a_fixed_fraction_of_frame_ids_is_held_out():
    ids = [f"c/it{i // 50}/w0/f{i % 50}" for i in range(2000)]
    held = [frame_id for frame_id in ids if is_held_out(frame_id, 0.1)]
    assert 0.085 < len(held) / len(ids) < 0.115
    assert held == [frame_id for frame_id in ids if is_held_out(frame_id, 0.1)]  # the same every time
    assert set(held) <= {frame_id for frame_id in ids if is_held_out(frame_id, 0.2)}  # nested
    assert not any(is_held_out(frame_id, 0.0) for frame_id in ids)


def test_outliers_are_explored_labels_far_from_their_composition():
    rng = np.random.default_rng(1)
    labels = [
        _label(k, "initial", -5 + 0.01 * rng.standard_normal(), 10 + rng.standard_normal()) for k in range(12)
    ]
    labels += [
        _label(k, "explored", -5 + 0.01 * rng.standard_normal(), 10 + rng.standard_normal()) for k in range(6)
    ]
    labels += [
        _label(20, "explored", -4.0, 10.0),  # 1 eV/atom above the rest: squeezed bonds
        _label(21, "explored", -5.0, 150.0),  # forces of a compressed bond
        _label(22, "initial", -5.0, 150.0),  # the initial set is the campaign's design: kept
        # a hotter frame: 12 MAD of this reference, not 0.1 eV/atom: thermal, kept (the BMIM-BF4 local
        # spec's 500 K ramp frames sat 0.06 eV/atom, 12 MAD, above its 300 K initial set)
        _label(23, "explored", -4.92, 12.0),
    ]
    found = outliers(labels, k=10)
    assert sorted(found) == ["c/it0/w0/f20", "c/it0/w0/f21"]
    assert found["c/it0/w0/f20"].startswith("energy per atom -4 eV/atom is ")
    assert (
        found["c/it0/w0/f21"].startswith("largest force 150 eV/Å is ")
        and "(limit 10 MAD)" in found["c/it0/w0/f21"]
    )
    assert outliers(labels, k=1e4) == {}
    split = training_split(labels, holdout_fraction=0.3, outlier_k=10)
    kept = [lab.frame_id for lab in split.train + split.held_out]
    assert len(kept) == len(labels) - 2 and not set(kept) & set(found)
    assert split.held_out and all(is_held_out(lab.frame_id, 0.3) for lab in split.held_out)
    assert len(training_split(labels, 0.3, None).train + training_split(labels, 0.3, None).held_out) == len(
        labels
    )


@pytest.mark.parametrize("fraction", [0.0, 0.1])
def test_the_split_does_not_depend_on_the_other_labels(fraction):
    labels = [_label(k, "explored", -5.0 + 0.001 * k, 10.0 + 0.1 * k) for k in range(30)]
    whole = training_split(labels, fraction, None)
    part = training_split(labels[:15], fraction, None)
    assert [lab.frame_id for lab in part.held_out] == [
        lab.frame_id for lab in whole.held_out if int(lab.frame_id.rsplit("f", 1)[1]) < 15
    ]

"""Deviation, trust window and candidate choice (seam 4)."""

import numpy as np
import pytest

from ilflows.select import choose_candidates, classify, max_force_deviation


def test_deviation_matches_per_frame_loop():
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(4, 7, 11, 3))
    expected = []
    for f in range(7):
        mean = forces[:, f].mean(axis=0)
        per_atom = [
            np.sqrt(np.mean([np.sum((forces[k, f, a] - mean[a]) ** 2) for k in range(4)])) for a in range(11)
        ]
        expected.append(max(per_atom))
    assert np.allclose(max_force_deviation(forces), expected, rtol=0, atol=1e-12)


def test_deviation_of_two_models_is_half_the_difference():
    forces = np.zeros((2, 1, 2, 3))
    forces[1, 0, 1] = [0.6, 0.0, 0.8]  # |dF| = 1 on atom 1
    assert max_force_deviation(forces) == pytest.approx([0.5])


def test_deviation_rejects_wrong_shape():
    with pytest.raises(ValueError, match="n_models, n_frames, n_atoms, 3"):
        max_force_deviation(np.zeros((4, 10, 3)))


def test_window_edges_lo_is_candidate_hi_is_failed():
    d = np.array([0.0499999, 0.05, 1.4999999, 1.5, np.nan])
    w = classify(d, 0.05, 1.5)
    assert w.accurate.tolist() == [True, False, False, False, False]
    assert w.candidate.tolist() == [False, True, True, False, False]
    assert w.failed.tolist() == [False, False, False, True, True]
    assert w.accurate_ratio == pytest.approx(0.2)


def test_cap_spreads_choice_over_the_window():
    d = np.linspace(0.0, 2.0, 201)  # 0.01 steps
    w = classify(d, 0.05, 1.5)
    chosen = choose_candidates(d, w.candidate, 4)
    assert len(chosen) == 4
    assert w.candidate[chosen].all()
    assert d[chosen].min() == pytest.approx(0.05) and d[chosen].max() == pytest.approx(1.49)
    assert choose_candidates(d, w.candidate, 4).tolist() == chosen.tolist()  # deterministic


def test_cap_keeps_all_when_few():
    d = np.array([0.01, 0.1, 0.2, 3.0])
    w = classify(d, 0.05, 1.5)
    assert choose_candidates(d, w.candidate, 10).tolist() == [1, 2]


def test_deviation_in_chunks_equals_the_per_frame_definition():
    forces = np.random.default_rng(3).normal(size=(4, 37, 11, 3))
    per_frame = [np.linalg.norm(np.std(forces[:, f], axis=0), axis=-1).max() for f in range(37)]  # dp's way
    for chunk_bytes in (1, 4 * 5 * 11 * 3 * 8, 1 << 30):  # one frame, 5 frames (a ragged last chunk), all
        for threads in (1, 3):  # 3: parts of 12, 12 and 13 frames
            deviation = max_force_deviation(forces, chunk_bytes, threads)
            assert deviation == pytest.approx(per_frame, abs=1e-12)
    assert max_force_deviation(forces[:, :0]).shape == (0,)

"""The select step: window, structure guards and stopping, on explorations built by hand."""

import numpy as np
import pytest

from ilflows.schemas import Exploration, Trajectory
from ilflows.schemas.campaign import CampaignSpec
from ilflows.select.iteration import SoFar, select_frames
from ilflows.systems import pack_box, topology

SPEC = {
    "name": "sel",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "select": {"trust_lo": 0.05, "trust_hi": 1.5, "max_candidates": 10},
    "guards": {"max_void": None},
    "loop": {"max_iterations": 5, "accurate_ratio": 0.9},
}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """An intact packed pair and a copy whose first cation carbon is pulled 1.6 Å away."""
    spec = CampaignSpec.model_validate(SPEC)
    intact = pack_box(spec.system[0], spec.system[0].density, seed=3, workdir=tmp_path_factory.mktemp("pack"))
    name, atoms = topology(spec.system[0])[0]
    carbon = next(i for i in atoms if intact.species[i] == "C")
    pos = np.asarray(intact.positions)
    pos[carbon] += [1.6, 0.0, 0.0]
    broken = intact.model_copy(update={"positions": pos.tolist()})
    return intact, broken


def exploration(frames, deviations):
    intact, broken = frames
    chosen = [broken if i == 1 else intact for i in range(len(deviations))]
    trajectory = Trajectory(
        species=intact.species,
        steps=[10 * i for i in range(len(chosen))],
        positions=[f.positions for f in chosen],
        cells=[f.cell for f in chosen],
    )
    return Exploration(
        engine="lammps-deepmd",
        ensemble="nvt",
        temperature=450,
        n_steps=10 * (len(chosen) - 1),
        timestep=0.5,
        frame_every=10,
        parameters={},
        deviations=deviations,
        wall_time=1.0,
        trajectory=trajectory,
        campaign="sel",
        iteration=0,
        walker=0,
        start_frame_id="sel/initial/0",
    )


def test_guards_leave_out_a_broken_candidate_and_count_it(frames):
    spec = CampaignSpec.model_validate(SPEC)
    record, chosen = select_frames(spec, 0, [exploration(frames, [0.01, 0.3, 0.4, 2.0])], None)
    assert (record.n_accurate, record.n_candidate, record.n_failed) == (1, 2, 1)
    assert record.n_flagged == 1 and record.flagged[0].frame_index == 1
    assert any(r.startswith("broken:") for r in record.flagged[0].reasons)
    assert [s.frame_index for s in record.selected] == [2] and [i for _, i in chosen] == [2]
    assert record.stop_reason is None


def test_without_guards_the_broken_frame_is_labelled(frames):
    spec = CampaignSpec.model_validate({**SPEC, "guards": {"enabled": False}})
    record, _ = select_frames(spec, 0, [exploration(frames, [0.01, 0.3, 0.4, 2.0])], None)
    assert record.n_flagged == 0 and [s.frame_index for s in record.selected] == [1, 2]


def test_loop_stops_when_every_candidate_is_flagged(frames):
    spec = CampaignSpec.model_validate(SPEC)
    record, chosen = select_frames(spec, 0, [exploration(frames, [0.01, 0.3, 0.01, 0.01])], None)
    assert chosen == [] and record.n_flagged == 1
    assert (
        record.stop_reason
        == "no candidate frames left in the trust window (1 flagged by the guards, 0 labelled before)"
    )


def test_loop_stops_when_accurate_and_when_every_walker_failed(frames):
    spec = CampaignSpec.model_validate(SPEC)
    record, _ = select_frames(spec, 0, [exploration(frames, [0.01] * 9 + [0.3])], None)
    assert record.converged and record.stop_reason == "accurate ratio 0.900 >= 0.9"
    record, _ = select_frames(spec, 0, [None, None], None)
    assert not record.converged and record.stop_reason == "every exploration failed"


def test_hot_md_stops_at_the_first_flagged_frame_and_eq_md_skips_it(frames):
    from ilflows.loop.initial import guard_md_frames

    intact, broken = frames
    spec = CampaignSpec.model_validate(SPEC)
    run = [intact, intact, broken, intact]
    keep, flagged = guard_md_frames(spec, run, equilibrated=True)
    assert keep == [0, 1, 3] and list(flagged) == [2]
    keep, flagged = guard_md_frames(spec, run, equilibrated=False)
    assert keep == [0, 1] and list(flagged) == [2]
    assert any(r.startswith("broken:") for r in flagged[2])


def test_a_frame_labelled_before_is_not_selected_again(frames):
    spec = CampaignSpec.model_validate({**SPEC, "guards": {"enabled": False}})
    explored = exploration(frames, [0.3, 0.4, 0.2, 0.5])  # frames 0, 2 and 3 are the same box
    intact, broken = frames
    record, chosen = select_frames(spec, 1, [explored], None)
    assert [i for _, i in chosen] == [0, 1] and record.n_repeated == 2  # the box once, in this iteration
    # a walker starting again from a labelled box: its first frame is that box, moved by a cell vector
    shifted = intact.model_copy(
        update={"positions": (np.asarray(intact.positions) + intact.cell[0]).tolist()}
    )
    record, chosen = select_frames(spec, 1, [explored], None, before=SoFar(labelled={shifted.fingerprint()}))
    assert [i for _, i in chosen] == [1] and record.n_repeated == 3
    assert record.n_candidate == 4  # still counted in the window: the committee has not learnt them
    record, chosen = select_frames(
        spec, 1, [explored], None, before=SoFar(labelled={intact.fingerprint(), broken.fingerprint()})
    )
    assert chosen == [] and record.stop_reason.startswith("no candidate frames left")


def test_an_adaptive_lower_trust_level_keeps_the_highest_frames_as_candidates(frames):
    from ilflows.select import adaptive_trust_lo

    d = np.array([0.01, 0.2, 0.3, 0.4, 0.5, 0.6, 2.0])
    assert adaptive_trust_lo(d, 0.05, 1.5, n_candidates=2, percent=0) == 0.5  # 0.5 and 0.6 stay candidates
    assert adaptive_trust_lo(d, 0.05, 1.5, n_candidates=1, percent=50) == 0.4  # 50 % of 6 under trust_hi: 3
    assert adaptive_trust_lo(d, 0.55, 1.5, n_candidates=3, percent=0) == 0.55  # never below the floor
    assert adaptive_trust_lo(d, 0.05, 1.5, n_candidates=10, percent=0) == 0.05  # too few frames: the floor
    spec = CampaignSpec.model_validate(
        {
            **SPEC,
            "guards": {"enabled": False},
            "select": {**SPEC["select"], "adaptive_lo": {"n_candidates": 1}},
        }
    )
    record, chosen = select_frames(spec, 0, [exploration(frames, [0.01, 0.3, 0.4, 2.0])], None)
    assert record.trust_lo == 0.4 and (record.n_accurate, record.n_candidate) == (2, 1)
    assert [i for _, i in chosen] == [2]


def test_the_structural_descriptor_sees_structure_not_atom_order_or_images(frames):
    from ilflows.select.diversity import descriptor

    intact, broken = frames
    elements = ["H", "B", "C", "N", "F"]
    base = descriptor(intact, elements)
    pos = np.asarray(intact.positions)
    moved = intact.model_copy(
        update={"positions": (pos + [3.0, -1.0, 0.5] + np.asarray(intact.cell[1])).tolist()}
    )
    assert np.allclose(descriptor(moved, elements), base, atol=1e-12)  # translated, another image
    h = [i for i, s in enumerate(intact.species) if s == "H"]
    swapped = pos.copy()
    swapped[[h[0], h[-1]]] = swapped[[h[-1], h[0]]]
    assert np.allclose(descriptor(intact.model_copy(update={"positions": swapped.tolist()}), elements), base)
    assert np.linalg.norm(descriptor(broken, elements) - base) > 0.1  # a carbon pulled 1.6 Å away


def test_farthest_point_sampling_picks_away_from_what_is_known():
    from ilflows.select.diversity import farthest_points

    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    # 11 first (farthest from 0), then 2 (2 from 0), then 1 and 10 tie at 1: the lower index
    assert farthest_points(points, np.array([[0.0]]), 3) == [4, 2, 1]
    assert farthest_points(points, np.empty((0, 1)), 2, first=1) == [1, 4]
    assert farthest_points(points, np.empty((0, 1)), 9) == [0, 4, 2, 1, 3]  # all, each once


@pytest.mark.parametrize("how", ["farthest", "random"])
def test_other_choices_among_the_candidates(frames, how):
    intact, broken = frames
    spec = CampaignSpec.model_validate(
        {
            **SPEC,
            "guards": {"enabled": False},
            "select": {**SPEC["select"], "max_candidates": 2, "choose": how},
        }
    )
    pos = np.asarray(intact.positions)
    nudged = [intact.model_copy(update={"positions": (pos + 0.01 * k).tolist()}) for k in range(1, 4)]
    run = exploration(frames, [0.2, 0.3, 0.4, 0.5, 0.6])
    shaken = [intact, broken, *nudged]  # frames 0, 2, 3, 4: the same box; frame 1 differs
    run.trajectory.positions = [f.positions for f in shaken]
    record, chosen = select_frames(spec, 0, [run], None)
    picked = [i for _, i in chosen]
    if how == "farthest":
        assert picked == [1, 4]  # the highest deviation first, then the frame least like it
    else:
        again = select_frames(spec, 0, [run], None)[1]
        assert len(picked) == 2 and picked == [i for _, i in again]  # seeded: the same pick
        other = CampaignSpec.model_validate(
            {**spec.model_dump(), "select": {**spec.select.model_dump(), "seed": 5}}
        )
        assert any([i for _, i in select_frames(other, k, [run], None)[1]] != picked for k in range(5))


def test_each_composition_may_have_its_own_window(frames, tmp_path):
    intact, _ = frames
    two = {**SPEC, "system": [SPEC["system"], {"ions": {"BMIM": 1, "BF4": 1}, "density": 0.22}]}
    two["guards"] = {"enabled": False}
    two["select"] = {**SPEC["select"], "systems": [{"system": 1, "trust_lo": 0.35, "max_candidates": 1}]}
    spec = CampaignSpec.model_validate(two)
    bmim = pack_box(spec.system[1], 0.22, seed=3, workdir=tmp_path)
    pyr = exploration(frames, [0.01, 0.3, 0.4, 0.5])
    other = exploration(frames, [0.01, 0.3, 0.4, 0.5])
    other.walker = 1
    other.trajectory = Trajectory(
        species=bmim.species, steps=[0, 10, 20, 30], positions=[bmim.positions] * 4, cells=[bmim.cell] * 4
    )
    pos = np.asarray(intact.positions)
    pyr.trajectory.positions = [(pos + 0.05 * k).tolist() for k in range(4)]  # four different frames
    bpos = np.asarray(bmim.positions)
    other.trajectory.positions = [(bpos + 0.05 * k).tolist() for k in range(4)]
    record, chosen = select_frames(spec, 0, [pyr, other], None)
    assert record.windows == {0: (0.05, 1.5), 1: (0.35, 1.5)}
    assert (record.n_accurate, record.n_candidate) == (1 + 2, 3 + 2)  # 0.3 is accurate in composition 1
    # composition 1's cap is one: the spread's one pick is its lowest candidate
    assert [(e.walker, i) for e, i in chosen] == [(0, 1), (0, 2), (0, 3), (1, 2)]
    with pytest.raises(ValueError, match=r"select.systems.0.system: 2, but the campaign has 2 compositions"):
        CampaignSpec.model_validate({**two, "select": {"systems": [{"system": 2}]}})


def test_energy_and_virial_criteria_combine_as_in_dp_gen(frames):
    spec = CampaignSpec.model_validate(
        {**SPEC, "guards": {"enabled": False}, "select": {**SPEC["select"], "energy_window": [0.002, 0.02]}}
    )
    intact, _ = frames
    run = exploration(frames, [0.01, 0.01, 0.01, 0.3])  # forces: three accurate, one candidate
    run.trajectory.positions = [(np.asarray(intact.positions) + 0.05 * k).tolist() for k in range(4)]
    run.energy_deviations = [0.001, 0.005, 0.03, 0.001]  # accurate, candidate, failed, accurate
    record, chosen = select_frames(spec, 0, [run], None)
    assert (record.n_accurate, record.n_candidate, record.n_failed) == (1, 2, 1)
    assert [i for _, i in chosen] == [1, 3]
    run.energy_deviations = None  # an explorer that did not compute them
    with pytest.raises(
        ValueError, match="select.energy_window: walker 0's exploration has no energy deviations"
    ):
        select_frames(spec, 0, [run], None)
    with pytest.raises(ValueError, match=r"virial_window: \[0.5, 0.1\] must be \[lo, hi\]"):
        CampaignSpec.model_validate({**SPEC, "select": {"virial_window": [0.5, 0.1]}})


@pytest.mark.parametrize("how", ["spread", "farthest", "random"])
def test_every_choice_takes_candidates_only_and_all_of_few(frames, how):
    from ilflows.select.iteration import pick

    intact, broken = frames
    pos = np.asarray(intact.positions)
    shaken = [intact.model_copy(update={"positions": (pos + 0.05 * k).tolist()}) for k in range(8)]
    shaken[5] = broken
    deviations = np.array([0.01, 0.2, 0.3, 2.0, 0.4, 0.5, 0.6, 0.02])
    candidate = (deviations >= 0.05) & (deviations < 1.5)

    def choose(n):
        return pick(how, deviations, candidate, n, frame=shaken.__getitem__, labelled=[intact],
                    elements=["B", "C", "F", "H", "N"], seed=[0, 1])  # fmt: skip

    assert choose(9).tolist() == [1, 2, 4, 5, 6]  # five candidates, room for nine: all of them
    three = choose(3)
    assert len(three) == 3 and set(three) <= {1, 2, 4, 5, 6}
    if how == "spread":
        assert three.tolist() == [1, 4, 6]  # lowest, middle and highest deviation
    if how == "farthest":
        assert 5 in three  # the broken frame is the least like the labelled box

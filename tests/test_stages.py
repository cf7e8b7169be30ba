"""Exploration stages: when a stage and the loop stop, stage conditions, and their spec checks."""

from __future__ import annotations

import pytest

from ilflows.schemas.campaign import CampaignSpec
from ilflows.select.stopping import decide

BASE = {
    "name": "st",
    "system": {"ions": {"PYR14": 1, "BF4": 1}, "density": 0.22},
    "explore": {"temperature": 450, "n_steps": 500},
    "loop": {"max_iterations": 10, "accurate_ratio": 0.9},
}
STAGES = [
    {"name": "cold", "temperature": 200, "n_steps": 100, "max_iterations": 2, "accurate_ratio": 0.8},
    {"name": "hot", "max_iterations": 3},
]


def _spec(stages=STAGES, **loop) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {**BASE, "explore": {**BASE["explore"], "stages": stages}, "loop": {**BASE["loop"], **loop}}
    )


def test_a_stage_runs_until_it_converges_then_the_next_starts():
    spec = _spec()
    go_on = decide(spec, 0, 0, 0, [0.5], explored=True, selected=3)
    assert (go_on.next_stage, go_on.stop_reason, go_on.converged) == (0, None, False)
    moved = decide(spec, 1, 0, 0, [0.5, 0.85], explored=True, selected=3)  # 0.85 >= the stage's 0.8
    assert (moved.next_stage, moved.stop_reason, moved.stage_converged, moved.converged) == (
        1,
        None,
        True,
        False,
    )
    assert moved.stage_note == "cold converged: accurate ratio 0.850 >= 0.8"
    done = decide(spec, 3, 1, 2, [0.7, 0.95], explored=True, selected=1)  # the last stage, loop's 0.9
    assert done.converged and done.next_stage is None
    assert done.stop_reason == "accurate ratio 0.950 >= 0.9 (hot, the last stage)"


def test_a_stage_ends_at_its_cap_or_when_nothing_is_left_and_the_loop_at_its_own_cap():
    spec = _spec()
    capped = decide(spec, 1, 0, 0, [0.1, 0.2], explored=True, selected=3)
    assert capped.next_stage == 1 and not capped.stage_converged
    assert capped.stage_note == "cold: its max_iterations (2) reached"
    empty = decide(spec, 0, 0, 0, [0.1], explored=True, selected=0, why_empty="(4 flagged by the guards)")
    assert empty.next_stage == 1 and empty.stage_note.startswith("cold: no candidate frames left")
    last = decide(spec, 4, 1, 2, [0.1, 0.2, 0.3], explored=True, selected=2)
    assert last.next_stage is None and last.stop_reason == "hot: its max_iterations (3) reached"
    loop_cap = decide(_spec(max_iterations=2), 1, 0, 0, [0.85, 0.85], explored=True, selected=3)
    assert loop_cap.next_stage is None and loop_cap.stop_reason.endswith("max_iterations (2) reached")
    failed = decide(spec, 0, 0, 0, [0.0], explored=False, selected=0)
    assert failed.stop_reason == "every exploration failed" and failed.next_stage is None


def test_convergence_may_have_to_hold_over_several_iterations():
    spec = _spec(stages=[], converge_over=2)
    assert decide(spec, 0, 0, 0, [0.95], explored=True, selected=2).stop_reason is None
    assert decide(spec, 1, 0, 0, [0.5, 0.95], explored=True, selected=2).stop_reason is None
    held = decide(spec, 2, 0, 0, [0.5, 0.95, 0.92], explored=True, selected=2)
    assert held.converged and held.stop_reason == "accurate ratio 0.920 >= 0.9 in 2 iterations in a row"


def test_one_stage_campaigns_keep_their_words():
    spec = _spec(stages=[])
    assert (
        decide(spec, 0, 0, 0, [0.95], explored=True, selected=0).stop_reason == "accurate ratio 0.950 >= 0.9"
    )
    empty = decide(spec, 0, 0, 0, [0.1], explored=True, selected=0, why_empty="(1 flagged by the guards)")
    assert empty.stop_reason == "no candidate frames left in the trust window (1 flagged by the guards)"
    assert (
        decide(spec, 9, 0, 0, [0.1], explored=True, selected=5).stop_reason == "max_iterations (10) reached"
    )


def test_a_stage_takes_the_explore_sections_conditions_it_does_not_set():
    spec = _spec()
    cold, hot = (spec.explore.at_stage(stage) for stage in spec.stages())
    assert (cold.temperature, cold.n_steps, cold.timestep) == (200, 100, 0.5)
    assert (hot.temperature, hot.n_steps) == (450, 500)
    single = _spec(stages=[]).stages()
    assert len(single) == 1 and single[0].max_iterations == 10


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (
            {"temperature_ramp": {"start": 300, "end": 600}},
            "explore.stages.0: temperature_ramp is run by the ase",
        ),
        ({"systems": [1]}, "explore.stages.0.systems: 1, but the campaign has 1 compositions"),
        ({"n_steps": 0}, "greater than 0"),
        ({"tempreature": 300}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_stage_is_refused_naming_it(stage, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _spec(stages=[stage])

"""When an exploration stage, and the loop, stop: a pure function of the iteration's counts.

After dpgen2's stage scheduler: each stage runs until it converges (its accurate ratio met over
``converge_over`` iterations in a row, or the members agree on observables), leaves nothing to
label, or reaches its own iteration cap; then the next stage starts, and after the last one the
loop stops.  The campaign's ``loop.max_iterations`` caps everything, and an iteration whose
walkers all failed stops the loop (there is nothing to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass

from ilflows.schemas.campaign import CampaignSpec


@dataclass(frozen=True)
class Outcome:
    """What the loop does after one iteration."""

    stage_converged: bool  # the stage's accurate ratio held long enough, or the members agree
    converged: bool  # the last stage converged: the campaign's models are done
    next_stage: int | None  # stage of the next iteration; None: the loop stops
    stop_reason: str | None  # why the loop stops here (None: it goes on)
    stage_note: str | None = None  # why the stage ends here, when the loop goes on with the next one


def decide(
    spec: CampaignSpec,
    iteration: int,
    stage: int,
    stage_start: int,
    ratios: list[float],
    explored: bool,
    selected: int,
    agree: str | None = None,
    why_empty: str = "",
) -> Outcome:
    """Decide whether iteration ``iteration`` of stage ``stage`` (begun at ``stage_start``) ends it.

    Parameters
    ----------
    spec
        The campaign: its stages and ``loop`` section.
    iteration, stage, stage_start
        The iteration just explored, its stage, and the iteration that stage began with.
    ratios
        Accurate ratios of this stage's iterations so far, this one last.
    explored
        Whether any walker of this iteration finished.
    selected
        Candidates sent to DFT from this iteration.
    agree
        The members agree on the observables (``loop.observables``): the spread that decided it.
    why_empty
        What kept candidates from DFT, said when none was selected (e.g. "(3 flagged by the guards)").
    """
    stages = spec.stages()
    current = stages[stage]
    name = current.label(stage)
    target = current.accurate_ratio or spec.loop.accurate_ratio
    window = ratios[-spec.loop.converge_over :]
    accurate = explored and len(window) == spec.loop.converge_over and min(window) >= target
    last = stage + 1 == len(stages)
    if not explored:
        return Outcome(False, False, None, "every exploration failed")
    if accurate or agree:
        why = (
            f"accurate ratio {ratios[-1]:.3f} >= {target}"
            if accurate
            else f"members agree on observables ({agree})"
        )
        if spec.loop.converge_over > 1 and accurate:
            why += f" in {spec.loop.converge_over} iterations in a row"
        if last:
            return Outcome(True, True, None, why if len(stages) == 1 else f"{why} ({name}, the last stage)")
        ends = f"{name} converged: {why}"
    elif iteration + 1 >= spec.loop.max_iterations:
        return Outcome(False, False, None, f"max_iterations ({spec.loop.max_iterations}) reached")
    elif iteration - stage_start + 1 >= current.max_iterations:
        ends = f"{name}: its max_iterations ({current.max_iterations}) reached"
        if last:
            return Outcome(False, False, None, ends)
    elif not selected:
        empty = f"no candidate frames left in the trust window {why_empty}".rstrip()
        if len(stages) == 1:
            return Outcome(False, False, None, empty)
        ends = f"{name}: {empty}"
        if last:
            return Outcome(False, False, None, ends)
    else:
        return Outcome(False, False, stage, None)
    if iteration + 1 >= spec.loop.max_iterations:
        return Outcome(
            bool(accurate or agree),
            False,
            None,
            f"{ends}; max_iterations ({spec.loop.max_iterations}) reached",
        )
    return Outcome(bool(accurate or agree), False, stage + 1, None, ends)

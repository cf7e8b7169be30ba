"""The concurrent-learning loop as a jobflow Maker with dynamic Responses.

Flow of a campaign::

    initial set ──> label x N (packed boxes), import x I, MD x B (+ detour: its labels) ──────┐
                ──> validation labels (never trained on)                                   │
                                              ┌────────────────────────────────────────────┘
                                              └─> train x M ──> explore x W ──> select (it 0)
                                                                                  │ addition
                 label x (selected) ──> train x M ──> explore x W ──> select (iteration 1) ...

Each ``select`` job classifies the explored frames by ensemble max force deviation, guards the
candidates, records the iteration, and either stops (accurate ratio reached, iteration cap, or
nothing left to label) or adds one DFT job per chosen frame followed by the next iteration.
Every label keeps its frame's origin (iteration, walker, frame index, deviation, MD run).
Training jobs wait for the jobs queued just before them and read every earlier training label
from the JobStore by campaign and iteration.

Read in this order: :mod:`ilflows.loop.initial` (the initial and validation sets),
:mod:`ilflows.loop.iteration` (one iteration, select and continue, production),
:mod:`ilflows.loop.steps` (the label, train, explore and score jobs), and
:mod:`ilflows.loop.jobs` (how each job is placed in its campaign).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobflow import Flow, Maker

from ilflows.loop.initial import build_initial_set
from ilflows.loop.jobs import place
from ilflows.schemas.campaign import CampaignSpec


@dataclass
class CampaignMaker(Maker):
    """Build the whole DP-GEN-style campaign described by a :class:`CampaignSpec`."""

    name: str = "campaign"
    spec: CampaignSpec | None = None

    def make(self) -> Flow:
        """Return the campaign flow; everything after the initial set is added dynamically."""
        if self.spec is None:
            raise ValueError("CampaignMaker.spec is required")
        initial = place(build_initial_set(self.spec), self.spec, "initial set", "other")
        return Flow([initial], output=initial.output, name=self.spec.name)

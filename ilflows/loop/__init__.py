"""The concurrent-learning loop: seam Makers and the campaign Maker."""

from ilflows.loop.campaign import CampaignMaker
from ilflows.loop.jobs import type_map_of
from ilflows.loop.steps import ExploreMaker, LabelMaker, TrainMaker

__all__ = ["CampaignMaker", "ExploreMaker", "LabelMaker", "TrainMaker", "type_map_of"]

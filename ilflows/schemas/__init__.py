"""Pydantic documents exchanged between ilflows jobs and kept in the JobStore."""

from ilflows.schemas.campaign import CampaignSpec, SpecError, load_spec
from ilflows.schemas.frames import Frame, FrameOrigin
from ilflows.schemas.records import (
    BIG_FIELDS,
    DFTLabel,
    DFTResult,
    Exploration,
    FlaggedFrame,
    InitialSet,
    LearningCurvePoint,
    MDFrames,
    MDResult,
    ModelFile,
    SelectedFrame,
    SelectionRecord,
    TrainingRun,
    TrainResult,
    Trajectory,
)

__all__ = [
    "BIG_FIELDS",
    "CampaignSpec",
    "DFTLabel",
    "DFTResult",
    "MDResult",
    "Exploration",
    "FlaggedFrame",
    "Frame",
    "InitialSet",
    "FrameOrigin",
    "LearningCurvePoint",
    "MDFrames",
    "ModelFile",
    "SelectedFrame",
    "SelectionRecord",
    "SpecError",
    "TrainingRun",
    "TrainResult",
    "Trajectory",
    "load_spec",
]

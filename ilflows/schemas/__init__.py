"""Pydantic documents exchanged between ilflows jobs and kept in the JobStore."""

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
    Production,
    SelectedFrame,
    SelectionRecord,
    TrainingRun,
    TrainResult,
    Trajectory,
)
from ilflows.schemas.results import Calibration, ErrorMetrics, Parity, Properties, Validation

__all__ = [
    "BIG_FIELDS",
    "DFTLabel",
    "DFTResult",
    "Calibration",
    "ErrorMetrics",
    "MDResult",
    "Exploration",
    "FlaggedFrame",
    "Frame",
    "InitialSet",
    "FrameOrigin",
    "LearningCurvePoint",
    "MDFrames",
    "ModelFile",
    "Parity",
    "Production",
    "Properties",
    "SelectedFrame",
    "SelectionRecord",
    "TrainingRun",
    "TrainResult",
    "Trajectory",
    "Validation",
]

"""Data: the procedural 4D scene engine (synthetic) and training / evaluation samples (samples)."""

from fsm.data.samples import (
    HELDOUT_SCENES,
    TRAIN_SEEDS,
    VALIDATION_SCENES,
    ClipSource,
    Sample,
    SampleConfig,
    SampleSource,
    SyntheticSource,
    heldout_samples,
    heldout_views,
)
from fsm.data.synthetic import FAMILIES, PATH_KINDS, frame_times, make_path, make_scene, novel_cameras, render, trace

__all__ = [
    "FAMILIES",
    "HELDOUT_SCENES",
    "PATH_KINDS",
    "TRAIN_SEEDS",
    "VALIDATION_SCENES",
    "ClipSource",
    "Sample",
    "SampleConfig",
    "SampleSource",
    "SyntheticSource",
    "frame_times",
    "heldout_samples",
    "heldout_views",
    "make_path",
    "make_scene",
    "novel_cameras",
    "render",
    "trace",
]

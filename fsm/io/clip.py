"""The in-memory clip: frames + one camera per frame + timestamps (the boundary type of fsm.io)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class ClipError(ValueError):
    """A clip or camera file cannot be used. The message names the file and the problem.

    `cli` is the same message in command-line terms (`--cameras PATH` where str() says
    `cameras=PATH`); the command-line tools print it.
    """

    def __init__(self, message: str, cli: str | None = None):
        super().__init__(message)
        self.cli = cli or message


class CamerasNotFound(ClipError):
    """No camera file was given or found for a video / image folder (estimate_cameras can make one)."""


@dataclass
class Cameras:
    """One camera per frame. OpenCV axes; intrinsics in pixels of a (height, width) image."""

    c2w: torch.Tensor  # (N,4,4) float32
    fxfycxcy: torch.Tensor  # (N,4) float32
    times: torch.Tensor  # (N,) float64 seconds
    height: int
    width: int

    def __len__(self) -> int:
        return self.c2w.shape[0]


@dataclass
class Clip:
    frames: torch.Tensor  # (N,3,H,W) float32 in [0,1]
    cameras: Cameras  # intrinsics in pixels of `frames`
    fps: float
    source: dict = field(default_factory=dict)  # paths, camera format, original size, frame indices

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def c2w(self) -> torch.Tensor:
        return self.cameras.c2w

    @property
    def fxfycxcy(self) -> torch.Tensor:
        return self.cameras.fxfycxcy

    @property
    def times(self) -> torch.Tensor:
        return self.cameras.times

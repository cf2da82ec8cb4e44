"""Rendering a camera path to an mp4: sizes, intrinsics from a field of view, the H.264 writer."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import torch

from fsm_viewer.paths import CameraPath


def snap(x: float, multiple: int) -> int:
    """Round to the nearest positive multiple (the model needs sizes divisible by its patch)."""
    return max(multiple, int(round(x / multiple)) * multiple)


def intrinsics_from_fov(fov: float, height: int, width: int) -> torch.Tensor:
    """Pinhole fx fy cx cy (4,) for a vertical fov (radians), square pixels, centred."""
    fy = 0.5 * height / math.tan(0.5 * fov)
    return torch.tensor([fy, fy, width / 2, height / 2], dtype=torch.float32)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3,H,W) float [0,1] -> (H,W,3) uint8."""
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def render_path_video(
    render: Callable[[torch.Tensor, torch.Tensor, float, int, int], torch.Tensor],
    path: CameraPath,
    out: str | Path,
    patch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Render every frame of `path` with `render(c2w, fxfycxcy, time, H, W) -> (3,H,W)` and
    encode them as H.264 into `out`, one frame at a time (memory does not grow with length).
    Returns the number of frames written. progress(done, total) is called after each frame."""
    c2w, times, fov = path.sample()
    H = snap(path.height, patch)
    W = snap(path.height * path.aspect, patch)
    with VideoWriter(out, W, H, path.fps) as writer:
        for i in range(len(times)):
            image = render(c2w[i], intrinsics_from_fov(fov[i], H, W), float(times[i]), H, W)
            writer.write(to_uint8(image))
            if progress is not None:
                progress(i + 1, len(times))
    return len(times)


class VideoWriter:
    """H.264 mp4 writer over PyAV, frame by frame. (fsm.io.write_clip writes a whole clip with its
    cameras at once; a path render wants to stream frames to disk as they are made.)"""

    def __init__(self, path: str | Path, width: int, height: int, fps: float):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 (yuv420p) needs even sizes, got {width}x{height}")
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": "18"}

    def write(self, rgb: np.ndarray) -> None:
        """rgb: (H,W,3) uint8."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

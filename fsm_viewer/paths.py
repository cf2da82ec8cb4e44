"""Camera/time paths: keyframes, sampling, JSON files, and rendering a path to an mp4.

A path is a list of keyframes, each a camera (OpenCV c2w in the clip's own world frame, a
vertical field of view) and a clip time in seconds. Playing it back samples `duration * fps`
frames at uniform parameters s in [0, K-1]: the pose follows fsm.cameras.interpolate_cameras
(slerp + Catmull-Rom through the keys); time and field of view are linear in s.

The JSON file (version 1):

    {"format": "fsm-view-path", "version": 1, "fps": 24.0, "duration": 4.0,
     "height": 128, "aspect": 1.0,
     "keyframes": [{"c2w": [[4 x 4]], "time": 0.5, "fov": 0.9}, ...]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import torch

from fsm.cameras import interpolate_cameras

FORMAT = "fsm-view-path"
VERSION = 1


class PathError(ValueError):
    """A path file cannot be used; the message names the file and the problem."""


@dataclass
class Keyframe:
    c2w: np.ndarray  # (4,4) OpenCV camera-to-world, clip world frame
    time: float  # seconds on the clip's clock
    fov: float  # vertical field of view, radians


@dataclass
class CameraPath:
    keyframes: list[Keyframe] = field(default_factory=list)
    fps: float = 24.0
    duration: float = 4.0  # seconds of video
    height: int = 128  # output height in pixels (width = height * aspect, both rounded to the patch)
    aspect: float = 1.0  # width / height

    @property
    def num_frames(self) -> int:
        return max(1, round(self.duration * self.fps))

    def sample(self) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Every output frame's camera: c2w (M,4,4) float32, times (M,) seconds, fov (M,) radians."""
        if not self.keyframes:
            raise PathError("the path has no keyframes")
        K, M = len(self.keyframes), self.num_frames
        s = np.linspace(0.0, K - 1, M) if M > 1 else np.zeros(1)
        keys = torch.tensor(np.stack([k.c2w for k in self.keyframes]), dtype=torch.float64)
        c2w = interpolate_cameras(keys, torch.from_numpy(s)).float()
        knots = np.arange(K, dtype=np.float64)
        times = np.interp(s, knots, [k.time for k in self.keyframes])
        fov = np.interp(s, knots, [k.fov for k in self.keyframes])
        return c2w, times, fov

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "fps": self.fps, "duration": self.duration,
            "height": self.height, "aspect": self.aspect,
            "keyframes": [{"c2w": np.asarray(k.c2w, dtype=float).tolist(), "time": float(k.time), "fov": float(k.fov)} for k in self.keyframes],
        }

    @staticmethod
    def from_dict(d: dict, source: str = "path") -> "CameraPath":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PathError(f"{source}: not an fsm-view camera path (expected \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise PathError(f"{source}: path version {d.get('version')} is not supported (this fsm-view reads version {VERSION})")
        try:
            keys = [Keyframe(np.asarray(k["c2w"], dtype=np.float64), float(k["time"]), float(k["fov"])) for k in d["keyframes"]]
            path = CameraPath(keys, float(d["fps"]), float(d["duration"]), int(d["height"]), float(d.get("aspect", 1.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise PathError(f"{source}: malformed camera path ({type(e).__name__}: {e})") from None
        for i, k in enumerate(keys):
            if k.c2w.shape != (4, 4) or not np.isfinite(k.c2w).all() or abs(np.linalg.det(k.c2w[:3, :3]) - 1) > 1e-3:
                raise PathError(f"{source}: keyframe {i} c2w is not a finite 4x4 rigid transform")
            if not (0 < k.fov < math.pi) or not math.isfinite(k.time):
                raise PathError(f"{source}: keyframe {i} has fov {k.fov} (needs 0 < fov < pi) or a non-finite time")
        if not (path.fps > 0 and path.duration > 0 and path.height >= 8 and path.aspect > 0):
            raise PathError(f"{source}: fps, duration, height and aspect must be positive (height >= 8)")
        return path

    def save(self, file: str | Path) -> None:
        Path(file).write_text(json.dumps(self.to_dict(), indent=1))

    @staticmethod
    def load(file: str | Path) -> "CameraPath":
        try:
            d = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PathError(f"{file}: cannot read camera path ({e})") from None
        return CameraPath.from_dict(d, str(file))


# ----------------------------------------------------------------------------------------------
# Rendering


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

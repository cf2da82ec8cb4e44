"""Camera/time paths: keyframes, sampling and JSON files (rendering one: fsm_viewer/video.py).

A path is a list of keyframes, each a camera (OpenCV c2w in the clip's own world frame, a
vertical field of view) and a clip time in seconds. Playing it back samples `duration * fps`
frames at uniform parameters s in [0, K-1]: the pose follows fsm.cameras.interpolate_cameras
(slerp + Catmull-Rom through the keys); time and field of view are linear in s.

The JSON file (version 1):

    {"format": "fsm-view-path", "version": 1, "fps": 24.0, "duration": 4.0,
     "height": 128, "aspect": 1.0,
     "keyframes": [{"c2w": [[4 x 4]], "time": 0.5, "fov": 0.9}, ...],
     "stream": {"frames_per_chunk": 8, "elastic": {...}, ...}}

"stream" (optional) is the StreamConfig the viewer's memory had when the path was saved;
fsm-render streams the clip with it. Reading a path needs only numpy (fsm-render checks the
file before torch loads); sampling one imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    stream: dict | None = None  # StreamConfig.to_dict() of the memory the path was made with

    @property
    def num_frames(self) -> int:
        return max(1, round(self.duration * self.fps))

    def sample(self):
        """Every output frame's camera: c2w (M,4,4) float32 tensor, times (M,) seconds, fov (M,) radians."""
        import torch  # here, not at the top: reading a path file must not load torch

        from fsm.cameras import interpolate_cameras

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
        } | ({"stream": self.stream} if self.stream is not None else {})

    @staticmethod
    def from_dict(d: dict, source: str = "path") -> "CameraPath":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PathError(f"{source}: not an fsm-view camera path (expected \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise PathError(f"{source}: path version {d.get('version')} is not supported (this fsm-view reads version {VERSION})")
        try:
            keys = [Keyframe(np.asarray(k["c2w"], dtype=np.float64), float(k["time"]), float(k["fov"])) for k in d["keyframes"]]
            path = CameraPath(keys, float(d["fps"]), float(d["duration"]), int(d["height"]), float(d.get("aspect", 1.0)), d.get("stream"))
        except (KeyError, TypeError, ValueError) as e:
            raise PathError(f"{source}: malformed camera path ({type(e).__name__}: {e})") from None
        for i, k in enumerate(keys):
            if k.c2w.shape != (4, 4) or not np.isfinite(k.c2w).all() or abs(np.linalg.det(k.c2w[:3, :3]) - 1) > 1e-3:
                raise PathError(f"{source}: keyframe {i} c2w is not a finite 4x4 rigid transform")
            if not (0 < k.fov < math.pi) or not math.isfinite(k.time):
                raise PathError(f"{source}: keyframe {i} has fov {k.fov} (needs 0 < fov < pi) or a non-finite time")
        if not (path.fps > 0 and path.duration > 0 and path.height >= 8 and path.aspect > 0):
            raise PathError(f"{source}: fps, duration, height and aspect must be positive (height >= 8)")
        if path.stream is not None and not isinstance(path.stream, dict):
            raise PathError(f"{source}: \"stream\" must be an object (the stream settings), got {type(path.stream).__name__}")
        return path

    def save(self, file: str | Path) -> None:
        file = Path(file)
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(file)  # atomic: a reader never sees half a file

    @staticmethod
    def load(file: str | Path) -> "CameraPath":
        try:
            d = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PathError(f"{file}: cannot read camera path ({e})") from None
        return CameraPath.from_dict(d, str(file))

"""write_clip: frames + cameras -> H.264 video + fsm-view camera JSON with the same stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fsm.io.clip import Cameras, ClipError
from fsm.io.formats import write_cameras
from fsm.io.video import write_video


def _check(path: Path, frames: torch.Tensor, cameras: Cameras) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ClipError(f"{path}: frames must be (N,3,H,W), got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ClipError(f"{path}: zero frames to write")
    if frames.shape[0] != len(cameras):
        raise ClipError(f"{path}: {frames.shape[0]} frames but {len(cameras)} cameras (frame/camera count mismatch)")
    if tuple(frames.shape[2:]) != (cameras.height, cameras.width):
        raise ClipError(f"{path}: frames are {frames.shape[3]}x{frames.shape[2]} but the cameras are for "
                        f"{cameras.width}x{cameras.height}")


def write_clip(path: str | Path, frames: torch.Tensor, cameras: Cameras, fps: float, crf: int = 18) -> Path:
    """Write `path` (H.264 yuv420p, e.g. .mp4) and its sidecar `path.with_suffix('.json')`.

    frames (N,3,H,W) float in [0,1] with even H, W; cameras for those frames. Returns the JSON
    path. load_clip(path) reads both back (cameras exactly, frames to crf-18 quality).
    """
    path = Path(path)
    _check(path, frames, cameras)
    write_video(path, frames, fps, crf)
    return write_cameras(path.with_suffix(".json"), cameras, "fsm-view", fps=fps, video=path.name)


def write_images(folder: str | Path, frames: torch.Tensor, pattern: str = "{:05d}.png", start: int = 0) -> list[Path]:
    """(N,3,H,W) float in [0,1] -> 8-bit PNG (or any suffix PIL writes) files numbered from
    `start`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    paths = []
    for i in range(rgb.shape[0]):
        p = folder / pattern.format(start + i)
        Image.fromarray(np.ascontiguousarray(rgb[i])).save(p)
        paths.append(p)
    return paths

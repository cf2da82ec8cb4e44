"""LaCT `opencv_cameras.json`: a list (or {"frames": list}) of

    {"w2c": 4x4 OpenCV world-to-camera, "fx", "fy", "cx", "cy" (pixels), "w", "h", "file_path"}

with file_path relative to the JSON file. RGBA images are composited on white (fsm.io.images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsm.io.clip import Cameras
from fsm.io.images import image_with_suffix
from fsm.io.formats.base import (
    CameraFile, frame_hw, frames_list, matrix, pixel_intrinsics, resolve_inside, rigid_inverse, write_json,
)

NAME = "lact"


def _entries(data):
    return data if isinstance(data, list) else data.get("frames") if isinstance(data, dict) else None


def claims(data) -> bool:
    entries = _entries(data)
    return isinstance(entries, list) and bool(entries) and isinstance(entries[0], dict) \
        and "w2c" in entries[0] and "file_path" in entries[0]


def read(path: Path, data) -> CameraFile:
    frames = frames_list({"frames": _entries(data)}, "frames", path)
    w2c, K, hw, files = [], [], [], []
    for i, f in enumerate(frames):
        where = f"entry {i}"
        w2c.append(matrix(f, "w2c", path, where))
        K.append(pixel_intrinsics(f, path, where))
        hw.append(frame_hw(f, path, where))
        files.append(image_with_suffix(resolve_inside(path.parent, f.get("file_path"), path, where)))
    return CameraFile(
        path=path,
        format=NAME,
        c2w=rigid_inverse(np.stack(w2c)),
        fxfycxcy=np.asarray(K, dtype=np.float64),
        image_hw=np.asarray(hw, dtype=np.int64),
        image_files=files,
    )


def write(path: Path, cameras: Cameras, image_files: list[str]) -> None:
    w2c = rigid_inverse(cameras.c2w.double().numpy())
    entries = []
    for i in range(len(cameras)):
        fx, fy, cx, cy = cameras.fxfycxcy[i].tolist()
        entries.append({"w": cameras.width, "h": cameras.height, "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                        "w2c": w2c[i].tolist(), "file_path": str(image_files[i])})
    write_json(path, entries)

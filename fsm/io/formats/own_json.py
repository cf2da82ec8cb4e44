"""fsm-view's own camera JSON (the sidecar that `write_clip` writes). Spec: docs/clips.md.

    {"format": "fsm-view-cameras", "version": 1, "fps": 30.0, "width": W, "height": H,
     "video": "clip.mp4",                       # optional, relative to this file
     "frames": [{"index": 0, "time": 0.0, "fx": .., "fy": .., "cx": .., "cy": ..,
                 "c2w": 4x4 OpenCV             # or "w2c": 4x4 OpenCV
                 "file_path": "images/0.png"}]} # optional: frames as image files
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsm.io.clip import Cameras, ClipError
from fsm.io.images import image_with_suffix
from fsm.io.formats.base import (
    CameraFile, frames_list, matrix, number, pixel_intrinsics, resolve_inside, rigid_inverse, write_json,
)

NAME = "fsm-view"
FORMAT_TAG = "fsm-view-cameras"
VERSION = 1


def claims(data) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT_TAG


def read(path: Path, data: dict) -> CameraFile:
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ClipError(f"{path}: {FORMAT_TAG} version {version!r} is not supported (this reader knows 1..{VERSION})")
    frames = frames_list(data, "frames", path)
    width = number(data, "width", path, "the file", "image size")
    height = number(data, "height", path, "the file", "image size")
    fps = number(data, "fps", path, "the file", "frame rate") if "fps" in data else None

    c2w, K, idx, times, files = [], [], [], [], []
    for i, f in enumerate(frames):
        where = f"frame {i}"
        if "c2w" in f:
            c2w.append(matrix(f, "c2w", path, where))
        elif "w2c" in f:
            c2w.append(rigid_inverse(matrix(f, "w2c", path, where)))
        else:
            raise ClipError(f"{path}: {where} has neither 'c2w' nor 'w2c' (missing pose)")
        K.append(pixel_intrinsics(f, path, where))
        idx.append(int(number(f, "index", path, where, "frame index")) if "index" in f else i)
        times.append(number(f, "time", path, where, "time") if "time" in f else None)
        files.append(image_with_suffix(resolve_inside(path.parent, f["file_path"], path, where)) if "file_path" in f else None)

    if any(t is None for t in times) and not all(t is None for t in times):
        raise ClipError(f"{path}: some frames have a 'time' and some do not")
    if any(p is None for p in files) and not all(p is None for p in files):
        raise ClipError(f"{path}: some frames have a 'file_path' and some do not")
    n = len(frames)
    return CameraFile(
        path=path,
        format=NAME,
        c2w=np.stack(c2w),
        fxfycxcy=np.asarray(K, dtype=np.float64),
        image_hw=np.tile([int(height), int(width)], (n, 1)),
        times=None if times[0] is None else np.asarray(times, dtype=np.float64),
        frame_indices=np.asarray(idx, dtype=np.int64),
        image_files=None if files[0] is None else files,
        video=resolve_inside(path.parent, data["video"], path, "the file's 'video'") if data.get("video") else None,
        fps=fps,
    )


def write(path: Path, cameras: Cameras, fps: float, video: str | None = None, image_files: list[str] | None = None,
          indices: list[int] | None = None) -> None:
    """c2w is written as is (not inverted), so float32 cameras read back bit-exactly. indices: the
    video frame (or folder image) of each camera, when not 0, 1, 2, ..."""
    frames = []
    for i in range(len(cameras)):
        fx, fy, cx, cy = cameras.fxfycxcy[i].tolist()
        f = {"index": i if indices is None else int(indices[i]), "time": float(cameras.times[i]), "fx": fx, "fy": fy, "cx": cx, "cy": cy,
             "c2w": cameras.c2w[i].tolist()}
        if image_files is not None:
            f["file_path"] = str(image_files[i])
        frames.append(f)
    data = {"format": FORMAT_TAG, "version": VERSION, "fps": float(fps),
            "width": cameras.width, "height": cameras.height}
    if video is not None:
        data["video"] = str(video)
    data["frames"] = frames
    write_json(path, data)


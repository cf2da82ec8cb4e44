"""The official FSM / Stereo4D camera JSON (the format of the FSM release's example clip).

Despite its usual `.jsonl` suffix the file is one JSON object:

    {"scene_name", "video_path", "num_video_frames",
     "frames": [{"frame_idx", "w2c": 4x4 OpenCV world-to-camera, "fx", "fy", "cx", "cy", "h", "w"}]}

`video_path` is a path inside the repository that produced the file, so the video is found by
its base name next to the JSON. Times are frame_idx / fps of that video (set by fsm.io.load).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fsm.io.clip import Cameras
from fsm.io.formats.base import CameraFile, frame_hw, frames_list, matrix, number, pixel_intrinsics, rigid_inverse, write_json

NAME = "stereo4d"


def claims(data) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        return False
    first = data["frames"][0]
    return isinstance(first, dict) and "frame_idx" in first and "w2c" in first


def read(path: Path, data: dict) -> CameraFile:
    frames = frames_list(data, "frames", path)
    w2c, K, hw, idx = [], [], [], []
    for i, f in enumerate(frames):
        where = f"frames[{i}]"
        w2c.append(matrix(f, "w2c", path, where))
        K.append(pixel_intrinsics(f, path, where))
        hw.append(frame_hw(f, path, where))
        idx.append(int(number(f, "frame_idx", path, where, "frame index")))
    video_path = data.get("video_path")
    # os.path.basename also strips a Windows-style prefix written on another machine.
    video = path.parent / os.path.basename(video_path.replace("\\", "/")) if isinstance(video_path, str) and video_path else None
    return CameraFile(
        path=path,
        format=NAME,
        c2w=rigid_inverse(np.stack(w2c)),
        fxfycxcy=np.asarray(K, dtype=np.float64),
        image_hw=np.asarray(hw, dtype=np.int64),
        frame_indices=np.asarray(idx, dtype=np.int64),
        video=video,
        info={"scene_name": data.get("scene_name"), "num_video_frames": data.get("num_video_frames")},
    )


def write(path: Path, cameras: Cameras, video: str) -> None:
    w2c = rigid_inverse(cameras.c2w.double().numpy())
    frames = []
    for i in range(len(cameras)):
        fx, fy, cx, cy = cameras.fxfycxcy[i].tolist()
        frames.append({"frame_idx": i, "w2c": w2c[i].tolist(), "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                       "h": cameras.height, "w": cameras.width})
    write_json(path, {"scene_name": Path(path).stem, "video_path": str(video),
                      "num_video_frames": len(cameras), "frames": frames})

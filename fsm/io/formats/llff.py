"""LLFF `poses_bounds.npy` (the NeRF "forward-facing" scenes; written by LLFF's imgs2poses.py).

An (N, 17) float array, one row per image in name order: a 3x5 matrix, row-major, then the
scene's near and far bounds. The 3x5 matrix is [R | t | hwf]: a camera-to-world rotation whose
columns are the camera's [down, right, back] axes, the camera position, and the full-size
image's height, width and focal length (pixels; principal point at the centre).

OpenCV's [right, down, forward] axes are the columns [1, 0, -2]. The images are those of
`images/` next to the file (or, when absent, the least downsampled `images_N/`); downsampled
folders are matched by scaling the intrinsics to the decoded size (fsm.io.load).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fsm.io.clip import ClipError
from fsm.io.formats.base import CameraFile
from fsm.io.images import IMAGE_SUFFIXES, natural_key

NAME = "llff"
FILE_NAME = "poses_bounds.npy"


def read(path: Path) -> CameraFile:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ClipError(f"{path}: cannot read LLFF poses ({e})") from None
    if a.ndim != 2 or a.shape[1] != 17 or a.shape[0] == 0:
        raise ClipError(f"{path}: LLFF poses_bounds.npy must be an (N, 17) array, got shape {a.shape}")
    a = a.astype(np.float64)
    m = a[:, :15].reshape(-1, 3, 5)  # [R | t | hwf]
    h, w, f = m[:, 0, 4], m[:, 1, 4], m[:, 2, 4]
    c2w = np.tile(np.eye(4), (len(a), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = m[:, :, 1], m[:, :, 0], -m[:, :, 2]  # [down, right, back] -> OpenCV
    c2w[:, :3, 3] = m[:, :, 3]
    return CameraFile(
        path=path,
        format=NAME,
        c2w=c2w,
        fxfycxcy=np.stack([f, f, w / 2, h / 2], 1),
        image_hw=np.stack([np.round(h), np.round(w)], 1).astype(np.int64),
        image_files=_images(path, len(a)),
        info={"bounds": a[:, 15:].tolist()},
    )


def _images(path: Path, n: int) -> list[Path] | None:
    """The images of `images/` (else the least downsampled `images_N/`), one per pose."""
    folders = [path.parent / "images"] + sorted(
        (p for p in path.parent.glob("images_*") if re.fullmatch(r"images_\d+", p.name)), key=lambda p: int(p.name[7:]))
    for folder in folders:
        if folder.is_dir():
            files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
            if len(files) != n:
                raise ClipError(f"{path}: has {n} poses but {folder.name}/ has {len(files)} images (frame/camera count mismatch)")
            return files
    return None  # load_clip then uses the folder it was given

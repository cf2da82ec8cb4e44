"""nerfstudio / instant-ngp `transforms.json`.

    {"fl_x", "fl_y", "cx", "cy", "w", "h",          # at top level, or per frame (per frame wins)
     "camera_model", "k1", "k2", "k3", "k4", "p1", "p2",   # optional distortion
     "camera_angle_x", "camera_angle_y",            # instant-ngp / Blender: field of view instead of fl_x
     "K" or "intrinsic_matrix": 3x3,                # per frame: intrinsics as a matrix instead of fl_x ...
     "frames": [{"file_path": "images/frame_00001.png", "transform_matrix": 4x4 c2w}]}

`transform_matrix` is camera-to-world in OpenGL axes (x right, y up, z backward); OpenCV's y and z
point the other way, so negating the 2nd and 3rd columns of the rotation converts it. Frames
whose image file is missing are skipped with a warning (instant-ngp exports list them).
Distortion is reported and warned about: frames are used as they are, undistortion is not done.
Camera models other than a pinhole with such distortion (fisheye, equirectangular, ...) cannot be
used as pinhole images at all and are refused.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from fsm.io.clip import Cameras, ClipError
from fsm.io.formats.base import CameraFile, frames_list, matrix, number, resolve_inside, write_json
from fsm.io.images import image_size, image_with_suffix

NAME = "nerfstudio"
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
# Pinhole projection, possibly with the radial/tangential distortion of DISTORTION_KEYS (reported,
# not undone). nerfstudio writes OPENCV / PINHOLE; COLMAP exports add the others.
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "FULL_OPENCV", "PERSPECTIVE")


def claims(data) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        return False
    first = data["frames"][0]
    return isinstance(first, dict) and "transform_matrix" in first


def read(path: Path, data: dict) -> CameraFile:
    frames = frames_list(data, "frames", path)
    c2w, K, hw, files, missing, distortion = [], [], [], [], [], {}
    for i, f in enumerate(frames):
        where = f"frames[{i}]"
        file = _existing_image(resolve_inside(path.parent, f.get("file_path"), path, where))
        if file is None:
            missing.append(f["file_path"])
            continue
        cam = {**data, **f}  # per-frame keys override the shared ones
        model = str(cam.get("camera_model", "OPENCV"))
        if model.upper() not in PINHOLE_MODELS:
            raise ClipError(f"{path}: {where} has camera_model {model!r}, which fsm-view cannot use (it renders pinhole "
                            f"images; supported: {', '.join(PINHOLE_MODELS)}). Undistort / reproject the images first")
        K_matrix = next((cam[k] for k in ("K", "intrinsic_matrix") if k in cam), None)
        if K_matrix is not None and "fl_x" not in cam:
            cam.update(_from_matrix(K_matrix, path, where))

        w, h = (number(cam, "w", path, where, "image size"), number(cam, "h", path, where, "image size")) \
            if "w" in cam and "h" in cam else image_size(file)[::-1]
        if "fl_x" in cam:
            fx = number(cam, "fl_x", path, where, "intrinsics")
        elif "camera_angle_x" in cam:  # horizontal field of view in radians
            fx = 0.5 * w / math.tan(0.5 * number(cam, "camera_angle_x", path, where, "intrinsics"))
        else:
            raise ClipError(f"{path}: {where} has no 'fl_x', 'K' or 'camera_angle_x' (missing intrinsics)")
        if "fl_y" in cam:
            fy = number(cam, "fl_y", path, where, "intrinsics")
        elif "camera_angle_y" in cam:
            fy = 0.5 * h / math.tan(0.5 * number(cam, "camera_angle_y", path, where, "intrinsics"))
        else:
            fy = fx  # square pixels, as nerfstudio and instant-ngp assume
        # A missing principal point means the image centre (instant-ngp's default).
        cx = number(cam, "cx", path, where, "intrinsics") if "cx" in cam else w / 2
        cy = number(cam, "cy", path, where, "intrinsics") if "cy" in cam else h / 2

        m = matrix(f, "transform_matrix", path, where)
        m[:3, 1:3] *= -1.0  # OpenGL -> OpenCV: flip the camera's y and z axes
        c2w.append(m)
        K.append([fx, fy, cx, cy])
        hw.append([int(round(h)), int(round(w))])
        files.append(file)
        for k in DISTORTION_KEYS:
            value = number(cam, k, path, where, "distortion") if cam.get(k) is not None else 0.0
            if value != 0.0:
                distortion.setdefault(k, value)

    info = {"camera_model": data.get("camera_model", "OPENCV")}
    if missing:
        msg = f"{path}: skipped {len(missing)} of {len(frames)} frames whose images are missing (first: {missing[0]})"
        warnings.warn(msg, stacklevel=3)
        info["skipped_missing_images"] = missing
    if not files:
        raise ClipError(f"{path}: none of the {len(frames)} images it lists exist (first: {missing[0]})")
    if distortion:
        msg = (f"{path}: lens distortion {distortion} ({info['camera_model']}) is not undone; "
               "frames are used as pinhole images")
        warnings.warn(msg, stacklevel=3)
        info["distortion"] = distortion
    return CameraFile(
        path=path,
        format=NAME,
        c2w=np.stack(c2w),
        fxfycxcy=np.asarray(K, dtype=np.float64),
        image_hw=np.asarray(hw, dtype=np.int64),
        image_files=files,
        info=info,
    )


def _from_matrix(K, path: Path, where: str) -> dict:
    """fl_x, fl_y, cx, cy from a 3x3 (or 4x4) intrinsic matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]."""
    try:
        m = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ClipError(f"{path}: {where} intrinsic matrix is not numeric") from None
    if m.shape not in ((3, 3), (4, 4)) or not np.isfinite(m).all() or abs(m[2, 2] - 1) > 1e-6 or m[0, 1] != 0:
        raise ClipError(f"{path}: {where} intrinsic matrix {m.tolist()} is not [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    return {"fl_x": m[0, 0], "fl_y": m[1, 1], "cx": m[0, 2], "cy": m[1, 2]}


def _existing_image(file: Path) -> Path | None:
    """The image, or None when absent. Blender-style files omit the '.png' suffix."""
    file = image_with_suffix(file)
    return file if file.is_file() else None


def write(path: Path, cameras: Cameras, image_files: list[str]) -> None:
    c2w = cameras.c2w.double().numpy().copy()
    c2w[:, :3, 1:3] *= -1.0  # OpenCV -> OpenGL
    K = cameras.fxfycxcy.tolist()
    shared = all(k == K[0] for k in K)  # one camera for all frames: intrinsics at the top level
    data = {"camera_model": "OPENCV", "w": cameras.width, "h": cameras.height}
    if shared:
        data.update(dict(zip(("fl_x", "fl_y", "cx", "cy"), K[0])))
    frames = []
    for i in range(len(cameras)):
        f = {"file_path": str(image_files[i]), "transform_matrix": c2w[i].tolist()}
        if not shared:
            f.update(dict(zip(("fl_x", "fl_y", "cx", "cy"), K[i])))
        frames.append(f)
    data["frames"] = frames
    write_json(path, data)

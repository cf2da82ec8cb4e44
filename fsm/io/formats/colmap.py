"""COLMAP sparse models (`sparse/0/` with cameras.bin|txt, images.bin|txt, points3D), read with
pycolmap. The images are `images/` beside `sparse/` (COLMAP's project layout), named as in the
model; frames come in natural name order. COLMAP's world-to-camera poses use OpenCV axes.

Pinhole camera models, with or without radial/tangential distortion (reported, not undone), are
read; fisheye and other models that are not pinhole projections are refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fsm.io.clip import ClipError
from fsm.io.formats.base import CameraFile, resolve_inside
from fsm.io.images import natural_key

NAME = "colmap"
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


def is_model(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f"cameras{s}").is_file() for s in (".bin", ".txt"))


def find_model(folder: Path) -> Path | None:
    """The sparse model of a COLMAP project folder (sparse/0, else sparse), or the folder itself."""
    for cand in (folder, folder / "sparse" / "0", folder / "sparse"):
        if is_model(cand):
            return cand
    return None


def read(path: Path) -> CameraFile:
    import pycolmap  # only COLMAP models need it

    try:
        rec = pycolmap.Reconstruction(path)
    except Exception as e:  # pycolmap raises ValueError/RuntimeError with COLMAP's check text
        raise ClipError(f"{path}: cannot read the COLMAP model ({str(e).strip().splitlines()[-1]})") from None
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: natural_key(Path(im.name)))
    if not images:
        raise ClipError(f"{path}: the COLMAP model has no registered images (zero cameras)")
    root = path.parent.parent if path.parent.name == "sparse" else path.parent  # project/sparse/0 -> project
    image_dir = root / "images"
    w2c = np.tile(np.eye(4), (len(images), 1, 1))
    K, hw, files, distortion = [], [], [], {}
    for i, im in enumerate(images):
        cam = rec.cameras[im.camera_id]
        model = cam.model_name if hasattr(cam, "model_name") else str(cam.model).split(".")[-1]
        if model not in PINHOLE_MODELS:
            raise ClipError(f"{path}: image {im.name} uses the COLMAP camera model {model}, which fsm-view cannot use "
                            f"(pinhole models only: {', '.join(PINHOLE_MODELS)}); undistort with `colmap image_undistorter`")
        w2c[i, :3] = im.cam_from_world().matrix()
        K.append([cam.focal_length_x, cam.focal_length_y, cam.principal_point_x, cam.principal_point_y])
        hw.append([cam.height, cam.width])
        files.append(resolve_inside(image_dir, im.name, path, f"image {im.image_id}"))
        extra = [float(v) for v in np.delete(cam.params, list(cam.focal_length_idxs()) + list(cam.principal_point_idxs()))]
        if any(v != 0.0 for v in extra):
            distortion.setdefault(model, extra)
    info = {"camera_model": sorted({rec.cameras[im.camera_id].model_name for im in images})}
    if distortion:
        warnings.warn(f"{path}: lens distortion {distortion} is not undone; frames are used as pinhole images", stacklevel=3)
        info["distortion"] = distortion
    c2w = np.linalg.inv(w2c)
    c2w[:, 3] = [0.0, 0.0, 0.0, 1.0]
    return CameraFile(path=path, format=NAME, c2w=c2w, fxfycxcy=np.asarray(K, dtype=np.float64),
                      image_hw=np.asarray(hw, dtype=np.int64), image_files=files, info=info)

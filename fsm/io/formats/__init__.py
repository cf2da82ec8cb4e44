"""Camera-file readers and writers, one module per format.

`read_cameras(path)` detects the format from the suffix and the content, reads the file into a
validated `CameraFile` (OpenCV c2w, intrinsics in pixels of the size the file states).
`write_cameras(path, cameras, format)` writes any of the formats (round-trip tests, export).
"""

from __future__ import annotations

from pathlib import Path

from fsm.io.clip import Cameras, ClipError
from fsm.io.formats import colmap, lact, llff, nerfstudio, own_json, realestate10k, stereo4d
from fsm.io.formats.base import CameraFile, read_json, validate

# JSON formats in the order they are tried; each `claims` looks only at the keys it needs.
JSON_FORMATS = (own_json, stereo4d, nerfstudio, lact)
# Formats write_cameras writes; read_cameras also reads COLMAP models and LLFF poses_bounds.npy.
CAMERA_FORMATS = (own_json.NAME, stereo4d.NAME, realestate10k.NAME, nerfstudio.NAME, lact.NAME)
CAMERA_SUFFIXES = (".json", ".jsonl", ".txt", ".npy")

__all__ = ["CAMERA_FORMATS", "CAMERA_SUFFIXES", "CameraFile", "read_cameras", "write_cameras"]


def read_cameras(path: str | Path) -> CameraFile:
    path = Path(path)
    if path.is_dir():  # a COLMAP model (sparse/0), or a project folder holding one
        model = colmap.find_model(path)
        if model is None:
            raise ClipError(f"{path}: is a folder but not a COLMAP model (no cameras.bin or cameras.txt in it or in sparse/0)")
        return validate(colmap.read(model))
    if not path.is_file():
        raise ClipError(f"{path}: camera file not found")
    if path.suffix.lower() == ".txt":
        return validate(realestate10k.read(path))
    if path.suffix.lower() == ".npy":
        return validate(llff.read(path))
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise ClipError(f"{path}: unknown camera format (suffix {path.suffix!r}; expected .json, .jsonl, .txt, "
                        "LLFF poses_bounds.npy or a COLMAP sparse folder)")
    data = read_json(path)
    # An empty list of cameras gives no entry to recognise a format by; say what is wrong instead.
    if data == [] or (isinstance(data, dict) and data.get("frames") == []):
        what = "the camera list" if data == [] else "'frames'"
        raise ClipError(f"{path}: {what} is empty (zero cameras)")
    for fmt in JSON_FORMATS:
        if fmt.claims(data):
            return validate(fmt.read(path, data))
    keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise ClipError(
        f"{path}: unknown camera format (not fsm-view, Stereo4D/FSM, nerfstudio/instant-ngp or LaCT JSON; "
        f"top level: {keys})"
    )


def write_cameras(
    path: str | Path,
    cameras: Cameras,
    format: str = own_json.NAME,
    *,
    fps: float | None = None,
    video: str | None = None,
    image_files: list[str] | None = None,
    url: str = "",
    indices: list[int] | None = None,
) -> Path:
    """Write `cameras` as `format` (one of CAMERA_FORMATS) and return the path.

    video: the video's name relative to the file (fsm-view, stereo4d); image_files: one image per
    camera relative to the file (needed by nerfstudio, lact; optional for fsm-view); fps: needed by
    fsm-view; url: line 1 of a RealEstate10K file; indices: the video frame of each camera
    (fsm-view only; default 0, 1, 2, ...). Times survive in fsm-view and RealEstate10K
    (to 1 us) only; the other formats derive them from frame positions and the frame rate.
    """
    path = Path(path)
    if format == own_json.NAME:
        if fps is None:
            raise ValueError("the fsm-view format needs fps")
        own_json.write(path, cameras, fps, video=video, image_files=image_files, indices=indices)
    elif format == stereo4d.NAME:
        if video is None:
            raise ValueError("the stereo4d format needs the video's name")
        stereo4d.write(path, cameras, video)
    elif format == realestate10k.NAME:
        realestate10k.write(path, cameras, url)
    elif format in (nerfstudio.NAME, lact.NAME):
        if image_files is None or len(image_files) != len(cameras):
            raise ValueError(f"the {format} format needs one image file per camera")
        (nerfstudio if format == nerfstudio.NAME else lact).write(path, cameras, image_files)
    else:
        raise ValueError(f"unknown camera format {format!r}; expected one of {CAMERA_FORMATS}")
    return path

"""What every camera-file reader returns, and the checks they share.

A reader turns a file into a `CameraFile`: poses already converted to OpenCV c2w, intrinsics
still in pixels of the image size the file states (or normalised, for RealEstate10K). Matching
cameras to decoded frames (counts, rescaling to the real frame size, cropping) is
`fsm.io.load`'s job, because only it knows the frames.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsm.io.clip import ClipError

# How far R^T R may be from I (max abs entry) and det(R) from +1 before a pose counts as
# non-rigid. Files store float32 or printed decimals, which are good to ~1e-6; a scale or
# shear that matters for rendering is orders of magnitude above this.
RIGID_TOL = 1e-3


@dataclass
class CameraFile:
    """Cameras as one file states them (N entries, in the file's order)."""

    path: Path
    format: str
    c2w: np.ndarray  # (N,4,4) float64, OpenCV axes (x right, y down, z forward)
    fxfycxcy: np.ndarray  # (N,4) float64, pixels of image_hw[i]; normalised by (w, h) when image_hw is None
    image_hw: np.ndarray | None  # (N,2) int, the (h, w) the intrinsics refer to
    times: np.ndarray | None = None  # (N,) seconds, when the file states them
    frame_indices: np.ndarray | None = None  # (N,) video frame of each camera, when stated
    image_files: list[Path] | None = None  # one image per camera, when the file names them
    video: Path | None = None  # the video the file names, if any
    fps: float | None = None
    info: dict = field(default_factory=dict)  # format facts for Clip.source (distortion, ...)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def select(self, rows: np.ndarray) -> "CameraFile":
        """The same file restricted to the entries `rows` (e.g. after skipping missing images)."""

        def pick(a):
            return None if a is None else a[rows]

        return CameraFile(
            path=self.path,
            format=self.format,
            c2w=self.c2w[rows],
            fxfycxcy=self.fxfycxcy[rows],
            image_hw=pick(self.image_hw),
            times=pick(self.times),
            frame_indices=pick(self.frame_indices),
            image_files=None if self.image_files is None else [self.image_files[i] for i in rows],
            video=self.video,
            fps=self.fps,
            info=self.info,
        )


# ----------------------------------------------------------------------------------------------
# Parsing helpers: every failure becomes a ClipError that names the file and the entry.


def read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows editors) is skipped
    except (OSError, UnicodeDecodeError) as e:  # unreadable, or binary rather than text
        raise ClipError(f"{path}: cannot read camera file ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole_error:
        # A real JSON-lines file: accept it when it holds exactly one object (one scene).
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            objects = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            raise ClipError(f"{path}: not valid JSON ({whole_error})") from None
        if len(objects) != 1:
            raise ClipError(f"{path}: holds {len(objects)} JSON lines; expected one camera description") from None
        return objects[0]


def number(entry: dict, key: str, path: Path, where: str, what: str = "value") -> float:
    """entry[key] as a float; a missing key says which entry lacks which field."""
    if key not in entry or entry[key] is None:
        raise ClipError(f"{path}: {where} has no '{key}' (missing {what})")
    try:
        return float(entry[key])
    except (TypeError, ValueError):
        raise ClipError(f"{path}: {where} '{key}' is not a number: {entry[key]!r}") from None


def pixel_intrinsics(entry: dict, path: Path, where: str) -> list[float]:
    """[fx, fy, cx, cy] in pixels from an entry's keys of those names."""
    return [number(entry, k, path, where, "intrinsics") for k in ("fx", "fy", "cx", "cy")]


def frame_hw(entry: dict, path: Path, where: str) -> list[int]:
    """[h, w] from an entry's 'h' and 'w'."""
    return [int(number(entry, k, path, where, "image size")) for k in ("h", "w")]


def matrix(entry: dict, key: str, path: Path, where: str) -> np.ndarray:
    """entry[key] as a 4x4 float64 matrix (a 3x4 [R|t] gets the row 0 0 0 1)."""
    if key not in entry:
        raise ClipError(f"{path}: {where} has no '{key}' (missing pose)")
    try:
        m = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ClipError(f"{path}: {where} '{key}' is not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]], 0)
    if m.shape != (4, 4):
        raise ClipError(f"{path}: {where} '{key}' has shape {m.shape}; expected 4x4 (or 3x4)")
    return m


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (...,4,4): [R|t]^-1 = [R^T | -R^T t]. Exact for rotations and
    never fails on bad input (validate() rejects non-rigid matrices afterwards, since R^T of a
    non-rigid R is non-rigid too)."""
    out = np.zeros_like(m)
    Rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    out[..., 3, :3] = m[..., 3, :3]  # keep a bad bottom row visible to validate()
    return out


def resolve_inside(base: Path, file_path: str, path: Path, where: str) -> Path:
    """A file named in a camera file, relative to that file's folder; refuse paths that leave it.

    Lexical check (normpath, no symlink resolution): '..' and absolute paths elsewhere are
    refused, while a clip folder that is itself a symlink keeps working.
    """
    if not isinstance(file_path, str) or not file_path:
        raise ClipError(f"{path}: {where} 'file_path' is missing or not a string")
    root = os.path.normpath(os.path.abspath(base))
    full = os.path.normpath(os.path.join(root, file_path))
    if os.path.commonpath([root, full]) != root:
        raise ClipError(f"{path}: {where} file_path {file_path!r} escapes the clip folder {root}")
    return Path(full)


def frames_list(data, key: str, path: Path) -> list:
    frames = data.get(key) if isinstance(data, dict) else None
    if not isinstance(frames, list):
        raise ClipError(f"{path}: no '{key}' list")
    if not frames:
        raise ClipError(f"{path}: '{key}' is empty (zero cameras)")
    for i, f in enumerate(frames):
        if not isinstance(f, dict):
            raise ClipError(f"{path}: {key}[{i}] is not an object")
    return frames


def write_json(path: Path, data) -> None:
    """JSON with one camera entry per line: readable and diff-friendly, unlike indent=N, which
    spreads every 4x4 matrix over 24 lines. Floats use Python's shortest exact repr."""

    def entries(items: list) -> str:
        return "[\n" + ",\n".join("  " + json.dumps(e) for e in items) + "\n]"

    if isinstance(data, list):
        text = entries(data)
    else:
        fields = [f"{json.dumps(k)}: {entries(v) if isinstance(v, list) and v and isinstance(v[0], dict) else json.dumps(v)}"
                  for k, v in data.items()]
        text = "{\n" + ",\n".join(fields) + "\n}"
    write_text_atomic(Path(path), text + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a temporary file beside `path`, then rename it over `path`: a crash or a full disk
    never leaves a half-written camera file (the rename is atomic on one file system)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Validation, run on every CameraFile before anything uses it.


def validate(cf: CameraFile) -> CameraFile:
    p, n = cf.path, len(cf)
    if n == 0:
        raise ClipError(f"{p}: zero cameras")
    bad = ~np.isfinite(cf.c2w).all(axis=(1, 2))
    if bad.any():
        raise ClipError(f"{p}: camera {int(np.argmax(bad))} has a non-finite pose (NaN or inf; {int(bad.sum())} of {n} poses)")
    bottom_err = np.abs(cf.c2w[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(1)
    R = cf.c2w[:, :3, :3]
    ortho_err = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = (ortho_err > RIGID_TOL) | (np.abs(det - 1.0) > RIGID_TOL) | (bottom_err > 1e-6)
    if bad.any():
        i = int(np.argmax(bad))
        raise ClipError(
            f"{p}: camera {i} is not a rigid pose (rotation must be orthonormal with det +1: "
            f"max |R^T R - I| = {ortho_err[i]:.3g}, det = {det[i]:.4g}, bottom row {cf.c2w[i, 3].tolist()})"
        )
    K = cf.fxfycxcy
    bad = ~np.isfinite(K).all(1) | (K[:, 0] <= 0) | (K[:, 1] <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ClipError(f"{p}: camera {i} has invalid intrinsics fx fy cx cy = {K[i].tolist()}")
    if cf.image_hw is not None and (cf.image_hw <= 0).any():
        raise ClipError(f"{p}: image sizes must be positive")
    if cf.times is not None:
        if not np.isfinite(cf.times).all():
            raise ClipError(f"{p}: non-finite timestamps")
        # Repeated or backward times would make the clip's time span empty or reversed, and the
        # model's time normalisation map them all to one instant.
        back = np.diff(cf.times) <= 0
        if back.any():
            i = int(np.argmax(back)) + 1
            raise ClipError(f"{p}: timestamps must increase: camera {i} has time {cf.times[i]:.6g} s after "
                            f"{cf.times[i - 1]:.6g} s (repeated or backwards times)")
    if cf.image_files is not None:
        seen: dict[Path, int] = {}
        for i, f in enumerate(cf.image_files):
            if f in seen:
                raise ClipError(f"{p}: cameras {seen[f]} and {i} both name the image {f.name} (duplicate frames: two poses for one image)")
            seen[f] = i
    if cf.frame_indices is not None:
        fi = cf.frame_indices
        if (fi < 0).any() or (np.diff(fi) <= 0).any():
            dup = np.flatnonzero(np.diff(fi) == 0)
            what = f" (frame {int(fi[dup[0]])} is listed twice: duplicate frames)" if len(dup) else ""
            raise ClipError(f"{p}: frame indices must be non-negative and strictly increasing{what}")
    return cf

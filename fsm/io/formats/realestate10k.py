"""RealEstate10K camera `.txt`.

Line 1 is the source video's URL; then one line per frame with 19 numbers:

    timestamp_us fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2

fx, cx are normalised by the image width and fy, cy by the height; the 3x4 matrix is the
world-to-camera [R|t] (OpenCV axes), row-major. Rows map to the clip's frames in order.
Times are timestamp_us * 1e-6 (the original video's clock).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsm.io.clip import Cameras, ClipError
from fsm.io.formats.base import CameraFile, rigid_inverse, write_text_atomic

NAME = "realestate10k"


def read(path: Path) -> CameraFile:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ClipError(f"{path}: cannot read camera file ({e})") from None
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ClipError(f"{path}: line {line_no} is not numeric: {line[:60]!r}") from None
        if len(values) != 19:
            raise ClipError(
                f"{path}: line {line_no} has {len(values)} numbers; expected 19 "
                "(timestamp fx fy cx cy 0 0 + 3x4 w2c; missing intrinsics or pose?)"
            )
        rows.append(values)
    if not rows:
        raise ClipError(f"{path}: no camera lines after the URL line (zero cameras)")
    a = np.asarray(rows, dtype=np.float64)  # (N,19)
    w2c = np.zeros((len(a), 4, 4))
    w2c[:, :3, :] = a[:, 7:].reshape(-1, 3, 4)
    w2c[:, 3, 3] = 1.0
    return CameraFile(
        path=path,
        format=NAME,
        c2w=rigid_inverse(w2c),
        fxfycxcy=a[:, 1:5],  # normalised: image_hw=None tells load_clip to multiply by (W, H, W, H)
        image_hw=None,
        times=a[:, 0] * 1e-6,
        info={"url": lines[0].strip() if lines else ""},
    )


def write(path: Path, cameras: Cameras, url: str = "") -> None:
    w, h = cameras.width, cameras.height
    K = cameras.fxfycxcy.double().numpy() / np.array([w, h, w, h])
    w2c = rigid_inverse(cameras.c2w.double().numpy())[:, :3, :].reshape(-1, 12)
    lines = [url or f"file://{Path(path).stem}"]
    for i in range(len(cameras)):
        stamp = round(float(cameras.times[i]) * 1e6)
        nums = [*K[i].tolist(), 0.0, 0.0, *w2c[i].tolist()]
        lines.append(" ".join([str(stamp), *(repr(float(v)) for v in nums)]))
    write_text_atomic(Path(path), "\n".join(lines) + "\n")

"""Folders of images: natural-order listing, header-only size probing, RGB(A) reading."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fsm.cameras import CoverCrop
from fsm.io.clip import ClipError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def natural_key(path: Path) -> tuple:
    """'frame2.png' before 'frame10.png': digit runs compare as numbers.

    re.split with a capturing group alternates text, number, text, ..., so two keys always
    compare str with str and int with int."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def image_with_suffix(file: Path) -> Path:
    """A listed image, trying the usual suffixes when the name has none (Blender/NeRF-synthetic
    files write 'train/r_0' for 'train/r_0.png'). Returns the path unchanged when nothing fits,
    so the caller's 'not found' names what the file listed."""
    if file.is_file() or file.suffix.lower() in IMAGE_SUFFIXES:
        return file
    for s in IMAGE_SUFFIXES:
        if file.with_name(file.name + s).is_file():
            return file.with_name(file.name + s)
    return file


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ClipError(f"{folder}: no images in folder (zero frames; looked for {', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=natural_key)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise ClipError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ClipError(f"{path}: cannot read image ({e})") from None


def read_image(path: Path) -> torch.Tensor:
    """(3,H,W) float32 in [0,1]; a transparent image is composited on white (LaCT's convention)."""
    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ClipError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:  # truncated or not an image
        raise ClipError(f"{path}: cannot read image ({e})") from None
    if has_alpha:
        rgb, alpha = arr[..., :3], arr[..., 3:]
        arr = rgb * alpha + (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def check_same_size(files: list[Path]) -> tuple[int, int]:
    """All images must share one size (from headers); returns (H, W)."""
    sizes = [image_size(f) for f in files]
    for f, s in zip(files, sizes):
        if s != sizes[0]:
            raise ClipError(
                f"{f}: image is {s[1]}x{s[0]} but {files[0].name} is {sizes[0][1]}x{sizes[0][0]} "
                "(mixed image sizes; a clip needs one size)"
            )
    return sizes[0]


def check_one_aspect(files: list[Path], tol: float) -> np.ndarray:
    """Sizes (N,2) of images that may differ in size but not in aspect ratio (relative `tol`)."""
    sizes = np.array([image_size(f) for f in files])
    aspect = sizes[:, 1] / sizes[:, 0]
    bad = np.abs(aspect / aspect[0] - 1) > tol
    if bad.any():
        i = int(np.argmax(bad))
        raise ClipError(
            f"{files[i]}: image is {sizes[i, 1]}x{sizes[i, 0]} but {files[0].name} is {sizes[0, 1]}x{sizes[0, 0]} "
            "(different aspect ratios; a clip needs one aspect ratio, sizes may differ)"
        )
    return sizes


def read_images(files: list[Path], crop: CoverCrop | list[CoverCrop] | None = None) -> torch.Tensor:
    """Images -> (N,3,H,W) float32: all of one size, or each cover-cropped by its own `crop[i]` (or
    the one `crop`) to a common size."""
    crops = crop if isinstance(crop, list) else [crop] * len(files)
    h, w = (crops[0].dst_h, crops[0].dst_w) if crops[0] else image_size(files[0])
    out = torch.empty(len(files), 3, h, w)
    for i, f in enumerate(files):
        img = read_image(f)
        out[i] = crops[i].images(img).clamp_(0, 1) if crops[i] else img  # resampling may overshoot by rounding
    return out

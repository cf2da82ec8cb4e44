"""load_clip: find the frames and the cameras of a clip, check them, return a Clip.

Three kinds of `path`:
  * a video (anything FFmpeg reads): cameras from `cameras=` or a sidecar file next to it;
  * a folder of images: cameras from `cameras=` or a known file inside / next to the folder;
  * a camera file: the frames are found from it (image paths it lists, the video it names,
    or a video / folder with the same stem next to it).
Everything is checked before a Clip is returned; any problem is one ClipError.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from fsm.cameras import CoverCrop
from fsm.io.clip import Cameras, CamerasNotFound, Clip, ClipError
from fsm.io.formats import CAMERA_SUFFIXES, CameraFile, colmap, llff, read_cameras
from fsm.io.formats.base import read_json
from fsm.io.images import IMAGE_SUFFIXES, check_one_aspect, list_images, read_images
from fsm.io.sfm import estimate_cameras, sfm_cameras_path
from fsm.io.video import probe_video, read_video_frames

# Known camera file names inside / next to a clip, tried after the same-stem sidecars.
KNOWN_CAMERA_NAMES = ("transforms.json", "opencv_cameras.json", "cameras.json")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")  # FFmpeg decodes GIF as a video
DEFAULT_FPS = 30.0  # for image folders whose camera file states no frame rate
ASPECT_TOL = 0.02  # relative; a camera file for a different aspect ratio is a different camera


def load_clip(
    path: str | Path,
    cameras: str | Path | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    size: int | tuple[int, int] | None = None,
    fps: float | None = None,
    multiple: int = 8,
    sfm: bool = False,
    sfm_frames: int = 64,
) -> Clip:
    """Load frames + one camera per frame.

    cameras: camera file to use instead of the discovered sidecar.
    stride, max_frames: take every `stride`-th camera, at most `max_frames` of them.
    size: (H, W): resize to cover and crop the centre, intrinsics adjusted. An int is the short
          side: the long side keeps the frames' aspect, rounded to a multiple of `multiple` (the
          model's patch), so at most multiple/2 pixels are cropped from each end of it.
          Default: the first frame's size (image folders may mix sizes of one aspect ratio;
          every frame is resized to it).
    fps: frame rate for times the camera file does not state (default: the video's rate,
         or 30 for images).
    sfm: when no camera file is found for a video / image folder, estimate one with
         fsm.io.estimate_cameras (up to max_frames or sfm_frames frames; written next to the
         clip and reused next time) instead of failing.
    Returns frames (N,3,H,W) float32 in [0,1], OpenCV c2w, intrinsics in pixels of the frames,
    times in seconds. Clip.fps is the rate of the returned frames (source rate / stride).
    """
    path = Path(path)
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ClipError(f"{path}: stride must be a whole number >= 1, got {stride!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 1):
        raise ClipError(f"{path}: max_frames must be a whole number >= 1, got {max_frames!r}",
                        cli=f"{path}: --max-frames must be a whole number >= 1, got {max_frames!r}")
    sizes = (size,) if isinstance(size, (int, np.integer)) else tuple(size) if size is not None else ()
    if len(sizes) not in (0, 1, 2) or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ClipError(f"{path}: size must be a positive int or (height, width) of positive ints, got {size!r}",
                        cli=f"{path}: --resolution must be a positive whole number, got {size!r}")
    if not path.exists():
        raise ClipError(f"{path}: file not found")

    # 1. Where are the frames and the cameras?
    video, images = None, None
    if colmap.is_model(path):  # a COLMAP sparse folder given as the clip: it lists the images
        if cameras:
            raise ClipError(f"{path}: is a COLMAP model; pass its project folder or images folder as the clip to use cameras={cameras}")
        cam_path = path
    elif path.is_dir():
        cam_path = Path(cameras) if cameras else _find_cameras(path, _folder_candidates(path), sfm, max_frames or sfm_frames)
    elif path.suffix.lower() in CAMERA_SUFFIXES:
        if cameras:
            msg = f"{path}: is a camera file; pass the video or image folder as the clip to use "
            raise ClipError(msg + f"cameras={cameras}", cli=msg + f"--cameras {cameras}")
        cam_path = path
    else:
        video = path
        cam_path = Path(cameras) if cameras else _find_cameras(path, _video_candidates(path), sfm, max_frames or sfm_frames)
    cf = read_cameras(cam_path)
    if video is None:
        if cf.format == llff.NAME and path.is_dir() and path != cf.path.parent and path != cam_path:
            images = list_images(path)  # e.g. images_4/ next to poses_bounds.npy: this folder, not images/
        elif cf.image_files is not None:  # the camera file names one image per camera
            images = cf.image_files
        elif path.is_dir():
            images = list_images(path)
        else:
            video, images = _media_for_camera_file(cf)

    # 2. Which cameras, which frames.
    rows = np.arange(0, len(cf), stride)[:max_frames]
    positions = cf.frame_indices if cf.frame_indices is not None else np.arange(len(cf))
    source = {"path": str(video or path), "cameras_path": str(cf.path), "camera_format": cf.format, **cf.info}
    if video is not None:
        info = probe_video(video)
        if info.n_frames is not None:
            _check_count(cf, positions, info.n_frames, video)
        src_fps = fps or info.fps or DEFAULT_FPS
        hw = np.tile([info.height, info.width], (len(rows), 1))
        source.update(media="video", codec=info.codec, video_frames=info.n_frames)
    else:
        if images is not cf.image_files:  # a folder listing: cameras map to images by position
            _check_count(cf, positions, len(images), path)
            images = [images[i] for i in positions]
        images = [images[i] for i in rows]
        for f in images:
            if not f.is_file():
                tried = f" (the name has no suffix; tried {', '.join(IMAGE_SUFFIXES)})" if f.suffix.lower() not in IMAGE_SUFFIXES else ""
                raise ClipError(f"{f}: image file not found{tried} (listed in {cf.path})")
        hw = check_one_aspect(images, ASPECT_TOL)
        src_fps = fps or cf.fps or DEFAULT_FPS
        source.update(media="images")

    # 3. Cameras for the frames as decoded, then for the requested size.
    K = _rescale_intrinsics(cf.select(rows), hw)
    times = cf.times[rows] if cf.times is not None else positions[rows] / src_fps
    out_hw = _output_hw(tuple(int(v) for v in hw[0]), size, multiple)
    crops = [CoverCrop(int(h), int(w), *out_hw) for h, w in hw]  # the identity where sizes already match
    K = np.stack([c.intrinsics(torch.from_numpy(k)).numpy() for c, k in zip(crops, K)])

    # 4. Frames (only the selected ones are decoded).
    if video is not None:
        frames = read_video_frames(video, positions[rows].tolist(), crops[0])
    else:
        frames = read_images(images, crops)

    source.update(fps=src_fps, original_size=tuple(int(v) for v in hw[0]), frame_indices=positions[rows].tolist())
    cams = Cameras(
        c2w=torch.from_numpy(cf.c2w[rows]).float(),
        fxfycxcy=torch.from_numpy(K).float(),
        times=torch.from_numpy(np.asarray(times, dtype=np.float64)),
        height=out_hw[0],
        width=out_hw[1],
    )
    return Clip(frames=frames, cameras=cams, fps=src_fps / stride, source=source)


# ----------------------------------------------------------------------------------------------
# Finding files


def _video_candidates(video: Path) -> list[Path]:
    same_stem = [video.with_suffix(s) for s in (".json", ".jsonl", ".txt")]
    known = [video.parent / n for n in KNOWN_CAMERA_NAMES]
    # Stereo4D/FSM layout: "<scene>.jsonl" next to "<scene>-left_rectified.mp4", tied by the
    # JSON's video_path. Only files whose stem starts the video's stem are opened.
    stereo4d = [
        p for p in sorted(video.parent.glob("*.jsonl"))
        if video.stem.startswith(p.stem) and p != video.with_suffix(".jsonl") and _names_video(p, video)
    ]
    return same_stem + known + stereo4d


def _names_video(json_path: Path, video: Path) -> bool:
    try:
        data = read_json(json_path)
    except ClipError:
        return False
    return isinstance(data, dict) and str(data.get("video_path", "")).replace("\\", "/").rsplit("/", 1)[-1] == video.name


def _folder_candidates(folder: Path) -> list[Path]:
    inside = [folder / n for n in (*KNOWN_CAMERA_NAMES, llff.FILE_NAME, "sparse/0", "sparse")]
    beside = [folder.parent / (folder.name + s) for s in (".json", ".jsonl", ".txt")]
    # LLFF (images_4/ next to poses_bounds.npy) and COLMAP (images/ next to sparse/) projects
    project = [folder.parent / llff.FILE_NAME, folder.parent / "sparse" / "0", folder.parent / "sparse"]
    return inside + beside + project


def _find_cameras(clip: Path, candidates: list[Path], sfm: bool = False, sfm_frames: int = 64) -> Path:
    for c in candidates:
        if c.is_file() or colmap.is_model(c):
            return c
    names = ", ".join(sorted({c.name for c in candidates}))
    if sfm:
        cached = sfm_cameras_path(clip)  # an unwritable clip folder: estimated before into the cache?
        if cached.is_file():
            return cached
        print(f"{clip}: no camera file found (looked for {names}); estimating cameras by structure from motion",
              file=sys.stderr)
        return estimate_cameras(clip, max_frames=max(2, sfm_frames))
    msg = f"{clip}: no camera file found (looked for {names}); pass "
    raise CamerasNotFound(msg + "cameras=PATH, or sfm=True to estimate them",
                          cli=msg + "--cameras PATH, or drop --no-sfm to estimate them")


def _media_for_camera_file(cf: CameraFile) -> tuple[Path | None, list[Path] | None]:
    """(video, images) for a camera file given as the clip path."""
    if cf.video is not None:
        if not cf.video.is_file():
            raise ClipError(f"{cf.path}: names the video {cf.video.name}, which is not next to it ({cf.video} not found)")
        return cf.video, None
    for s in VIDEO_SUFFIXES:
        if cf.path.with_suffix(s).is_file():
            return cf.path.with_suffix(s), None
    folder = cf.path.with_suffix("")
    if folder.is_dir():
        return None, list_images(folder)
    raise ClipError(f"{cf.path}: cannot find its frames (no {cf.path.stem}{{{','.join(VIDEO_SUFFIXES)}}} "
                    f"and no folder {folder.name}/ next to it)")


# ----------------------------------------------------------------------------------------------
# Matching cameras to frames


def _check_count(cf: CameraFile, positions: np.ndarray, n_frames: int, media: Path) -> None:
    if n_frames == 0:
        raise ClipError(f"{media}: zero frames")
    if cf.frame_indices is None and len(cf) != n_frames:
        raise ClipError(f"{media}: has {n_frames} frames but {cf.path.name} has {len(cf)} cameras (frame/camera count mismatch)")
    if positions[-1] >= n_frames:
        raise ClipError(
            f"{media}: has {n_frames} frames but {cf.path.name} has {len(cf)} cameras up to frame index "
            f"{int(positions[-1])} (frame/camera count mismatch)"
        )


def _output_hw(frame_hw: tuple[int, int], size, multiple: int) -> tuple[int, int]:
    """(H, W) of the returned frames; see load_clip's `size`."""
    if size is None:
        return frame_hw
    if not isinstance(size, (int, np.integer)):
        return int(size[0]), int(size[1])
    h, w = frame_hw
    long = max(multiple, round(size * max(h, w) / min(h, w) / multiple) * multiple)
    return (int(size), long) if h <= w else (long, int(size))


def _rescale_intrinsics(cf: CameraFile, hw: np.ndarray) -> np.ndarray:
    """Intrinsics in pixels of the decoded frames (N,4); hw (N,2) is each frame's decoded size.

    A camera file may describe the images at another resolution (e.g. cameras for the 1080p
    original, frames decoded from a 512p copy): scale x and y separately. Pixel centres at +0.5
    make this exact, since the image edges 0 and w map to 0 and W."""
    H, W = hw[:, 0].astype(np.float64), hw[:, 1].astype(np.float64)
    if cf.image_hw is None:  # normalised intrinsics (RealEstate10K)
        # Square pixels make fx_norm * W == fy_norm * H, so the file implies an aspect W/H =
        # fy_norm / fx_norm; frames of another aspect get stretched intrinsics.
        implied = np.median(cf.fxfycxcy[:, 1] / cf.fxfycxcy[:, 0])
        if abs(implied / (W[0] / H[0]) - 1.0) > ASPECT_TOL:
            warnings.warn(f"{cf.path}: its normalised intrinsics imply {implied:.3f}:1 frames (square pixels) but the "
                          f"frames are {W[0]:.0f}x{H[0]:.0f} ({W[0] / H[0]:.3f}:1); wrong frames for this camera file?",
                          stacklevel=3)
        return cf.fxfycxcy * np.stack([W, H, W, H], 1)
    h, w = cf.image_hw[:, 0].astype(np.float64), cf.image_hw[:, 1].astype(np.float64)
    sx, sy = W / w, H / h
    bad = np.abs(sx / sy - 1.0) > ASPECT_TOL
    if bad.any():
        i = int(np.argmax(bad))
        raise ClipError(
            f"{cf.path}: camera {i} is for {int(w[i])}x{int(h[i])} images but the frames are {W[i]:.0f}x{H[i]:.0f} "
            "(aspect ratios disagree; wrong camera file?)"
        )
    return cf.fxfycxcy * np.stack([sx, sy, sx, sy], 1)

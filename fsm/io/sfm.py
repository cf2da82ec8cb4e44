"""Cameras for a clip that has none: structure from motion with COLMAP (through pycolmap).

    path = estimate_cameras("my_video.mp4")    # -> my_video.json next to the video
    clip = load_clip("my_video.mp4")           # finds it like any sidecar

Stages (each with a progress bar): pick up to `max_frames` frames evenly over the clip and
shrink them to `size` pixels on the long side; SIFT features on the CPU; sequential matching
(each frame against its 10 successors, plus frames 2, 4, 8, ... later, which closes loops of a
path that comes back to where it started); incremental mapping with one shared pinhole camera.
The largest reconstruction wins. Its poses (COLMAP's world-to-camera, OpenCV axes like ours)
and intrinsics (scaled back to the clip's full resolution) are written as the fsm-view camera
JSON, atomically. Frames COLMAP could not register are left out, with a warning.

The scene scale of a structure-from-motion result is arbitrary; fsm normalises every clip's
poses anyway (fsm.cameras.normalize_poses).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fsm.cameras import CoverCrop
from fsm.io.clip import Cameras, ClipError
from fsm.io.formats import write_cameras
from fsm.io.images import check_same_size, list_images, read_images
from fsm.io.video import count_video_frames, probe_video, read_video_frames
from fsm.io.write import write_images

DEFAULT_FPS = 30.0  # image folders: frame i is at i / 30 s, as in load_clip
CAMERA_MODEL = "SIMPLE_PINHOLE"  # one focal length, principal point at the centre: what fsm renders
SEQUENTIAL_OVERLAP = 10
# SIFT features per frame. COLMAP's default 8192 is for photo collections; consecutive video
# frames overlap so much that 2048 register as reliably and make matching and bundle adjustment
# several times cheaper.
MAX_FEATURES = 2048
# COLMAP's SIFT starts at octave -1 (the image upsampled 2x) by default. At 512 pixels that
# costs ~7x the extraction and matching time and gave the same trajectory on the Stereo4D clip
# (0.32% vs 0.32% of its extent), so frames this large start at octave 0; smaller frames need
# the upsampled octave (a 256x192 synthetic clip registered 2 of 12 frames without it).
UPSAMPLE_BELOW = 400


class _Stages:
    """Seconds since the previous call, stored under each stage's name."""

    def __init__(self, timings: dict | None):
        self.timings, self.t = timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = now - self.t
        self.t = now


def sfm_cameras_path(path: str | Path) -> Path:
    """Where estimate_cameras writes for the clip `path`: beside it when that folder is writable,
    else in a per-user cache (keyed by the clip's absolute path, size and modification time)."""
    path = Path(path)
    out = path / "cameras.json" if path.is_dir() else path.with_suffix(".json")
    if os.access(out.parent, os.W_OK):
        return out
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fsm-view" / "cameras"
    return cache / f"{path.stem}-{key}.json"


def estimate_cameras(
    path: str | Path,
    max_frames: int = 64,
    size: int = 512,
    min_registered: float = 0.5,
    reuse: bool = True,
    progress: bool = True,
    timings: dict | None = None,
) -> Path:
    """Estimate one camera per frame of a video or image folder and write them; return the file.

    max_frames: frames used, picked evenly over the whole clip (the camera file lists these).
    size: long side, in pixels, of the images COLMAP sees (larger is slower, rarely better).
    min_registered: fail when COLMAP registers fewer than this share of the frames.
    reuse: return an existing file at the output location instead of running again.
    The output location is sfm_cameras_path(path) (printed when it is the cache).
    timings: if given, filled with seconds per stage (frames, features, matching, mapping, total).
    """
    t_start = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise ClipError(f"{path}: file not found")
    if not isinstance(max_frames, (int, np.integer)) or max_frames < 2:
        raise ClipError(f"{path}: structure from motion needs max_frames >= 2, got {max_frames!r}",
                        cli=f"{path}: structure from motion needs --max-frames >= 2, got {max_frames!r}")
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ClipError(f"{path}: structure from motion needs size >= 64 pixels, got {size!r}")
    out = sfm_cameras_path(path)
    folder = path if path.is_dir() else path.parent
    if out.parent != folder:
        print(f"{folder} is not writable; the cameras go to the cache: {out}", file=sys.stderr)
    if reuse and out.is_file():
        print(f"reusing the cameras estimated before: {out}", file=sys.stderr)
        return out

    # 1. Frames: evenly spread, decoded, shrunk (only the selected ones are decoded).
    if path.is_dir():
        files = list_images(path)
        full_hw, fps = check_same_size(files), DEFAULT_FPS
        n_total = len(files)
    else:
        info = probe_video(path)  # an unreadable video fails here, as one ClipError
        full_hw, fps = (info.height, info.width), info.fps or DEFAULT_FPS
        n_total = info.n_frames or count_video_frames(path)
    if n_total < 2:
        raise ClipError(f"{path}: structure from motion needs at least 2 frames; the clip has {n_total}")
    indices = np.unique(np.linspace(0, n_total - 1, min(max_frames, n_total)).round().astype(np.int64))
    n = len(indices)
    s = min(1.0, size / max(full_hw))
    sfm_hw = (max(1, round(full_hw[0] * s)), max(1, round(full_hw[1] * s)))
    crop = CoverCrop(full_hw[0], full_hw[1], *sfm_hw)  # same aspect: a plain resize, no crop

    # Heavy; only this function needs it. PIL's C module is already loaded (fsm.io.images): in a
    # process that imports pycolmap 4.2.1 first, PIL's PNG writer aborts (double free in zlib).
    import pycolmap

    pycolmap.logging.minloglevel = 2  # COLMAP's INFO/WARNING chatter would bury the progress bars
    pycolmap.set_random_seed(0)  # RANSAC sampling; mapping runs on one thread (below) for the same reason
    with tempfile.TemporaryDirectory(prefix="fsm-sfm-") as tmp:
        tmp = Path(tmp)
        images, db = tmp / "images", tmp / "database.db"
        stage = _Stages(timings)
        bar = tqdm(total=n, desc="sfm: frames", unit="frame", disable=not progress)
        # One pass over the video (decoding restarts at frame 0 on every call).
        frames = read_images([files[i] for i in indices], crop) if path.is_dir() else read_video_frames(path, indices.tolist(), crop)
        for i in range(n):
            write_images(images, frames[i : i + 1], pattern="{:05d}.png", start=i)
            bar.update()
        bar.close()
        del frames
        names = [f"{i:05d}.png" for i in range(n)]
        stage("frames")

        # 2. Features, one image at a time so the bar moves; one camera shared by all frames.
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = CAMERA_MODEL
        pycolmap.Database.open(db).close()
        pycolmap.import_images(db, images, pycolmap.CameraMode.SINGLE, options=reader)
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = MAX_FEATURES
        extraction.num_threads = 1  # every COLMAP stage on one thread: reproducible cameras (see mapping)
        extraction.sift.first_octave = -1 if max(sfm_hw) < UPSAMPLE_BELOW else 0
        for name in tqdm(names, desc="sfm: features", unit="frame", disable=not progress):
            pycolmap.extract_features(db, images, image_names=[name], camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
        stage("features")

        # 3. Matching: neighbours in time plus quadratic (2^k) steps for loops.
        with tqdm(total=1, desc="sfm: matching", unit="run", disable=not progress) as bar:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap, pairing.quadratic_overlap = SEQUENTIAL_OVERLAP, True
            matching = pycolmap.FeatureMatchingOptions()
            matching.num_threads = 1
            pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
            bar.update()
        stage("matching")

        # 4. Incremental mapping; the callback fires once per registered image.
        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = 0
        # One thread: COLMAP's multi-threaded bundle adjustment sums in a varying order, and the
        # cameras then differ from run to run (seen: focal -4% .. +7% on the test clip).
        options.num_threads = options.mapper.num_threads = 1
        with tqdm(total=n, desc="sfm: mapping", unit="frame", disable=not progress) as bar:
            models = pycolmap.incremental_mapping(db, images, tmp / "sparse", options,
                                                  next_image_callback=lambda: bar.update() if bar.n < n else None)
            bar.n = max((m.num_reg_images() for m in models.values()), default=0)  # the callback also counts retries
            bar.refresh()
        stage("mapping")
    models = [m for m in models.values() if m.num_reg_images() > 0]
    if not models:
        raise ClipError(f"{path}: structure from motion found no reconstruction from {n} frames "
                        "(too little texture or parallax? try more frames, a more textured scene, slower motion, "
                        "or pass a camera file)", cli=f"{path}: structure from motion found no reconstruction from "
                        f"{n} frames (too little texture or parallax? try more --max-frames, a more textured scene, "
                        "slower motion, or pass --cameras PATH)")
    rec = max(models, key=lambda m: m.num_reg_images())
    k = rec.num_reg_images()
    if k < max(2, min_registered * n):
        msg = (f"{path}: structure from motion registered only {k} of {n} frames (needs {min_registered:.0%}); "
               "try more frames, a more textured scene or slower camera motion")
        raise ClipError(msg + ", or pass a camera file", cli=msg.replace("more frames", "more --max-frames")
                        + ", or pass --cameras PATH")

    # 5. COLMAP -> fsm cameras, at the clip's full resolution.
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    keep = [i for i, name in enumerate(names) if name in by_name]
    w2c = np.tile(np.eye(4), (len(keep), 1, 1))
    K = np.zeros((len(keep), 4))
    sx, sy = full_hw[1] / sfm_hw[1], full_hw[0] / sfm_hw[0]
    for row, i in enumerate(keep):
        im = by_name[names[i]]
        w2c[row, :3] = im.cam_from_world().matrix()  # (3,4) OpenCV world-to-camera
        cam = rec.cameras[im.camera_id]
        # COLMAP puts pixel centres at +0.5 like fsm, so scaling the image scales fx, cx exactly.
        K[row] = [cam.focal_length_x * sx, cam.focal_length_y * sy, cam.principal_point_x * sx, cam.principal_point_y * sy]
    if len(keep) < n:
        warnings.warn(f"{path}: COLMAP registered {len(keep)} of {n} frames; the other {n - len(keep)} are left out of "
                      f"{out.name}", stacklevel=2)
    c2w = np.linalg.inv(w2c)
    kept = indices[keep]
    cams = Cameras(
        c2w=torch.from_numpy(c2w).float(),
        fxfycxcy=torch.from_numpy(K).float(),
        times=torch.from_numpy(kept / fps),
        height=full_hw[0],
        width=full_hw[1],
    )
    out.parent.mkdir(parents=True, exist_ok=True)  # the cache folder, the first time
    write_cameras(out, cams, "fsm-view", fps=fps, video=path.name if out.parent == folder and not path.is_dir() else None,
                  indices=kept.tolist())
    total = time.perf_counter() - t_start
    if timings is not None:
        timings["total"] = total
    print(f"sfm: {len(keep)} of {n} frames registered, {rec.num_points3D()} points, {total:.1f} s in all -> {out}",
          file=sys.stderr)
    return out


def trajectory_error(c2w: np.ndarray, c2w_true: np.ndarray) -> dict:
    """How far estimated camera positions are from the truth after the best similarity alignment
    (Umeyama, through pycolmap.estimate_sim3d): SfM fixes neither the world frame nor the scale.

    c2w, c2w_true: (N,4,4) for the same frames. Returns rmse (aligned position error, truth units),
    extent (diagonal of the true positions' bounding box), rmse_share = rmse / extent, and
    rotation_deg (mean angle between estimated and true orientations after the one world rotation
    that best aligns them).
    """
    import pycolmap

    est, true = np.asarray(c2w, np.float64), np.asarray(c2w_true, np.float64)
    sim = pycolmap.estimate_sim3d(est[:, :3, 3], true[:, :3, 3])
    if sim is None:
        raise ValueError("cannot align the trajectories (fewer than 3 distinct positions?)")
    M = sim.matrix()  # (3,4) = [s R | t]
    aligned = est[:, :3, 3] @ M[:, :3].T + M[:, 3]
    rmse = float(np.sqrt(((aligned - true[:, :3, 3]) ** 2).sum(1).mean()))
    extent = float(np.linalg.norm(true[:, :3, 3].max(0) - true[:, :3, 3].min(0)))
    # Orientation gets its own world rotation, R = argmin_R sum_i |R_true_i - R R_est_i|_F (Kabsch
    # on the rotation matrices): the one fitted to positions is loose about the axis of a nearly
    # straight path, and measuring "relative to the first camera" adds that camera's error to all.
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", true[:, :3, :3], est[:, :3, :3]))  # sum R_true R_est^T
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    diff = np.swapaxes(true[:, :3, :3], 1, 2) @ R @ est[:, :3, :3]  # (N,3,3), identity where they agree
    angle = np.degrees(np.arccos(np.clip((np.trace(diff, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return {"rmse": rmse, "extent": extent, "rmse_share": rmse / extent, "rotation_deg": float(angle.mean())}

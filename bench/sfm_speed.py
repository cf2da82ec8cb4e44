"""Structure from motion on the real Stereo4D clip with its camera file withheld: time per stage,
trajectory error against the clip's own cameras (after a similarity alignment), focal error.

    python bench/sfm_speed.py                       # 48 frames of ../shared/data/stereo4d_dog
    python bench/sfm_speed.py --frames 64 --size 384

The video is copied to a temporary folder (so the camera file beside it is not found and nothing
is written into the data folder); the truth is read from the .jsonl.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsm.io import estimate_cameras, read_cameras  # noqa: E402
from fsm.io.sfm import trajectory_error  # noqa: E402

DOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "stereo4d_dog"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FSM_SHARED_DATA", DOG.parent)) / "stereo4d_dog")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=512, help="long side of the images COLMAP sees")
    args = ap.parse_args()
    video = next(args.data.glob("*-left_rectified.mp4"))
    truth = read_cameras(next(args.data.glob("*.jsonl")))
    import pycolmap

    print(f"pycolmap {pycolmap.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / video.name
        shutil.copy(video, clip)
        timings: dict = {}
        est = read_cameras(estimate_cameras(clip, max_frames=args.frames, size=args.size, timings=timings))
    rows = np.searchsorted(truth.frame_indices, est.frame_indices)
    assert (truth.frame_indices[rows] == est.frame_indices).all()
    err = trajectory_error(est.c2w, truth.c2w[rows])
    f_est = est.fxfycxcy[:, :2].mean() * truth.image_hw[0, 1] / est.image_hw[0, 1]
    f_true = truth.fxfycxcy[rows, :2].mean()
    print(f"\n{len(est)} of {args.frames} frames registered; COLMAP input {args.size} px long side")
    print("\n| stage | seconds |\n|---|---|")
    for k, v in timings.items():
        print(f"| {k} | {v:.1f} |")
    print(f"\ntrajectory RMSE {err['rmse_share']:.2%} of the extent ({err['rmse']:.4f} of {err['extent']:.3f}), "
          f"mean rotation error {err['rotation_deg']:.2f} deg, focal {f_est:.1f} vs {f_true:.1f} px "
          f"({f_est / f_true - 1:+.1%})")


if __name__ == "__main__":
    main()

"""Regenerate the shipped sample clip: assets/sample/sample.mp4 + sample.json.

    python assets/sample/make_sample_clip.py            # rewrite the clip next to this script
    python assets/sample/make_sample_clip.py --check    # regenerate in a temp folder and compare

The clip is a synthetic room (fsm.data.synthetic, scene seed 505 -- outside both the training
seed range and the held-out set) seen by an orbiting camera: 96 frames, 256x256, 24 fps, with a
swinging two-link pendulum and several moving objects. The frames and cameras are a pure
function of the constants below (bit-identical on CPU). The H.264 encode (libx264, crf 18, via
fsm.io.write_clip) is deterministic for the same PyAV/FFmpeg/libx264 build; another build may
produce different bytes that decode to nearly the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from fsm.data.synthetic import frame_times, make_path, make_scene, render  # noqa: E402
from fsm.io import Cameras, load_clip, write_clip  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED, FAMILY, PATH_KIND = 505, "room", "orbit"
NUM_FRAMES, FPS, SIZE, SUPERSAMPLE = 96, 24.0, 256, 2


def sample_cameras() -> Cameras:
    scene = make_scene(SEED, FAMILY)
    path = make_path(scene, PATH_KIND)
    times = frame_times(NUM_FRAMES, FPS)
    return Cameras(path.c2w(times), path.fxfycxcy(NUM_FRAMES, SIZE, SIZE), times, SIZE, SIZE)


def sample_frames(indices: list[int] | None = None, device="cpu") -> torch.Tensor:
    """Frames (N,3,H,W) in [0,1] of the clip (all of them, or those at `indices`), on the CPU."""
    cams = sample_cameras()
    idx = torch.arange(NUM_FRAMES) if indices is None else torch.as_tensor(indices)
    scene = make_scene(SEED, FAMILY)
    out = []
    for chunk in idx.split(8):  # bounded memory at 2x supersampling
        out.append(render(scene, cams.c2w[chunk], cams.fxfycxcy[chunk], cams.times[chunk], SIZE, SIZE,
                          device=device, supersample=SUPERSAMPLE).cpu())  # fmt: skip
    return torch.cat(out)


def write(folder: Path, device="cpu") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "sample.mp4", sample_frames(device=device), sample_cameras(), FPS)
    return folder / "sample.mp4"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="regenerate in a temp folder and compare with the shipped clip")
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write sample.mp4 + sample.json into")
    ap.add_argument("--device", default="cpu", help="render device (frames are bit-identical on CPU)")
    args = ap.parse_args()
    if not args.check:
        print(f"wrote {write(args.out, args.device)} ({(args.out / 'sample.mp4').stat().st_size / 1e6:.2f} MB)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp), args.device)
        shipped, fresh = load_clip(HERE / "sample.mp4"), load_clip(new)
        same_cams = all(torch.equal(getattr(shipped.cameras, k), getattr(fresh.cameras, k)) for k in ("c2w", "fxfycxcy", "times"))
        same_mp4 = sha256(new) == sha256(HERE / "sample.mp4")
        err = (shipped.frames - fresh.frames).abs().max().item()
        print(f"cameras identical: {same_cams}; mp4 bytes identical: {same_mp4}; max decoded frame difference: {err:.4f}")
        return 0 if same_cams and err < 0.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())

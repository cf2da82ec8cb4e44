"""Speed of the synthetic 4D engine: frames/s per resolution and device, and the time to build
one training sample. Prints a markdown table.

    python bench/synthetic_speed.py                 # CPU, and CUDA when available
    python bench/synthetic_speed.py --frames 16 --families room outdoor
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsm.data.samples import SampleConfig, SyntheticSource  # noqa: E402
from fsm.data.synthetic import FAMILIES, frame_times, make_path, make_scene, render  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(family: str, size: int, frames: int, device: torch.device, shadows: bool, repeats: int) -> float:
    scene = make_scene(1234, family)
    path = make_path(scene, "orbit")
    t = frame_times(frames, 24.0)
    args = (scene, path.c2w(t), path.fxfycxcy(frames, size, size), t, size, size)
    render(*args, device=device, shadows=shadows)  # warm-up (CUDA context, allocator)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        render(*args, device=device, shadows=shadows)
    sync(device)
    return frames * repeats / (time.perf_counter() - start)


def sample_seconds(device: torch.device, num_input: int, num_target: int, size: int, repeats: int) -> float:
    cfg = SampleConfig(num_input=num_input, num_target=num_target, window=4 * (num_input + num_target), height=size, width=size)
    source = SyntheticSource(cfg, device)
    g = torch.Generator().manual_seed(0)
    source.sample(1, g)
    sync(device)
    start = time.perf_counter()
    source.sample(repeats, g)  # `repeats` different random scenes
    sync(device)
    return (time.perf_counter() - start) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="frames per render call")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sample-views", type=int, nargs=2, default=[8, 8], metavar=("INPUTS", "TARGETS"))
    ap.add_argument("--sample-size", type=int, default=128)
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))  # fmt: skip
    print("\n| device | family | size | frames/s (shadows) | frames/s (no shadows) |\n|---|---|---|---|---|")
    for device in devices:
        for family in args.families:
            for size in args.sizes:
                fps = [frames_per_second(family, size, args.frames, device, sh, args.repeats) for sh in (True, False)]
                print(f"| {device.type} | {family} | {size}x{size} | {fps[0]:.1f} | {fps[1]:.1f} |", flush=True)
    vi, vt = args.sample_views
    print(f"\n| device | one training sample ({vi} inputs + {vt} targets, {args.sample_size}x{args.sample_size}) |\n|---|---|")
    for device in devices:
        print(f"| {device.type} | {sample_seconds(device, vi, vt, args.sample_size, args.repeats) * 1e3:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()

"""Rasterizer speed: our CPU rasterizer (compiled kernel vs. its pure-torch fallback) and gsplat (CUDA) when present.

Two kinds of scene:
  * random: Gaussians spread over a 4 x 4 x 4 box at depths 2 to 6 in front of one camera
    (53 degree field of view), anisotropic std devs log-uniform in [0.005, 0.03] (about 0.2 to
    1 pixel at 128x128), opacities uniform in [0.05, 0.95]; `counts` x `resolutions`.
  * pixel-aligned, as the 4DGS head makes them (the model's training shapes): `views` input
    cameras on a short trajectory each put one Gaussian per pixel at a plausible depth (a smooth
    depth map, 1.5 to 4.5 units), footprint 0.3 to 1 pixel at that depth, opacity 0.85 to 0.95;
    one render from a camera in the middle of the trajectory, same intrinsics; `aligned` gives
    the resolutions (16 x 64x64 = 65k Gaussians to 64x64, 16 x 128x128 = 262k to 128x128).

On CPU each scene is timed with the compiled kernel ("kernel") and with the pure-torch path
("torch", fsm.raster.CPU_KERNEL = False, the rasterizer before the kernel existed), their
repeats alternating, and the ratio torch/kernel is printed. Times are medians over `repeats`
runs after one warm-up; fwd+bwd backpropagates the mean colour to all Gaussian parameters.
Next to wall-clock time the table gives the process CPU time (all threads): on a shared, busy
machine it is the steadier figure.

    python bench/raster_speed.py --threads 1                        # all rows
    python bench/raster_speed.py --threads 1 --counts --resolutions  # pixel-aligned rows only
    python bench/raster_speed.py --no-compare                       # the kernel (or gsplat) only
    git show main:fsm/raster.py > /tmp/raster_main.py                # + another commit's rasterizer
    python bench/raster_speed.py --threads 1 --counts --resolutions --baseline /tmp/raster_main.py
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
from dataclasses import dataclass

import torch
import tyro

import fsm.raster
from fsm import raster_cpu
from fsm.cameras import look_at, pixel_rays
from fsm.raster import rasterize_gsplat, rasterize_torch


@dataclass
class Args:
    counts: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # random scenes: Gaussians
    resolutions: tuple[int, ...] = (128, 256)  # random scenes: image sizes
    aligned: tuple[int, ...] = (64, 128)  # pixel-aligned scenes: input and output image size
    views: int = 16  # pixel-aligned scenes: input views
    repeats: int = 3
    backward: bool = True  # also time forward + backward
    compare: bool = True  # also time the pure-torch CPU path, alternating with the kernel
    baseline: str | None = None  # a raster.py from another commit: its rasterize_torch is timed too ("base")
    threads: int = 0  # torch CPU threads (0: torch's default)
    seed: int = 0


def random_scene(n: int, res: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 4 + torch.tensor([0.0, 0.0, 4.0])
    Q = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))[0]
    s = 0.005 * 6 ** torch.rand(n, 3, generator=gen)
    covars = (Q * s[:, None, :] ** 2) @ Q.transpose(-1, -2)
    colors = torch.rand(n, 3, generator=gen)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=gen)
    c2w = look_at(torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, 0.0]))
    fxfycxcy = torch.tensor([res, res, res / 2, res / 2], dtype=torch.float32)
    return means, covars, colors, opacities, c2w, fxfycxcy


def pixel_aligned_scene(views: int, res: int, seed: int):
    """One Gaussian per pixel of `views` input cameras, rendered from a camera amid them."""
    gen = torch.Generator().manual_seed(seed)
    up = torch.tensor([0.0, -1.0, 0.0])
    s = torch.linspace(-1, 1, views + 1)
    eyes = torch.stack([0.4 * s, 0.05 * torch.sin(3 * s), 0.2 * s], -1)  # a 0.9-unit arc
    c2w = torch.stack([look_at(e, torch.tensor([0.0, 0.0, 4.0]), up) for e in eyes])  # (V+1,4,4)
    target = c2w[views // 2]
    inputs = torch.cat([c2w[: views // 2], c2w[views // 2 + 1 :]])
    fxfycxcy = torch.tensor([res, res, res / 2, res / 2], dtype=torch.float32)
    origins, dirs = pixel_rays(inputs, fxfycxcy.expand(views, 4), res, res)  # (V,H,W,3)
    v, u = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    depth = 3.0 + 1.5 * torch.sin(3 * u + 1) * torch.cos(2 * v) + 0.8 * (u - v)  # smooth surface
    depth = depth + 0.02 * torch.randn(views, res, res, generator=gen)  # (V,H,W) per-view estimates
    means = (origins + depth[..., None] * dirs).reshape(-1, 3)
    n = len(means)
    std = (0.3 + 0.7 * torch.rand(n, 3, generator=gen)) * depth.reshape(-1, 1) / res  # 0.3-1 px
    Q = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))[0]
    covars = (Q * std[:, None, :] ** 2) @ Q.transpose(-1, -2)
    colors = torch.rand(n, 3, generator=gen)
    opacities = 0.85 + 0.1 * torch.rand(n, generator=gen)
    return means, covars, colors, opacities, target, fxfycxcy


def timed(fns: dict, device, repeats: int) -> dict:
    """Median (wall, process CPU) seconds of each fn(), their repeats alternating."""
    def once(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    for fn in fns.values():
        once(fn)  # warm-up (allocator, kernel build, gsplat JIT build on first CUDA use)
    runs = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            runs[k].append(once(fn))
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}


def set_cpu_kernel(on: bool):
    fsm.raster.CPU_KERNEL = on


def bench(variants: dict, scene, res: int, device, args: Args) -> dict:
    """variants {name: (raster, setup)} -> {name: ((fwd, cpu), (fwd+bwd, cpu))}."""
    means, covars, colors, opacities, c2w, K = (x.to(device) for x in scene)

    def forward(raster, setup):
        def fn():
            setup()
            with torch.no_grad():
                raster(means, covars, colors, opacities, c2w, K, res, res)
        return fn

    def forward_backward(raster, setup):
        def fn():
            setup()
            leaves = [x.clone().requires_grad_() for x in (means, covars, colors, opacities)]
            raster(*leaves, c2w, K, res, res).rgb.mean().backward()
        return fn

    fwd = timed({k: forward(*v) for k, v in variants.items()}, device, args.repeats)
    if args.backward:
        fwd_bwd = timed({k: forward_backward(*v) for k, v in variants.items()}, device, args.repeats)
    else:
        fwd_bwd = {k: (math.nan, math.nan) for k in variants}
    return {k: (fwd[k], fwd_bwd[k]) for k in variants}


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = {"kernel": (rasterize_torch, lambda: set_cpu_kernel(True))}
    if args.compare:
        cpu["torch"] = (rasterize_torch, lambda: set_cpu_kernel(False))
    if args.baseline:
        spec = importlib.util.spec_from_file_location("raster_baseline", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        cpu["base"] = (baseline.rasterize_torch, lambda: set_cpu_kernel(True))
    backends = [("cpu", cpu, torch.device("cpu"))]
    if torch.cuda.is_available():
        backends.append(("cuda", {"gsplat": (rasterize_gsplat, lambda: None)}, torch.device("cuda")))
    if raster_cpu.load() is None:
        print(f"NOTE: the compiled kernel is unavailable ({raster_cpu.unavailable_reason()}): 'kernel' rows run the torch path")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"))
    print(f"{'scene':<14} {'path':<7} {'gaussians':>10} {'image':>9} {'forward':>10} {'(cpu)':>8} {'fwd+bwd':>10} {'(cpu)':>8}"
          f" {'vs kernel: fwd':>17} {'fwd+bwd':>8}")
    scenes = [("random", n, res, lambda n=n, res=res: random_scene(n, res, args.seed)) for res in args.resolutions for n in args.counts]
    scenes += [(f"aligned {args.views}v", args.views * res * res, res, lambda res=res: pixel_aligned_scene(args.views, res, args.seed))
               for res in args.aligned]
    for _, variants, device in backends:
        for kind, n, res, make in scenes:
            times = bench(variants, make(), res, device, args)
            for name, ((fwd, fwd_cpu), (fb, fb_cpu)) in times.items():
                ratio = ""
                if name in ("torch", "base"):
                    (kf, _), (kfb, _) = times["kernel"]
                    ratio = f" {fwd / kf:>16.1f}x {fb / kfb:>7.1f}x"
                print(f"{kind:<14} {name:<7} {n:>10,} {f'{res}x{res}':>9} {fwd * 1e3:>8.1f}ms {fwd_cpu:>7.2f}s"
                      f" {fb * 1e3:>8.1f}ms {fb_cpu:>7.2f}s{ratio}", flush=True)
    set_cpu_kernel(True)


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Rasterizer speed: our tiled torch rasterizer (the CPU path) and gsplat (CUDA) when present.

A random scene in front of one camera (53 degree field of view): Gaussians spread over a
4 x 4 x 4 box at depths 2 to 6, anisotropic std devs log-uniform in [0.005, 0.03] (about
0.2 to 1 pixel at 128x128, like pixel-aligned Gaussians), opacities uniform in [0.05, 0.95].
Times are medians over `repeats` runs after one warm-up; fwd+bwd backpropagates the mean
colour to all Gaussian parameters. Next to wall-clock time the table gives the process CPU
time of the torch path (all threads): on a shared, busy machine it is the steadier figure.

    python bench/raster_speed.py                                   # 10k/100k/1M at 128 and 256
    python bench/raster_speed.py --counts 100000 --resolutions 128 --repeats 5
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
import tyro

from fsm.cameras import look_at
from fsm.raster import rasterize_gsplat, rasterize_torch


@dataclass
class Args:
    counts: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    resolutions: tuple[int, ...] = (128, 256)
    repeats: int = 3
    backward: bool = True  # also time forward + backward
    threads: int = 0  # torch CPU threads (0: torch's default)
    seed: int = 0


def make_scene(n: int, res: int, device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 4 + torch.tensor([0.0, 0.0, 4.0])
    Q = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))[0]
    s = 0.005 * 6 ** torch.rand(n, 3, generator=gen)
    covars = (Q * s[:, None, :] ** 2) @ Q.transpose(-1, -2)
    colors = torch.rand(n, 3, generator=gen)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=gen)
    c2w = look_at(torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, 0.0]))
    fxfycxcy = torch.tensor([res, res, res / 2, res / 2], dtype=torch.float32)
    return [x.to(device) for x in (means, covars, colors, opacities, c2w, fxfycxcy)]


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of fn()."""
    def once():
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    once()  # warm-up (allocator, gsplat JIT build on first CUDA use)
    runs = [once() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def bench(raster, n, res, device, args: Args):
    means, covars, colors, opacities, c2w, K = make_scene(n, res, device, args.seed)

    def forward():
        with torch.no_grad():
            raster(means, covars, colors, opacities, c2w, K, res, res)

    def forward_backward():
        leaves = [x.clone().requires_grad_() for x in (means, covars, colors, opacities)]
        raster(*leaves, c2w, K, res, res).rgb.mean().backward()

    fwd = timed(forward, device, args.repeats)
    fwd_bwd = timed(forward_backward, device, args.repeats) if args.backward else (math.nan, math.nan)
    return fwd, fwd_bwd


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = [("torch (cpu)", rasterize_torch, torch.device("cpu"))]
    if torch.cuda.is_available():
        backends.append(("gsplat (cuda)", rasterize_gsplat, torch.device("cuda")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"))
    print(f"{'backend':<14} {'gaussians':>10} {'image':>9} {'forward':>10} {'(cpu)':>9} {'fwd+bwd':>10} {'(cpu)':>9}")
    for name, raster, device in backends:
        for res in args.resolutions:
            for n in args.counts:
                (fwd, fwd_cpu), (fwd_bwd, fwd_bwd_cpu) = bench(raster, n, res, device, args)
                print(
                    f"{name:<14} {n:>10,} {f'{res}x{res}':>9} {fwd * 1e3:>8.1f}ms {fwd_cpu:>8.2f}s"
                    f" {fwd_bwd * 1e3:>8.1f}ms {fwd_bwd_cpu:>8.2f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main(tyro.cli(Args))

"""fp32 vs bf16 compute (fsm.precision), side by side in one run: training step, viewer, quality.

  train    one optimiser step (forward, L2 loss on every head, backward, AdamW) of a model at the
           CPU training recipe: small preset, 64x64, 16 inputs + 8 targets, batch 1, both heads
           (an untrained model: the cost does not depend on the weights); fp32 and bf16 alternate
  viewer   StreamSession as the viewer drives it: ingest one 8-frame chunk, render one camera
  quality  held-out PSNR of a checkpoint (train/eval.py's evaluation: synthetic held-out scenes,
           both regimes, streamed and rendered as the viewer does) with fp32 and with bf16

    python bench/precision.py                              # all three, one thread
    python bench/precision.py --parts train --heads lvsm   # the LVSM head alone
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

import fsm
from fsm.cameras import look_at
from fsm.precision import cpu_has_bf16, resolve_dtype
from fsm.stream import StreamSession
from train.lib import DataConfig, evaluate_pairs, make_source, synthetic_pairs, training_batch

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "fsm-small.pt"
DTYPES = ("fp32", "bf16")


@dataclass
class Args:
    parts: tuple[str, ...] = ("train", "viewer", "quality")
    threads: int = 1
    # train
    preset: str = "small"
    heads: tuple[str, ...] = ("lvsm", "4dgs")
    gs_head: str = "geo"  # the 4DGS head design (the shipped recipe's)
    resolution: int = 64
    input_views: int = 16
    target_views: int = 8
    steps: int = 3  # timed steps per dtype (after one warm-up step each)
    # viewer and quality
    ckpt: Path = SHIPPED
    size: int = 128  # viewer render / ingest size
    renders: int = 10
    ingests: int = 2
    scenes: int = 4  # held-out scenes per regime (train/eval.py's default)
    eval_resolution: int = 128
    eval_inputs: int = 32
    eval_targets: int = 8


def clock() -> float:
    # one thread: process CPU time = an unloaded core's wall time, robust to a shared machine
    return time.process_time()


def bench_train(args: Args) -> None:
    torch.manual_seed(0)
    model = fsm.FSM.from_preset(args.preset, heads=tuple(args.heads), gs_head=args.gs_head).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = DataConfig(height=args.resolution, width=args.resolution, num_input=args.input_views, num_target=args.target_views, window=4 * args.input_views)
    sample = training_batch(make_source(data), 1, seed=0)
    inputs, targets = sample.inputs, sample.targets
    p = model.config.patch
    tokens = (args.input_views + args.target_views) * (args.resolution // p) ** 2
    times = {dt: [] for dt in DTYPES}
    for i in range(args.steps + 1):
        for dt in DTYPES:
            model.compute_dtype = resolve_dtype(dt, "cpu")
            t0 = clock()
            preds = model(inputs, targets)
            loss = sum((pred.float() - targets.images).square().mean() for pred in preds.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i:
                times[dt].append(clock() - t0)
    print(f"\n## training step: preset {args.preset}, heads {' + '.join(args.heads)} ({args.gs_head} 4DGS head), {args.resolution}x{args.resolution}, "
          f"{args.input_views} inputs + {args.target_views} targets, batch 1 ({tokens} tokens), median of {args.steps}\n")
    print("| dtype | step s | tokens/s | vs fp32 |\n|---|---|---|---|")
    med = {dt: float(np.median(t)) for dt, t in times.items()}
    for dt in DTYPES:
        print(f"| {dt} | {med[dt]:.2f} | {tokens / med[dt]:,.0f} | {med['fp32'] / med[dt]:.2f}x |")


def orbit(n: int, size: int):
    up = torch.tensor([0.0, -1.0, 0.0])
    a = torch.linspace(-0.5, 0.5, n)
    c2w = torch.stack([look_at(torch.stack([2 * x.sin(), torch.tensor(0.0), -2 * x.cos()]), torch.zeros(3), -up) for x in a])
    return c2w, torch.tensor([0.9 * size, 0.9 * size, size / 2, size / 2]).expand(n, 4).clone()


def bench_viewer(model: fsm.FSM, args: Args) -> None:
    fpc, size = model.config.frames_per_chunk, args.size
    c2w, K = orbit(fpc, size)
    frames = torch.rand(fpc, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = torch.linspace(0, 1, fpc, dtype=torch.float64)
    ingest, render = {dt: [] for dt in DTYPES}, {dt: [] for dt in DTYPES}
    sessions = {}
    for i in range(args.ingests + 1):
        for dt in DTYPES:
            model.compute_dtype = resolve_dtype(dt, "cpu")
            session = StreamSession(model, fsm.ClipNormalization(time_span=(0.0, 1.0)))
            t0 = clock()
            session.feed(frames, c2w, K, times)
            if i:
                ingest[dt].append(clock() - t0)
            sessions[dt] = session
    for i in range(args.renders + 1):
        for dt in DTYPES:
            model.compute_dtype = resolve_dtype(dt, "cpu")
            t0 = clock()
            sessions[dt].render(c2w[i % fpc], K[i % fpc], 0.5, size, size)
            if i:
                render[dt].append(clock() - t0)
    print(f"\n## viewer: {args.ckpt.name}, {size}x{size}, one camera per render, {fpc}-frame chunk ingest\n")
    print("| dtype | render p50 ms | renders/s | ingest ms | frames/s | render / ingest vs fp32 |\n|---|---|---|---|---|---|")
    r = {dt: float(np.median(v)) for dt, v in render.items()}
    g = {dt: float(np.median(v)) for dt, v in ingest.items()}
    for dt in DTYPES:
        print(f"| {dt} | {r[dt] * 1e3:.1f} | {1 / r[dt]:.1f} | {g[dt] * 1e3:.0f} | {fpc / g[dt]:.1f} | "
              f"{r['fp32'] / r[dt]:.2f}x / {g['fp32'] / g[dt]:.2f}x |")


def bench_quality(model: fsm.FSM, args: Args) -> None:
    data = DataConfig(height=args.eval_resolution, width=args.eval_resolution, num_input=args.eval_inputs, num_target=args.eval_targets, window=4 * (args.eval_inputs + args.eval_targets))
    print(f"\n## quality: {args.ckpt.name}, held-out synthetic scenes 0-{args.scenes - 1} per regime, "
          f"{args.eval_resolution}x{args.eval_resolution}, {args.eval_inputs} inputs, {args.eval_targets} targets\n")
    print("| regime | head | PSNR fp32 | PSNR bf16 | bf16 - fp32 dB | SSIM fp32 / bf16 | LPIPS fp32 / bf16 |\n|---|---|---|---|---|---|---|")
    for regime in ("sparse", "continuous"):
        pairs = synthetic_pairs(data, regime, args.scenes)
        rows = {}
        for dt in DTYPES:
            model.compute_dtype = resolve_dtype(dt, "cpu")
            rows[dt] = {r["method"]: r for r in evaluate_pairs(model, pairs)[0]}
        for head in model.config.heads:
            a, b = rows["fp32"][head], rows["bf16"][head]
            print(f"| {regime} | {head} | {a['psnr']:.3f} | {b['psnr']:.3f} | {b['psnr'] - a['psnr']:+.3f} | "
                  f"{a['ssim']:.4f} / {b['ssim']:.4f} | {a['lpips']:.4f} / {b['lpips']:.4f} |")


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 {cpu_has_bf16()} (--dtype auto -> {resolve_dtype('auto', 'cpu')}); times are CPU seconds")
    unknown = set(args.parts) - {"train", "viewer", "quality"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)} (train | viewer | quality)")
    if "train" in args.parts:
        bench_train(args)
    if {"viewer", "quality"} & set(args.parts):
        if not args.ckpt.is_file():
            raise SystemExit(f"--ckpt {args.ckpt}: no such checkpoint")
        model = fsm.load_checkpoint(args.ckpt, device="cpu").eval()
        if "viewer" in args.parts:
            bench_viewer(model, args)
        if "quality" in args.parts:
            bench_quality(model, args)


if __name__ == "__main__":
    main(tyro.cli(Args))

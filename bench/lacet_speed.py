"""Throughput of the fast-weight layer with and without elastic consolidation.

Tokens/s of FastWeightLayer over a stream of chunks: inference (update + apply) and training
(the same, plus backward through the updates), LaCET (paper defaults) vs plain LaCT
(lambda = 0), measured alternately in one run so the ratio is fair.

    python bench/lacet_speed.py                          # CPU: D 256 (the small preset)
    python bench/lacet_speed.py --device cuda --dim 768  # the paper's layer
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro

from fsm.lacet import ElasticConfig, FastWeightLayer


@dataclass
class Args:
    dim: int = 256  # model width D (fast-weight hidden = 2 D)
    chunk_tokens: int = 2048  # tokens per chunk (8 frames at 128x128)
    chunks: int = 4
    batch: int = 1
    muon_steps: int = 5
    repeats: int = 5
    device: str = "cpu"
    bf16: bool = False  # autocast to bfloat16 (CUDA)


def run(layer, x, cfg, backward: bool, args: Args) -> None:
    state = layer.init_state(x.shape[0], cfg)
    out = []
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
        for c in range(args.chunks):
            y, state, _ = layer.update(x[:, c * args.chunk_tokens : (c + 1) * args.chunk_tokens], state, cfg)
            out.append(y)
    if backward:
        torch.cat(out, 1).float().square().mean().backward()


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(args: Args) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    layer = FastWeightLayer(args.dim, 2 * args.dim, muon_steps=args.muon_steps).to(device)
    x = torch.randn(args.batch, args.chunks * args.chunk_tokens, args.dim, device=device)
    tokens = args.batch * args.chunks * args.chunk_tokens
    configs = {"LaCT (lambda=0)": ElasticConfig.plain_lact(), "LaCET (si, streaming-ema)": ElasticConfig()}
    print(f"fast-weight layer D={args.dim} Dh={2 * args.dim}, {args.chunks} chunks x {args.chunk_tokens} tokens, "
          f"batch {args.batch}, Muon {args.muon_steps} steps, {device}{' bf16' if args.bf16 else ''}\n")
    print("| pass | LaCT tokens/s | LaCET tokens/s | LaCET / LaCT |")
    print("|---|---|---|---|")
    for backward in (False, True):
        times = {name: [] for name in configs}
        for _ in range(args.repeats + 1):  # first round warms up
            for name, cfg in configs.items():
                if backward:
                    times[name].append(timed(lambda: run(layer, x, cfg, True, args), device))
                else:
                    with torch.no_grad():
                        times[name].append(timed(lambda: run(layer, x, cfg, False, args), device))
        best = {name: sorted(t[1:])[len(t[1:]) // 2] for name, t in times.items()}  # median
        lact, lacet = (tokens / best[n] for n in configs)
        label = "forward + backward" if backward else "forward (update + apply)"
        print(f"| {label} | {lact:,.0f} | {lacet:,.0f} | {lacet / lact:.3f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))

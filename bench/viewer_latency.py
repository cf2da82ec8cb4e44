"""Viewer latency: time per rendered frame (p50 / p95) and time to ingest one chunk.

    python bench/viewer_latency.py                       # the shipped checkpoint
    python bench/viewer_latency.py --preset small        # an untrained model of that architecture
    python bench/viewer_latency.py --ckpt fsm.pt --devices cpu cuda

The cost of a render or an update does not depend on the weights, so `--preset` measures the
same thing when no trained checkpoint is at hand. The memory is primed with one chunk of
random frames first (renders read the fast weights whatever they hold). Renders go through
StreamSession.render exactly as the viewer calls it, one camera at a time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import tyro

import fsm
from fsm.cameras import look_at

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "fsm-small.pt"


@dataclasses.dataclass
class Args:
    ckpt: Path = SHIPPED
    """Checkpoint to time (ignored with --preset)."""
    preset: str | None = None
    """Time an untrained model of this preset (tiny | small | base) instead of a checkpoint."""
    sizes: tuple[int, ...] = (128, 256)
    """Square render sizes."""
    devices: tuple[str, ...] = ("cpu", "cuda")
    """Devices to time (cuda is skipped when absent)."""
    renders: int = 20
    """Timed renders per size (after 2 warm-up renders)."""
    chunks: int = 3
    """Timed chunk ingests (after 1 warm-up)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def orbit_cameras(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    up = torch.tensor([0.0, -1.0, 0.0])
    c2w = torch.stack([look_at(torch.tensor([2 * math.sin(a), 0.0, -2 * math.cos(a)]), torch.zeros(3), -up) for a in torch.linspace(-0.5, 0.5, n)])
    K = torch.tensor([0.9 * size, 0.9 * size, size / 2, size / 2]).expand(n, 4).clone()
    return c2w, K


def bench_device(model: fsm.FSM, device: str, args: Args) -> list[tuple]:
    model = model.to(device)
    fpc = model.stream.frames_per_chunk
    rows = []
    for size in args.sizes:
        c2w, K = orbit_cameras(fpc, size)
        frames = torch.rand(fpc, 3, size, size)
        times = torch.linspace(0, 1, fpc, dtype=torch.float64)
        # chunk ingest: a fresh session per chunk so every timing is the same (first-chunk) work
        ingest = []
        for i in range(args.chunks + 1):
            session = fsm.StreamSession(model, fsm.ClipNormalization(time_span=(0.0, 1.0)))
            sync(device)
            t0 = time.perf_counter()
            session.feed(frames, c2w, K, times)
            sync(device)
            if i:  # the first is warm-up
                ingest.append(time.perf_counter() - t0)
        # renders from the primed memory, one camera per call as the viewer does
        lat = []
        for i in range(args.renders + 2):
            j = i % fpc
            sync(device)
            t0 = time.perf_counter()
            session.render(c2w[j], K[j], 0.5, size, size)
            sync(device)
            if i >= 2:
                lat.append(time.perf_counter() - t0)
        lat_ms = np.array(lat) * 1e3
        ingest_s = float(np.median(ingest))
        rows.append((device, size, np.percentile(lat_ms, 50), np.percentile(lat_ms, 95), 1e3 / np.percentile(lat_ms, 50), fpc, ingest_s * 1e3, fpc / ingest_s))
    return rows


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset:
        torch.manual_seed(0)
        model, name = fsm.FSM.from_preset(args.preset).eval(), f"untrained preset {args.preset!r}"
    else:
        if not args.ckpt.is_file():
            raise SystemExit(f"viewer_latency: no checkpoint at {args.ckpt}; pass --ckpt PATH or --preset small")
        model, name = fsm.load_checkpoint(args.ckpt), str(args.ckpt)
    c = model.config
    print(f"model: {name} (D {c.dim}, {c.depth} layers, patch {c.patch}, {model.num_parameters() / 1e6:.1f} M params); torch threads {torch.get_num_threads()}")
    devices = [d for d in args.devices if not d.startswith("cuda") or torch.cuda.is_available()]
    rows = [r for d in devices for r in bench_device(model, d, args)]
    print(f"{'device':<7}{'size':>6}{'render p50 ms':>15}{'p95 ms':>9}{'renders/s':>11}{'chunk':>7}{'ingest ms':>11}{'frames/s':>10}")
    for dev, size, p50, p95, fps, fpc, ing, ing_fps in rows:
        print(f"{dev:<7}{size:>6}{p50:>15.1f}{p95:>9.1f}{fps:>11.1f}{fpc:>7}{ing:>11.1f}{ing_fps:>10.1f}")


if __name__ == "__main__":
    main(tyro.cli(Args))

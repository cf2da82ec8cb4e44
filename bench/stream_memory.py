"""Peak memory of streaming a clip: LaCET chunks (StreamSession) vs LaCT with one chunk.

Each measurement runs in a fresh subprocess; the figure is the growth of peak resident memory
(CPU: ru_maxrss) or peak allocated CUDA memory over the state right after the model is built.
Frames are synthesised chunk by chunk for streaming (that is what streaming allows); the
one-chunk LaCT pass needs the whole clip at once.

    python bench/stream_memory.py                 # small preset, 128x128, 16/64/256 frames
    python bench/stream_memory.py --device cuda
    python bench/stream_memory.py --long 2000     # the shipped checkpoint over a 2000-frame 64x64 clip

--long N streams one synthetic N-frame clip (smooth colour fields drifting past cameras circling
the scene, 64x64 by default) through StreamSession with the shipped checkpoint and checks after every chunk that every state (weights, anchors, importance) is finite,
renders a view (every head) every tenth of the clip and checks it is finite, and prints the
process's resident memory at each tenth: flat means nothing grows with the clip's length.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import dataclass

import tyro


@dataclass
class Args:
    preset: str = "small"  # model preset (weights are random: memory does not depend on them)
    frames: tuple[int, ...] = (16, 64, 256)  # clip lengths to stream
    resolution: int = 128
    frames_per_chunk: int = 8  # LaCET chunk size in frames (2048 tokens at 128x128)
    device: str = "cpu"
    long: int = 0  # > 0: the long-clip check with the shipped checkpoint over this many frames
    long_resolution: int = 64
    ckpt: str = ""  # checkpoint for --long (default: the shipped assets/fsm-small.pt)
    _worker: str = ""  # internal: "mode:frames" runs one measurement and prints JSON


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: Args) -> None:
    import torch

    import fsm

    mode, n = args._worker.split(":")
    n = int(n)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = fsm.FSM.from_preset(args.preset).to(device).eval()
    R = args.resolution
    K = torch.tensor([R * 0.9, R * 0.9, R / 2, R / 2], device=device)

    def frames(a, b):  # deterministic frames, cameras and times for frame indices [a, b)
        g = torch.Generator(device="cpu").manual_seed(a)
        imgs = torch.rand(b - a, 3, R, R, generator=g).to(device)
        c2w = torch.eye(4, device=device).repeat(b - a, 1, 1)
        c2w[:, 0, 3] = torch.arange(a, b, device=device) / n
        return imgs, c2w, K.repeat(b - a, 1), torch.arange(a, b, dtype=torch.float64)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_mb(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    chunk = args.frames_per_chunk if mode == "lacet" else n
    session = fsm.StreamSession(model, fsm.ClipNormalization(time_span=(0.0, n - 1.0)), model.stream_config(frames_per_chunk=chunk))
    for a in range(0, n, chunk):
        session.feed(*frames(a, min(n, a + chunk)))
    session.flush()
    session.render(torch.eye(4, device=device), K, n / 2, R, R)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"mode": mode, "frames": n, "peak_mb": _peak_mb(device) - base, "chunks": len(session.history)}))


def rss_mb() -> float:
    """Resident memory now (not the peak), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def long_clip(args: Args) -> None:
    import math
    from pathlib import Path

    import torch

    import fsm
    from fsm.cameras import look_at

    repo = Path(__file__).resolve().parents[1]
    ckpt = Path(args.ckpt) if args.ckpt else repo / "assets" / "fsm-small.pt"
    device = torch.device(args.device)
    model = fsm.load_checkpoint(ckpt, device=device)
    n, R = args.long, args.long_resolution
    stream = model.stream_config(frames_per_chunk=args.frames_per_chunk)
    g = torch.Generator().manual_seed(0)
    field = torch.rand(1, 3, 6, 6 + n // 20 + 1, generator=g)  # drifts one cell every 20 frames
    up = torch.tensor([0.0, 0.0, 1.0])
    K = torch.tensor([R * 0.9, R * 0.9, R / 2, R / 2])

    def frames(a, b):  # frames, cameras, times (10 fps) for frame indices [a, b)
        imgs = torch.stack([torch.nn.functional.interpolate(field[..., i // 20 : i // 20 + 6], size=(R, R), mode="bicubic", align_corners=False)[0] for i in range(a, b)])
        c2w = torch.stack([look_at(torch.tensor([3 * math.cos(0.01 * i), 3 * math.sin(0.01 * i), 0.6]), torch.zeros(3), up) for i in range(a, b)])
        return imgs.clamp(0, 1), c2w, K.repeat(b - a, 1), torch.arange(a, b, dtype=torch.float64) / 10

    session = fsm.StreamSession(model, fsm.ClipNormalization(time_span=(0.0, (n - 1) / 10)), stream)
    print(f"{ckpt.name}: {n} frames {R}x{R} in chunks of {stream.frames_per_chunk}, heads {list(model.config.heads)}, {args.device}")
    print("| frames | chunks | RSS | states finite | renders finite |\n|---|---|---|---|---|")
    rows, marks = [], {round(n * k / 10) for k in range(1, 11)}
    for a in range(0, n, stream.frames_per_chunk):
        b = min(n, a + stream.frames_per_chunk)
        imgs, c2w, Ks, ts = frames(a, b)
        session.feed(imgs, c2w, Ks, ts)
        if b == n:
            session.flush()
        finite = all(torch.isfinite(t).all() for l in range(session.num_layers) for d in vars(session.state(l)).values() if isinstance(d, dict) for t in d.values())
        if not finite:
            raise SystemExit(f"non-finite state after frame {b}")
        if any(a < m <= b for m in marks):
            t = ts[-1].item()
            ok = all(torch.isfinite(session.render(c2w[-1], Ks[-1], t, R, R, head=h)).all().item() for h in model.config.heads)
            if not ok:
                raise SystemExit(f"non-finite render at frame {b}")
            rows.append((b, len(session.history), rss_mb()))
            print(f"| {b} | {len(session.history)} | {rows[-1][2]:.0f} MB | yes | yes |", flush=True)
    first, last = rows[0][2], rows[-1][2]
    print(f"\nRSS at the end / after the first tenth: {last / first:.3f} ({last - first:+.0f} MB)")


def main(args: Args) -> None:
    if args._worker:
        return worker(args)
    if args.long:
        return long_clip(args)
    rows = {}
    for mode in ("lacet", "lact-1chunk"):
        for n in args.frames:
            cmd = [sys.executable, __file__, "--preset", args.preset, "--resolution", str(args.resolution),
                   "--frames-per-chunk", str(args.frames_per_chunk), "--device", args.device, "--_worker", f"{mode}:{n}"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows[mode, n] = json.loads(out)
            print(f"  {mode:12s} {n:4d} frames: +{rows[mode, n]['peak_mb']:8.1f} MB ({rows[mode, n]['chunks']} chunks)", flush=True)
    print(f"\nPeak memory growth while streaming ({args.preset}, {args.resolution}x{args.resolution}, {args.device}):\n")
    print("| mode | " + " | ".join(f"{n} frames" for n in args.frames) + f" | {args.frames[-1]}/{args.frames[0]} |")
    print("|---|" + "---|" * (len(args.frames) + 1))
    for mode, label in (("lacet", f"LaCET, {args.frames_per_chunk}-frame chunks"), ("lact-1chunk", "LaCT, one chunk")):
        mbs = [rows[mode, n]["peak_mb"] for n in args.frames]
        print(f"| {label} | " + " | ".join(f"{m:.0f} MB" for m in mbs) + f" | {mbs[-1] / max(mbs[0], 1e-9):.2f}x |")


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Peak memory of streaming a clip: LaCET chunks (StreamSession) vs LaCT with one chunk.

Each measurement runs in a fresh subprocess; the figure is the growth of peak resident memory
(CPU: ru_maxrss) or peak allocated CUDA memory over the state right after the model is built.
Frames are synthesised chunk by chunk for streaming (that is what streaming allows); the
one-chunk LaCT pass needs the whole clip at once.

    python bench/stream_memory.py                 # small preset, 128x128, 16/64/256 frames
    python bench/stream_memory.py --device cuda
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


def main(args: Args) -> None:
    if args._worker:
        return worker(args)
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

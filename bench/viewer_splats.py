"""Browser-drawn 4DGS splats: what one push costs, and the frame rate chromium draws them at.

    python bench/viewer_splats.py                     # shipped checkpoint: sample clip and a 256-frame clip
    python bench/viewer_splats.py --no-chromium       # without the browser frame rate
    python bench/viewer_splats.py --ckpt other.pt     # any checkpoint with a 4DGS head

For each clip: stream it through the viewer (the checkpoint's 4DGS head, as `fsm-view` shows it:
the number of Gaussians that survive pruning depends on what the weights learned), with one page
connected (tests/headless_browser.py: a websocket client that receives every byte), then move
the page's time `--moves` times and report per push: Gaussians, bytes, and milliseconds from the
time change to the push handed to viser, p50 / max; the first push after the memory changed
(it decodes the 4D Gaussians, once per chunk) is reported apart. With chromium present, a real
page orbits the splats for 6 s (longer, up to 40 s, until 3 frames were drawn) and the frame rate it reports (requestAnimationFrame callbacks per
second) is printed, and again for the same page with the server's render as its background:
headless chromium draws with software WebGL (SwiftShader) on the CPU, so the splat figure is
the CPU rasterizing every Gaussian, not what a GPU-backed browser does.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tyro

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import viser  # noqa: E402

import fsm  # noqa: E402
from fsm.cameras import look_at  # noqa: E402
from fsm.io import Cameras, Clip, load_clip  # noqa: E402
from fsm_viewer.app import ViewerApp  # noqa: E402
from fsm_viewer.cli import DEFAULT_CKPT  # noqa: E402
from tests.headless_browser import HeadlessBrowser  # noqa: E402


@dataclasses.dataclass
class Args:
    ckpt: Path = DEFAULT_CKPT
    """Checkpoint with a 4DGS head (default: the shipped one)."""
    resolution: int = 128
    long_frames: int = 256
    """Length of the second (synthetic orbit) clip."""
    moves: int = 20
    """Time changes timed per clip."""
    threads: int = 1
    chromium: bool = True
    """Also measure the frame rate of a headless chromium page orbiting the splats."""


def orbit_clip(n: int, size: int) -> Clip:
    """n frames of smooth colour fields from cameras circling the origin (10 fps)."""
    g = torch.Generator().manual_seed(0)
    field = torch.rand(1, 3, 8, 8 + n // 4 + 1, generator=g)
    frames = torch.stack([
        torch.nn.functional.interpolate(field[..., i // 4 : i // 4 + 8], size=(size, size), mode="bicubic", align_corners=False)[0]
        for i in range(n)
    ]).clamp(0, 1)  # fmt: skip
    up = torch.tensor([0.0, 0.0, 1.0])
    eyes = [torch.tensor([3 * math.sin(a), -3 * math.cos(a), 0.6]) for a in torch.linspace(-math.pi, math.pi, n)]
    c2w = torch.stack([look_at(e, torch.zeros(3), up) for e in eyes])
    K = torch.tensor([size * 0.9, size * 0.9, size / 2, size / 2]).expand(n, 4).clone()
    return Clip(frames, Cameras(c2w, K, torch.arange(n, dtype=torch.float64) / 10, size, size), fps=10.0)


def chromium_fps(app: ViewerApp, seconds: float = 6.0, max_seconds: float = 40.0) -> tuple[float, float] | None:
    """(fps with splats, fps with the server's render) of a headless chromium page orbiting:
    requestAnimationFrame callbacks per second over `seconds` (longer, up to `max_seconds`,
    until 3 frames were drawn). None without chromium or playwright."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    from scripts.screenshot_viewer import CHROMIUM_ARGS

    def orbit_fps(page) -> float:
        page.evaluate("window.__frames = 0; (function tick() { window.__frames++; requestAnimationFrame(tick); })()")
        x, y = 400, 400
        page.mouse.move(x, y)
        page.mouse.down()
        start = time.monotonic()
        frames0 = page.evaluate("window.__frames")
        steps = 0
        while True:  # orbit: drag across the canvas and back
            steps += 1
            page.mouse.move(x + 200 * math.sin(steps / 10), y + 40 * math.cos(steps / 10))
            time.sleep(0.02)
            elapsed = time.monotonic() - start
            frames = page.evaluate("window.__frames") - frames0
            if elapsed > max_seconds or (elapsed > seconds and frames >= 3):
                break
        page.mouse.up()
        return frames / elapsed

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"http://127.0.0.1:{app.server.get_port()}/?fixedDpr=1")
        end = time.monotonic() + 60
        while not (app.views and all(v.splats.pushes for v in app.views.values())):
            if time.monotonic() > end:
                raise TimeoutError("the page got no splats")
            time.sleep(0.1)
        time.sleep(2.0)  # the buffer reaches the page and is sorted once
        with_splats = orbit_fps(page)
        for view in app.views.values():
            view.set_splats(False)  # the same page with the server's render as background
        time.sleep(2.0)
        server_render = orbit_fps(page)
        browser.close()
    return with_splats, server_render


def measure(name: str, clip: Clip, model, args: Args) -> dict:
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(model, clip, server)
    page = HeadlessBrowser(server)
    try:
        while page.client_id not in app.views:
            time.sleep(0.01)
        view = app.views[page.client_id]
        t0 = time.perf_counter()
        while app.step() is not None:
            pass
        stream_s = time.perf_counter() - t0
        view.splats.wait_idle()
        app.reset()  # a fresh memory and one chunk: the push after a chunk includes the decode
        app.step()
        view.splats.wait_idle()
        first = view.splats.pushes[-1]
        while app.step() is not None:
            pass
        view.splats.wait_idle()
        view.splats.pushes.clear()
        t_lo, t_hi = app.time_span
        bytes0 = page.bytes_received
        for i in range(args.moves):
            view.set_time(t_lo + (t_hi - t_lo) * (i + 0.5) / args.moves)
            view.splats.wait_idle()
        pushes = list(view.splats.pushes)
        time.sleep(0.5)
        fps = chromium_fps(app) if args.chromium else None
        ms = np.array([p.ms for p in pushes])
        return {
            "clip": name, "frames": len(clip), "stream_s": stream_s,
            "gaussians": int(np.median([p.gaussians for p in pushes])), "bytes": int(np.median([p.bytes for p in pushes])),
            "ms_p50": float(np.median(ms)), "ms_max": float(ms.max()), "first_ms": first.ms, "first_gaussians": first.gaussians,
            "received": page.bytes_received - bytes0, "fps": fps,
        }  # fmt: skip
    finally:
        page.close()
        app.close()
        server.stop()


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    model = fsm.load_checkpoint(args.ckpt).eval()
    if "4dgs" not in model.config.heads:
        sys.exit(f"{args.ckpt}: this checkpoint has no 4DGS head (heads: {', '.join(model.config.heads)})")
    sample = load_clip(REPO / "assets" / "sample" / "sample.mp4", size=args.resolution)
    rows = [measure("sample", sample, model, args), measure(f"orbit-{args.long_frames}", orbit_clip(args.long_frames, args.resolution), model, args)]
    print(f"{args.ckpt.name} ({model.config.gs_head} 4DGS head), {args.resolution}x{args.resolution}, {torch.get_num_threads()} thread(s), "
          f"virtual-view budget {model.stream.max_virtual_views} frames")  # fmt: skip
    print("| clip | frames | Gaussians per push | bytes per push | time change -> push p50 / max | first push after a chunk (decode) | chromium fps orbiting, splats / server render (software WebGL) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        fps = f"{r['fps'][0]:.2f} / {r['fps'][1]:.1f}" if r["fps"] is not None else "n/a"
        print(f"| {r['clip']} | {r['frames']} | {r['gaussians']:,} | {r['bytes'] / 2**20:.2f} MiB | {r['ms_p50']:.0f} / {r['ms_max']:.0f} ms "
              f"| {r['first_ms']:.0f} ms ({r['first_gaussians']:,} Gaussians) | {fps} |")  # fmt: skip
    for r in rows:
        print(f"{r['clip']}: streamed in {r['stream_s']:.1f} s; the page received {r['received'] / 2**20:.2f} MiB for {args.moves} time changes")


if __name__ == "__main__":
    main(tyro.cli(Args))

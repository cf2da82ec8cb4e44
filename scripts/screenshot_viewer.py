"""Take the README screenshot: fsm-view on a clip with a checkpoint, in headless chromium.

    python scripts/screenshot_viewer.py --ckpt assets/fsm-small.pt --out docs/viewer.png

Streams the whole clip, snaps the browser camera to an input frame (so the background is the
model's render of a known view, with the ground truth and PSNR in the Render tab), and saves
a 1280x800 screenshot. Needs Debian's chromium and the playwright package (dev extra).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tyro
import viser
from playwright.sync_api import sync_playwright

from fsm_viewer.app import ViewerApp
from fsm_viewer.cli import DEFAULT_CLIP, load_inputs

# Headless chromium as root in a container, with nothing reaching out to the network
# (tests/test_viewer_browser.py launches it the same way).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@dataclass
class Args:
    ckpt: Path
    """Checkpoint to show."""
    clip: Path = DEFAULT_CLIP
    """Clip to stream."""
    out: Path = Path("docs/viewer.png")
    """Where to save the PNG."""
    frame: int | None = 40
    """Input frame to snap the camera to (None: keep the initial view with the camera frustums)."""
    tab: str = "Render"
    """Panel tab shown in the picture (Stream, Render or Path)."""
    browser_splats: bool = True
    """Keep the browser-drawn splats on, the default view (headless chromium draws them in
    software WebGL, slowly); --no-browser-splats shows the server's render of the 4DGS head."""
    chromium: str = "/usr/bin/chromium"


def wait_for(condition, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the viewer did not get there in time")
        time.sleep(0.2)


def main(args: Args) -> None:
    model, clip = load_inputs(args.clip, args.ckpt, None, "cpu", None, 128)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(model, clip, server)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{server.get_port()}/?fixedDpr=1")
            page.get_by_role("button", name="Start").click(timeout=60_000)
            wait_for(lambda: app.done and app.views)
            for close in page.locator(".mantine-Notification-closeButton").all():
                close.click()
            if not args.browser_splats and "4dgs" in app.heads:
                page.get_by_role("tab", name="Render").click()
                page.locator("div.mantine-Flex-root", has=page.get_by_text("Splats in the browser", exact=True)).locator("input").click()
            if args.frame is not None:
                # as a person would: pick the frame, snap (render + ground truth + PSNR), hide the frustums
                page.get_by_role("tab", name="Render").click()
                row = page.locator("div.mantine-Flex-root", has=page.get_by_text("Input frame", exact=True))
                row.locator("input").last.fill(str(args.frame))
                row.locator("input").last.press("Enter")
                page.get_by_role("button", name="Snap to input frame").click()
                page.get_by_text("PSNR", exact=False).wait_for(timeout=60_000)
                page.locator("div.mantine-Flex-root", has=page.get_by_text("Input cameras", exact=True)).locator("input").click()
            time.sleep(3.0)  # the full-resolution render after the last move
            page.get_by_role("tab", name=args.tab).click()
            time.sleep(1.0)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        app.close()
        server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))

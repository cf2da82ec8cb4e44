"""The viewer in a real browser: Debian's chromium driven by playwright (no `playwright install`).

Needs `apt-get install chromium` and `pip install playwright`; skips (saying which is missing)
otherwise. Saves a screenshot to test-artifacts/viewer.png.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import viser

import fsm
from fsm.cameras import look_at
from fsm.io import Cameras, Clip
from fsm_viewer.app import ViewerApp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from scripts.screenshot_viewer import CHROMIUM_ARGS  # noqa: E402  (needs playwright: after the skip)


def smooth_clip(n: int = 16, size: int = 64) -> Clip:
    """Cameras on an arc around the origin, frames of smooth colour fields that drift over time."""
    g = torch.Generator().manual_seed(1)
    field = torch.rand(1, 3, 6, 6 + n, generator=g)
    frames = torch.stack([F.interpolate(field[..., i : i + 6], size=(size, size), mode="bicubic", align_corners=False)[0] for i in range(n)])
    up = torch.tensor([0.0, 0.0, 1.0])
    eyes = [torch.tensor([3 * math.sin(a), -3 * math.cos(a), 0.6]) for a in torch.linspace(-0.7, 0.7, n)]
    c2w = torch.stack([look_at(e, torch.zeros(3), up) for e in eyes])
    K = torch.tensor([size * 0.9, size * 0.9, size / 2, size / 2]).expand(n, 4).clone()
    return Clip(frames.clamp(0, 1), Cameras(c2w, K, torch.arange(n, dtype=torch.float64) / 8, size, size), fps=8.0)


@pytest.fixture(scope="module")
def viewer():
    torch.manual_seed(0)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(fsm.FSM.from_preset("tiny").eval(), smooth_clip(), server, frames_per_chunk=4)
    yield app
    app.close()
    server.stop()


def slider(page, label: str):
    """The slider on the row labelled `label` (viser puts the label and the input in one row)."""
    return page.locator("div.mantine-Flex-root", has=page.get_by_text(label, exact=True)).get_by_role("slider").last


def drag(page, box: dict, dx: float, dy: float = 0.0, steps: int = 10) -> None:
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=steps)
    page.mouse.up()


@contextlib.contextmanager
def chromium():
    """Debian's chromium, headless, driven by playwright; closed on exit."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, server: viser.ViserServer, width: int = 1280, height: int = 800):
    """A new page of `browser` on the viewer at `server` (device pixel ratio 1)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"http://127.0.0.1:{server.get_port()}/?fixedDpr=1")
    return page


def wait_for(condition, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_viewer_in_chromium(viewer):
    with chromium() as browser:
        page = open_page(browser, viewer.server)

        # Stream tab: Start -> chunks arrive -> the drift plot is drawn
        page.get_by_role("button", name="Start").click(timeout=30_000)
        assert wait_for(lambda: viewer.done), "streaming did not finish"
        page.get_by_text("Drift from anchor", exact=False).wait_for(timeout=10_000)
        assert page.locator(".uplot canvas").count() >= 2
        # the layer-0 drift curve is drawn (its line colour is on the chart)
        import imageio.v3 as iio

        def line_pixels() -> int:  # the chart redraws as the last points arrive: poll, don't sleep
            chart = iio.imread(page.locator(".uplot").first.screenshot())[..., :3].astype(int)
            # within 80 of the line colour (summed over RGB): its anti-aliased edge pixels count too (a steep
            # curve has few exact ones: 48 were seen once), while no neutral grey of text or grid is that close (>= 89)
            return int((np.abs(chart - np.array([0x4E, 0x79, 0xA7])).sum(-1) < 80).sum())

        assert wait_for(lambda: line_pixels() > 50, timeout=30.0), f"no drift curve on the chart ({line_pixels()} line pixels)"
        page.get_by_text("Done.", exact=False).wait_for(timeout=10_000)

        # a rendered background arrived for this browser
        assert wait_for(lambda: any(v.renderer.frames_rendered > 0 for v in viewer.views.values()))
        view = next(iter(viewer.views.values()))
        renderer = view.renderer

        # Render tab: drag the time slider to the right -> the model time moves
        page.get_by_role("tab", name="Render").click()
        time_slider = slider(page, "Time (s)")
        time_slider.wait_for()
        drag(page, time_slider.bounding_box(), dx=120)
        assert wait_for(lambda: view.state.time > viewer.time_span[0] + 0.1), "time slider drag did not reach the app"

        # drag the 3D canvas -> the browser camera orbits -> a new render comes back
        before = renderer.client.camera.position.copy()
        count = renderer.frames_rendered
        drag(page, {"x": 200, "y": 250, "width": 300, "height": 300}, dx=-150, dy=30, steps=15)
        assert wait_for(lambda: not np.allclose(renderer.client.camera.position, before)), "canvas drag did not move the camera"
        assert wait_for(lambda: renderer.frames_rendered > count), "no render after the camera moved"
        time.sleep(1.0)  # the full-resolution frame after the camera settles

        # close the "software WebGL" warning (a property of headless chromium) before the picture
        for close in page.locator(".mantine-Notification-closeButton").all():
            close.click()
        page.get_by_role("tab", name="Stream").click()
        time.sleep(0.5)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "viewer.png"
        page.screenshot(path=str(shot))

        # the scene area shows the model's render: the background is not a flat colour
        pixels = iio.imread(shot)[100:700, 50:800, :3].astype(np.float64)
        assert pixels.std() > 10.0, "the 3D view looks blank"


def test_path_upload_gets_one_answer(viewer, tmp_path, capfd):
    """Loading a path file: our message about its content is the only notice (viser's own green
    "File uploaded successfully." is withdrawn), for a bad file and a good one; no traceback."""
    from fsm_viewer.paths import CameraPath, Keyframe

    bad = tmp_path / "broken.json"
    bad.write_text("{ not json")
    good = tmp_path / "good.json"
    keys = [Keyframe(viewer.clip.cameras.c2w[i].numpy().astype(float), float(viewer.clip.times[i]), 0.9) for i in (0, 5)]
    good.write_text(json.dumps(CameraPath(keys).to_dict()))
    with chromium() as browser:
        page = open_page(browser, viewer.server)
        page.get_by_role("tab", name="Path").click(timeout=30_000)
        notices = page.locator(".mantine-Notification-root")
        for file, answer in ((bad, "not JSON"), (good, "2 keyframes")):
            for close in page.locator(".mantine-Notification-closeButton").all():  # start from none
                close.click()
            page.locator("input[type=file]").set_input_files(str(file))
            page.get_by_text(answer, exact=False).wait_for(timeout=15_000)
            time.sleep(1.0)  # viser's own notice would be up by now (it shows from the upload's start)
            texts = [t for t in notices.all_inner_texts() if "software" not in t.lower()]  # headless WebGL warning
            assert len(texts) == 1 and answer in texts[0], texts
    assert "Traceback" not in capfd.readouterr().err


def test_four_pages_at_once(capfd):
    """Four pages stream, scrub and render at once; one closes in the middle of a render, another
    in the middle of a video export. The server goes on serving the other two with no exception
    in its log, and nothing of the closed pages is left: no view, no thread, no memory."""
    import gc
    import threading

    torch.manual_seed(0)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(fsm.FSM.from_preset("tiny").eval(), smooth_clip(), server, frames_per_chunk=4)
    thread_errors = []
    hook, threading.excepthook = threading.excepthook, thread_errors.append
    try:
        closed = four_pages(app)  # weak references to the closed pages' views
        gc.collect()
        assert all(r() is None for r in closed), "a closed page's view is still in memory"
    finally:
        threading.excepthook = hook
        app.close()
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and not thread_errors, err[-3000:]


def four_pages(app) -> list:
    """The four-page session (a function of its own: its locals are gone when it returns)."""
    import threading
    import weakref

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages, views = [], []
        for i in range(4):
            page = open_page(browser, app.server, 1000, 700)
            assert wait_for(lambda: len(app.views) == i + 1), f"page {i} did not connect"
            pages.append(page)
            views.append(app.views[max(app.views)])

        # every page presses Start (one memory: the clip streams once) and scrubs its own time
        for page in pages:
            page.get_by_role("button", name="Start").click(timeout=30_000)
        assert wait_for(lambda: app.done), "streaming did not finish"
        for i, (page, view) in enumerate(zip(pages, views)):
            page.get_by_role("tab", name="Render").click()
            time_slider = slider(page, "Time (s)")
            time_slider.wait_for()
            drag(page, time_slider.bounding_box(), dx=40 + 30 * i)
        assert wait_for(lambda: all(v.state.time > app.time_span[0] for v in views)), "a time drag did not reach its view"
        assert len({round(v.state.time, 3) for v in views}) > 1, "the pages' times are not their own"
        assert wait_for(lambda: all(v.renderer.frames_rendered > 0 for v in views)), "a page got no render"

        # page 1: a long video export, closed in the middle
        exporter = views[1]
        pages[1].get_by_role("tab", name="Path").click()
        pages[1].get_by_role("button", name="Add keyframe").click()
        drag(pages[1], {"x": 200, "y": 250, "width": 300, "height": 300}, dx=-120, steps=8)
        pages[1].get_by_role("button", name="Add keyframe").click()
        assert wait_for(lambda: len(exporter.path.keyframes) == 2)
        row = pages[1].locator("div.mantine-Flex-root", has=pages[1].get_by_text("Duration (s)", exact=True))
        row.locator("input").last.fill("60")  # 1440 frames: minutes of work
        row.locator("input").last.press("Enter")
        assert wait_for(lambda: exporter.path.duration == 60.0)
        pages[1].get_by_role("button", name="Render video").click()
        assert wait_for(lambda: exporter.panels.path.exports and exporter.panels.path.progress.value > 0), "the export did not start"

        # page 2: closed while its render thread is inside a render
        closing = views[2]
        inside, original = threading.Event(), closing.renderer.render

        def slow_render(client, scale):
            inside.set()
            time.sleep(1.0)
            return original(client, scale)

        closing.renderer.render = slow_render
        drag(pages[2], {"x": 200, "y": 250, "width": 300, "height": 300}, dx=-100, dy=20, steps=8)
        assert inside.wait(20), "page 2 never started a render"
        pages[2].close()
        pages[1].close()

        closed = [views[1], views[2]]
        threads = [t for v in closed for t in v.threads]
        assert wait_for(lambda: len(app.views) == 2), "the closed pages' views are still registered"
        assert wait_for(lambda: not any(t.is_alive() for t in threads), timeout=30), [t.name for t in threads if t.is_alive()]

        # the other two keep working: page 0 scrubs and gets a new render, page 3 snaps to a frame
        count = views[0].renderer.frames_rendered
        drag(pages[0], slider(pages[0], "Time (s)").bounding_box(), dx=-60)
        assert wait_for(lambda: views[0].renderer.frames_rendered > count), "page 0 got no render after the others closed"
        pages[3].get_by_role("button", name="Snap to input frame").click()
        pages[3].get_by_text("PSNR", exact=False).wait_for(timeout=30_000)
        browser.close()
    return [weakref.ref(v) for v in closed]

"""The viewer as people use it (issue 14): what a first-time user ran into, several pages at once,
browser-drawn 4DGS splats and their export, long histories. Pages are headless browsers speaking
viser's protocol (tests/headless_browser.py); tests/test_viewer_browser.py drives real chromium."""

from __future__ import annotations

import argparse
import json
import math
import socket
import threading
import time

import numpy as np
import pytest
import torch
import viser

import fsm
from fsm.cameras import look_at
from fsm.gaussians import read_ply
from fsm.io import Cameras, Clip
from fsm_viewer import scene
from fsm_viewer.app import ViewerApp, start_server
from fsm_viewer.cli import Args
from fsm_viewer.panels import MAX_POINTS, decimate, guarded, importance_image
from fsm_viewer.splats import BYTES_PER_GAUSSIAN, SplatStreamer, export_ply_sequence
from fsm_viewer.view import UserError
from tests.headless_browser import HeadlessBrowser
from tests.test_viewer import SIZE, model, orbit_clip, viewer, viewer_4dgs, wait_for  # noqa: F401 (fixtures)

EVENT = type("Event", (), {"client": None})


@pytest.fixture
def pages(viewer):
    """connect() -> a new page's BrowserView; every page closes at the end."""
    opened = []

    def connect():
        page = HeadlessBrowser(viewer.server)
        opened.append(page)
        assert wait_for(lambda: page.client_id in viewer.views)
        return viewer.views[page.client_id]

    yield connect
    for page in opened:
        page.close()


def stream_all(app):
    while app.step() is not None:
        pass


# ----------------------------------------------------------------------------------------------
# 2.1 an empty memory says so


def test_empty_memory_says_what_to_do_and_refuses_exports(viewer, pages, monkeypatch):
    view = pages()
    assert viewer.empty and "empty" in viewer.memory_line.content and "Start" in viewer.memory_line.content
    assert view.render_frame(view.client) is None  # no full-screen render of nothing
    assert view.panels.render.empty_note.visible
    stream = viewer.panels.stream
    assert not stream.drift_plot.visible and not stream.update_plot.visible and stream.empty_note.visible

    seen = []
    monkeypatch.setattr(viewer, "notify", lambda title, body, client=None, color="red": seen.append((body, color)))
    view.add_keyframe(viewer.clip.c2w[0], 0.9, time=0.0)
    guarded(viewer, view.panels.path._render_video)(EVENT())
    assert len(seen) == 1 and "memory is empty" in seen[0][0] and "Start" in seen[0][0] and seen[0][1] == "yellow"
    with pytest.raises(UserError, match="memory is empty"):
        view.export_video("unused.mp4")

    viewer.step()
    assert not viewer.empty and "1 chunks" in viewer.memory_line.content
    assert not view.panels.render.empty_note.visible and stream.drift_plot.visible
    image = view.render_frame(view.client)
    assert image is not None and image.dtype == np.uint8


# ----------------------------------------------------------------------------------------------
# 2.2 the current camera stays hidden


def test_hidden_input_cameras_stay_hidden_when_time_changes(viewer, pages):
    view = pages()
    view.panels.render.show_inputs.value = False
    for t in (0.1, 0.3, 0.6):
        view.set_time(t)
        assert not view.current.visible and not any(h.visible for h in view.frustums.values())
    view.panels.render.show_inputs.value = True
    view.set_time(0.2)
    assert view.current.visible and all(h.visible for h in view.frustums.values())


# ----------------------------------------------------------------------------------------------
# 2.3 the heatmap shows the peaks, keeps the aspect, and agrees with the table


def test_importance_heatmap_shows_peaks_and_keeps_aspect():
    F = torch.full((512, 256), 1e-8)
    F[100, 37] = 5e-2  # one strong entry: block averaging of log10 F washed it out
    image, lo, hi = importance_image(F, width=320)
    assert hi == pytest.approx(math.log10(5e-2), abs=1e-6) and lo == pytest.approx(-8, abs=1e-6)
    heat = image[:320]  # above the gap and the colour bar
    yellow = np.all(heat == [253, 231, 37], axis=-1)
    assert yellow.any(), "the peak is not drawn"
    # 512 x 256 (rows x columns) stays twice as tall as wide: 320 x 160, white either side
    coloured = ~np.all(heat == 255, axis=-1)
    cols = np.where(coloured.any(0))[0]
    assert cols.min() == 80 and cols.max() == 239
    assert np.all(heat[:, :80] == 255) and np.all(heat[:, 240:] == 255)


def test_heatmap_caption_matches_the_table(viewer):
    stream_all(viewer)
    panel = viewer.panels.stream
    panel.layer.value = "1"
    v = viewer.stream_view(1, "w0")
    f_max = v.history[-1].layers[1].importance_max["w0"]
    assert float(v.importance.max()) == pytest.approx(f_max, rel=1e-6)  # the table's "F max"
    assert f"**{f_max:.1e}** (yellow)" in panel.legend.content
    assert f"{f_max:.2e}" in panel.summary.content


# ----------------------------------------------------------------------------------------------
# 2.4 charts: axis titles, integer ticks, values in the legend; long histories decimated


def test_charts_have_axis_titles_integer_ticks_and_legend_values(viewer):
    stream_all(viewer)
    plot = viewer.panels.stream.drift_plot
    x_axis, y_axis = plot.axes
    assert x_axis["label"] == "chunk" and y_axis["label"] == "drift"
    assert all(float(i).is_integer() for i in x_axis["incrs"])
    last = viewer.session.chunk_stats("drift", "w0")[-1]
    assert [s["label"] for s in plot.series[1:]] == [f"L{i} {last[i]:.3g}" for i in range(viewer.num_layers)]


def test_long_histories_are_decimated_keeping_peaks():
    n = 3001
    x = np.arange(n, dtype=np.float64)
    ys = np.random.default_rng(0).random((n, 3))
    ys[1234, 1] = 50.0  # a spike
    xd, yd = decimate(x, ys)
    assert len(xd) == MAX_POINTS and yd.shape == (MAX_POINTS, 3)
    assert xd[-1] == n - 1 and np.all(np.diff(xd) > 0)
    assert yd[:, 1].max() == 50.0 and yd[:, 0].max() == ys[:, 0].max()
    assert decimate(x[:10], ys[:10])[0] is x[:10] or len(decimate(x[:10], ys[:10])[0]) == 10


# ----------------------------------------------------------------------------------------------
# 2.5 the lambda in effect


def test_plain_lact_shows_lambda_zero_and_restores_the_choice(viewer):
    panel = viewer.panels.stream
    panel.lam.value = 0.35
    viewer.pause()
    panel.plain.value = True
    assert panel.lam.value == 0.0 and panel.lam.disabled and viewer.stream.elastic.lam == 0.0
    panel.plain.value = False
    assert panel.lam.value == pytest.approx(0.35) and not panel.lam.disabled
    assert viewer.stream.elastic.lam == pytest.approx(0.35)
    viewer.pause()


# ----------------------------------------------------------------------------------------------
# 2.6 a bad path upload: one message, no traceback


def test_bad_path_upload_is_one_message_without_traceback(viewer, pages, monkeypatch, capsys):
    view = pages()
    seen = []
    monkeypatch.setattr(viewer, "notify", lambda title, body, client=None, color="red": seen.append((title, body, color)))
    for content in (b"not json", json.dumps({"format": "something else"}).encode()):
        upload = type("Upload", (), {"name": "fsm-path.json", "content": content})()
        event = type("Event", (), {"client": None, "target": type("T", (), {"value": upload})()})()
        guarded(viewer, view.panels.path._load)(event)
    assert [s[2] for s in seen] == ["yellow", "yellow"] and all("fsm-path.json" in s[1] for s in seen)
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 2.9 a random file as --ckpt, 2.10 a port in use (2.7 and 2.8: tests/test_viewer_cli.py)


def test_pickled_object_as_ckpt_is_one_line(tmp_path, capsys):
    from fsm_viewer.cli import load_inputs

    ckpt = tmp_path / "random.pt"
    torch.save(argparse.Namespace(weights=torch.zeros(3)), ckpt)  # a real torch file, not ours
    with pytest.raises(SystemExit):
        load_inputs(tmp_path / "unused.mp4", ckpt, None, "cpu", None, 32)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "random.pt: not a readable fsm-view checkpoint" in err
    assert "weights_only" not in err


def test_startup_line_says_when_the_port_was_taken(model):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    args = Args(host="127.0.0.1", port=port, no_open=True)
    try:
        server, app, url, line = start_server(model, orbit_clip(), args)
        try:
            assert server.get_port() != port
            assert f"port {port} was taken, so {server.get_port()} is used" in line and url in line
        finally:
            app.close()
            server.stop()
    finally:
        busy.close()


# ----------------------------------------------------------------------------------------------
# 2.11 the first view shows the trajectory


def forward_clip(n: int = 12) -> Clip:
    """A camera driving forward: every camera faces +z, centres on a line along z."""
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 2, 3] = torch.linspace(0, 3, n)
    K = torch.tensor([SIZE * 0.8, SIZE * 0.8, SIZE / 2, SIZE / 2]).expand(n, 4).clone()
    return Clip(torch.rand(n, 3, SIZE, SIZE), Cameras(c2w, K, torch.arange(n, dtype=torch.float64) / 10, SIZE, SIZE), fps=10.0)


@pytest.mark.parametrize("make", [forward_clip, orbit_clip])
def test_overview_camera_sees_the_trajectory_spread_out(make):
    from fsm.cameras import ClipNormalization

    clip = make()
    norm = ClipNormalization.for_clip(clip.c2w, clip.times).poses
    c2w, fov = scene.overview_camera(clip, norm)
    # project the camera centres with the chosen camera (OpenCV: +z forward)
    w2c = torch.linalg.inv(c2w.double())
    p = (w2c[:3, :3] @ clip.c2w[:, :3, 3].double().T + w2c[:3, 3:]).T  # (N,3) camera frame
    assert (p[:, 2] > 0).all(), "a camera centre is behind the view"
    f = 0.5 / math.tan(0.5 * fov)  # normalised image: [-0.5, 0.5] vertically
    uv = p[:, :2] / p[:, 2:] * f
    assert (uv.abs() < 0.5 * max(1.0, clip.cameras.width / clip.cameras.height)).all(), "a camera centre is out of view"
    extent = (uv.max(0).values - uv.min(0).values).max()
    assert extent > 0.25, f"the trajectory covers only {extent:.2f} of the view"  # end-on it would be ~0


# ----------------------------------------------------------------------------------------------
# 2.12 what is per browser


def test_time_settings_and_keyframes_are_per_browser(viewer, pages):
    stream_all(viewer)
    a, b = pages(), pages()
    a.panels.render.time.value = 0.4
    a.panels.render.show_inputs.value = False
    a.panels.render.resolution.value = 64
    a.add_keyframe()
    assert a.state.time == pytest.approx(0.4) and b.state.time == viewer.time_span[0]
    assert not a.current.visible and b.current.visible and all(h.visible for h in b.frustums.values())
    assert a.state.resolution == 64 and b.state.resolution == SIZE
    assert len(a.path.keyframes) == 1 and b.path.keyframes == []
    # the memory is shared: one session, streamed once for both
    assert a.app.session is b.app.session


# ----------------------------------------------------------------------------------------------
# 1. browser-drawn splats: coalesced pushes, PLY sequence


class FakeScene:
    def __init__(self):
        self.pushed, self.removed = [], 0

    def add_gaussian_splats(self, name, **arrays):
        self.pushed.append(arrays)

    def remove_by_name(self, name):
        self.removed += 1


def test_splat_pushes_are_coalesced_latest_time_wins():
    current = {"t": 0.0}
    sliced = []
    gate = threading.Event()

    def slice_at(t):
        gate.wait()  # the first slice is slow: requests pile up meanwhile
        sliced.append(t)
        n = 3 + int(10 * t)
        return fsm.gaussians.Gaussians3D(torch.zeros(n, 3), torch.eye(3).expand(n, 3, 3), torch.rand(n, 3), torch.full((n,), 0.5))

    fake = FakeScene()
    streamer = SplatStreamer(fake, slice_at, lambda: current["t"], lambda: True)
    try:
        streamer.request()
        time.sleep(0.1)  # the thread is now inside the first (blocked) slice
        for i in range(1, 21):  # 20 time changes while it is busy
            current["t"] = i / 20
            streamer.request()
        gate.set()
        assert streamer.wait_idle()
        assert streamer.requests == 21 and len(sliced) == 2  # 20 requests -> one more push
        assert sliced[-1] == 1.0 and streamer.pushes[-1].time == 1.0  # the latest time
        last = streamer.pushes[-1]
        assert last.gaussians == 13 and last.bytes == 13 * BYTES_PER_GAUSSIAN and last.ms >= 0
        assert len(fake.pushed) == 2 and fake.pushed[-1]["centers"].shape == (13, 3)
    finally:
        streamer.stop()
    assert not streamer._thread.is_alive()


def test_splats_follow_the_browser_time_and_push_over_the_wire(viewer_4dgs):
    app = viewer_4dgs
    page = HeadlessBrowser(app.server)
    try:
        assert wait_for(lambda: page.client_id in app.views)
        view = app.views[page.client_id]
        stream_all(app)
        assert view.splats.wait_idle()
        before = page.bytes_received
        view.panels.render.time.value = 0.5
        assert view.splats.wait_idle()
        push = view.splats.pushes[-1]
        g = app.gaussians(0.5)
        assert push.time == pytest.approx(0.5) and push.gaussians == len(g) > 0
        assert wait_for(lambda: page.bytes_received - before >= push.bytes)  # the buffer reached the page
        # splats off: the node goes, the server renders again
        view.panels.render.splats.value = False
        assert view.splats.wait_idle() and view.render_frame(view.client) is not None
    finally:
        page.close()


def test_ply_sequence_over_a_time_range_reads_back(viewer_4dgs, tmp_path):
    app = viewer_4dgs
    stream_all(app)
    times = np.linspace(0.0, 0.6, 4)
    files = export_ply_sequence(app.gaussians, times, tmp_path)
    assert [f.name for f in files] == [f"fsm-gaussians-{i:04d}.ply" for i in range(4)]
    for f, t in zip(files, times):
        g, back = app.gaussians(float(t)), read_ply(f)
        assert len(back) == len(g)
        np.testing.assert_allclose(back.means.numpy(), g.means.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back.covariances.numpy(), g.covariances.numpy(), rtol=1e-3, atol=1e-6)


def test_ply_sequence_download_from_the_render_tab(viewer_4dgs, monkeypatch):
    import io
    import zipfile

    app = viewer_4dgs
    page = HeadlessBrowser(app.server)
    try:
        assert wait_for(lambda: page.client_id in app.views)
        view = app.views[page.client_id]
        stream_all(app)
        got = {}
        monkeypatch.setattr(view.client, "send_file_download", lambda name, data, save_immediately=True: got.update({name: data}))
        panel = view.panels.render
        panel.seq_from.value, panel.seq_to.value, panel.seq_frames.value = 0.1, 0.5, 3
        panel._export_sequence(EVENT())
        with zipfile.ZipFile(io.BytesIO(got["fsm-gaussians.zip"])) as z:
            names = sorted(z.namelist())
            times = [float(line.split()[1]) for line in z.read("times.txt").decode().splitlines()]
        assert names == ["fsm-gaussians-0000.ply", "fsm-gaussians-0001.ply", "fsm-gaussians-0002.ply", "times.txt"]
        assert times == pytest.approx([0.1, 0.3, 0.5])
    finally:
        page.close()


# ----------------------------------------------------------------------------------------------
# 3. pages that close: nothing left behind


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no exception in any thread
def test_closed_pages_leave_no_threads_or_views(viewer):
    import gc
    import weakref

    stream_all(viewer)
    base = {t.ident for t in threading.enumerate()}
    pages = [HeadlessBrowser(viewer.server) for _ in range(4)]
    assert wait_for(lambda: len(viewer.views) == 4)
    views = list(viewer.views.values())
    threads = [t for v in views for t in v.threads]
    assert all(t.is_alive() for t in threads)
    views[0].panels.render.play.value = True  # one page playing while it closes
    for p in pages:
        p.close()
    assert wait_for(lambda: not viewer.views), "a closed page's view is still registered"
    assert wait_for(lambda: not any(t.is_alive() for t in threads), timeout=15), [t.name for t in threads if t.is_alive()]
    left = [t.name for t in threading.enumerate() if t.ident not in base]
    assert not [n for n in left if n.startswith(("render-client", "splats", "play"))], left
    refs = [weakref.ref(v) for v in views]
    del views, threads
    # viser's disconnect handling finishes on its own threads: give it a moment, collecting as it goes
    gone = lambda: gc.collect() >= 0 and all(r() is None for r in refs)
    assert wait_for(gone, timeout=10), "a closed page's BrowserView is still referenced (memory per page)"


# ----------------------------------------------------------------------------------------------
# 3. a long clip: finite all the way, plots stay small


def test_long_clip_stays_finite_and_plots_stay_small(model):
    """2000 frames (16x16, the tiny model) in 500 chunks through the viewer: every state finite,
    renders finite, and the Stream tab's curves send at most MAX_POINTS points, not 501.
    (The shipped model over 2000 64x64 frames, with memory: bench/stream_memory.py --long.)"""
    n, size = 2000, 16
    g = torch.Generator().manual_seed(3)
    field = torch.rand(1, 3, 4, 4 + n // 50, generator=g)
    frames = torch.stack([torch.nn.functional.interpolate(field[..., i // 50 : i // 50 + 4], size=(size, size), mode="bilinear")[0] for i in range(n)])
    up = torch.tensor([0.0, 0.0, 1.0])
    c2w = torch.stack([look_at(torch.tensor([3 * math.sin(a), -3 * math.cos(a), 0.5]), torch.zeros(3), up) for a in torch.linspace(0, 12 * math.pi, n)])
    K = torch.tensor([size * 0.9, size * 0.9, size / 2, size / 2]).expand(n, 4).clone()
    clip = Clip(frames, Cameras(c2w, K, torch.arange(n, dtype=torch.float64) / 30, size, size), fps=30.0)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(model, clip, server, frames_per_chunk=4)
    try:
        while app.step() is not None:
            for layer in range(app.num_layers):
                s = app.session.state(layer)
                for tensors in (s.weights, s.anchors, s.importance):
                    assert all(torch.isfinite(t).all() for t in tensors.values()), f"chunk {len(app.session.history)}, layer {layer}"
        assert len(app.session.history) == 500
        for t in (0.0, 33.3, 66.6):
            i = int(t * 30)
            assert torch.isfinite(app.render(c2w[i], K[i], t, size, size)).all()
        data = app.panels.stream.drift_plot.data
        assert len(data[0]) == MAX_POINTS and data[0][-1] == 500
        assert all(np.isfinite(d).all() for d in data)
    finally:
        app.close()
        server.stop()

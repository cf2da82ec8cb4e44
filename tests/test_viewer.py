"""The viewer without chromium: the app driven through its methods and GUI callbacks, and a
headless browser (tests/headless_browser.py: viser's websocket protocol) where a page is needed."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import viser

import fsm
from fsm.cameras import look_at
from fsm.io import Cameras, Clip, write_clip
from fsm_viewer import cli as cli_module
from fsm_viewer.app import ViewerApp
from tests.headless_browser import HeadlessBrowser
from fsm_viewer.cli import load_inputs, main
from fsm_viewer.panels import importance_image
from fsm_viewer.paths import CameraPath, Keyframe, PathError
from fsm_viewer.video import intrinsics_from_fov
from fsm_viewer.render import main as render_main

SIZE = 32  # frames SIZE x SIZE: 16 tokens of the tiny model's 8x8 patches


def orbit_clip(n: int = 7, size: int = SIZE, seed: int = 0) -> Clip:
    """n random frames from cameras on an arc looking at the origin, 10 fps."""
    g = torch.Generator().manual_seed(seed)
    up = torch.tensor([0.0, -1.0, 0.0])  # world y down, so the scene's up is -y
    c2w = torch.stack([look_at(torch.tensor([2 * math.sin(a), 0.0, -2 * math.cos(a)]), torch.zeros(3), -up) for a in torch.linspace(-0.4, 0.4, n)])
    f = size * 0.8
    K = torch.tensor([f, f, size / 2, size / 2]).expand(n, 4).clone()
    cams = Cameras(c2w.float(), K, torch.arange(n, dtype=torch.float64) / 10, size, size)
    return Clip(torch.rand(n, 3, size, size, generator=g), cams, fps=10.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fsm.FSM.from_preset("tiny").eval()


@pytest.fixture
def viewer(model):
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(model, orbit_clip(), server, frames_per_chunk=2)
    yield app
    app.close()
    server.stop()


@pytest.fixture
def view(viewer):
    """One connected page's BrowserView."""
    page = HeadlessBrowser(viewer.server)
    assert wait_for(lambda: page.client_id in viewer.views)
    yield viewer.views[page.client_id]
    page.close()


def wait_for(condition, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_streaming_grows_history_and_plots(viewer):
    assert viewer.num_chunks == 4  # 7 frames in chunks of 2: 2 + 2 + 2 + 1
    records = [viewer.step() for _ in range(4)]
    assert viewer.step() is None and viewer.done
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert [r.frames for r in records] == [2, 2, 2, 1]
    assert len(viewer.session.history) == 4 and viewer.session.frames_ingested == 7
    # the panel reads the same numbers the session recorded
    stream = viewer.panels.stream
    data = stream.drift_plot.data
    assert len(data) == 1 + viewer.model.config.depth and list(data[0]) == [0, 1, 2, 3, 4]  # 0: before any chunk
    assert data[1][-1] == pytest.approx(records[-1].layers[0].drift["w0"])
    assert stream.progress.value == pytest.approx(100.0)
    assert "Done" in stream.status.content
    # the matrix selector switches every curve to that matrix
    stream.matrix.value = "w1"
    assert stream.update_plot.data[2][1] == pytest.approx(records[0].layers[1].update_norm["w1"])


def wait_until_stopped(viewer, timeout=30.0):
    end = time.monotonic() + timeout
    while viewer.running and time.monotonic() < end:
        time.sleep(0.05)
    with viewer.lock:  # the last chunk's bookkeeping is finished once the lock is free
        pass


def test_background_streaming_and_elastic_change(viewer):
    viewer.start()
    wait_until_stopped(viewer)
    assert viewer.done and len(viewer.session.history) == 4
    # ticking "Plain LaCT" resets the memory and streams the clip again with lambda = 0 ...
    viewer.panels.stream.plain.value = True
    wait_until_stopped(viewer)
    assert viewer.done and len(viewer.session.history) == 4 and viewer.session.elastic.lam == 0.0
    # ... which gives exactly the fast weights of a fresh plain-LaCT session fed the same chunks
    c = viewer.clip
    ref = fsm.StreamSession(viewer.model, viewer.clip_norm, viewer.model.stream_config(frames_per_chunk=2, elastic=fsm.ElasticConfig.plain_lact()))
    ref.feed(c.frames, c.c2w, c.fxfycxcy, c.times)
    ref.flush()
    for layer in range(viewer.session.num_layers):
        for m, w in ref.state(layer).weights.items():
            assert torch.equal(viewer.session.state(layer).weights[m], w)


def test_render_at_camera_and_time(viewer, view):
    viewer.step()
    c2w, fov = viewer.trajectory_camera(2.5)
    H, W = view.render_size(aspect=1.5)
    assert (H, W) == (32, 48)
    image = viewer.render(c2w, intrinsics_from_fov(fov, H, W), 0.3, H, W)
    assert image.shape == (3, H, W) and torch.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0
    # the time changes the render (time is a model input)
    other = viewer.render(c2w, intrinsics_from_fov(fov, H, W), 0.0, H, W)
    assert not torch.allclose(image, other)


def test_snap_to_input_frame_psnr(viewer, view):
    viewer.step()
    render, gt, value = view.snap_to_frame(3)
    assert render.shape == gt.shape == (SIZE, SIZE, 3) and gt.dtype == np.uint8
    # PSNR against the frame, recomputed independently from the uint8 images (8-bit rounding only)
    mse = np.mean((render.astype(np.float64) / 255 - viewer.clip.frames[3].permute(1, 2, 0).numpy()) ** 2)
    assert value == pytest.approx(-10 * math.log10(mse), abs=0.05)
    with pytest.raises(ValueError, match="outside the clip"):
        view.snap_to_frame(99)


def test_callback_errors_become_notifications(viewer, view, monkeypatch):
    seen = []
    monkeypatch.setattr(viewer, "notify", lambda title, body, client=None, color="red": seen.append(body))
    viewer.step()
    view.panels.render.frame.value = 6
    viewer.session.render = None  # break the model call: the snap callback must not raise
    from fsm_viewer.panels import guarded

    guarded(viewer, view.panels.render._snap)(type("E", (), {"client": None})())
    assert seen and "TypeError" in seen[0]


def test_path_export_writes_mp4_with_frame_count(viewer, view, tmp_path):
    viewer.step()
    c = viewer.clip
    view.add_keyframe(c.c2w[0], 0.9, time=0.0)
    view.add_keyframe(c.c2w[6], 0.7, time=0.6)
    view.path.duration, view.path.fps, view.path.height = 1.0, 12.0, 32
    view.path.aspect = 1.5
    out = tmp_path / "path.mp4"
    steps = []
    assert view.export_video(out, lambda done, total: steps.append((done, total))) == 12
    assert steps[-1] == (12, 12)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (32, 48, 3)
    # the path preview draws keyframe frustums and the spline
    view.panels.path.refresh(select=1)
    assert view.panels.path.keys.options == ("1: t = 0.00 s", "2: t = 0.60 s")


def test_path_sampling_hits_keyframes_and_json_round_trip(tmp_path):
    clip = orbit_clip()
    keys = [Keyframe(clip.c2w[i].double().numpy(), float(t), fov) for i, t, fov in ((0, 0.0, 0.8), (3, 0.5, 0.6), (6, 0.2, 1.0))]
    path = CameraPath(keys, fps=5.0, duration=1.0, height=64, aspect=2.0)  # 5 frames: s = 0, .5, 1, 1.5, 2
    c2w, times, fov = path.sample()
    assert c2w.shape == (5, 4, 4)
    assert torch.allclose(c2w[[0, 2, 4]], clip.c2w[[0, 3, 6]], atol=1e-5)
    assert np.allclose(times, [0.0, 0.25, 0.5, 0.35, 0.2]) and np.allclose(fov, [0.8, 0.7, 0.6, 0.8, 1.0])
    file = tmp_path / "p.json"
    path.save(file)
    back = CameraPath.load(file)
    assert back.to_dict() == path.to_dict()
    bad = path.to_dict()
    bad["keyframes"][1]["c2w"][0][0] = float("nan")
    file.write_text(json.dumps(bad))
    with pytest.raises(PathError, match="keyframe 1"):
        CameraPath.load(file)


def test_importance_heatmap_scale():
    F = torch.full((64, 128), 1e-6)
    F[:32] = 1e-2  # the top half 4 decades more important
    image, lo, hi = importance_image(F)
    assert (lo, hi) == (pytest.approx(-6), pytest.approx(-2))
    assert image.dtype == np.uint8 and image.shape[1] == 320
    top, bottom = image[5, 5].astype(int), image[100, 5].astype(int)
    assert top.tolist() == [253, 231, 37]  # max -> yellow
    assert bottom.tolist() == [68, 1, 84]  # min -> purple


# ----------------------------------------------------------------------------------------------
# Command line: files on disk


@pytest.fixture
def files(tmp_path, model):
    clip = orbit_clip(n=6, size=48)
    video = tmp_path / "clip.mp4"
    write_clip(video, clip.frames, clip.cameras, clip.fps)
    ckpt = tmp_path / "tiny.pt"
    fsm.save_checkpoint(ckpt, model)
    return video, ckpt


def test_load_inputs_reads_clip_at_resolution(files):
    video, ckpt = files
    model, clip = load_inputs(video, ckpt, None, "cpu", None, 32)
    assert clip.frames.shape == (6, 3, 32, 32) and model.config.preset == "tiny"


@pytest.mark.parametrize("dtype, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("auto", None)])
def test_load_inputs_sets_compute_dtype(files, dtype, expected):
    from fsm.precision import cpu_has_bf16

    video, ckpt = files
    model, _ = load_inputs(video, ckpt, None, "cpu", None, 32, dtype=dtype)
    assert model.compute_dtype == (expected or (torch.bfloat16 if cpu_has_bf16() else torch.float32))


@pytest.mark.parametrize("case", ["missing_clip", "bad_clip", "bad_ckpt", "no_default_ckpt", "bad_resolution"])
def test_bad_input_exits_2_with_one_message(case, files, tmp_path, capsys, monkeypatch):
    video, ckpt = files
    argv, expect = {
        "missing_clip": ([str(tmp_path / "nope.mp4"), "--ckpt", str(ckpt)], "nope.mp4: file not found"),
        "bad_clip": ([str(tmp_path / "bad.mp4"), "--ckpt", str(ckpt)], "bad.mp4"),
        "bad_ckpt": ([str(video), "--ckpt", str(tmp_path / "junk.pt")], "junk.pt: not a readable fsm-view checkpoint"),
        "no_default_ckpt": ([str(video)], "no checkpoint given and the shipped one at"),
        "bad_resolution": ([str(video), "--ckpt", str(ckpt), "--resolution", "30"], "multiple of the model's patch size 8"),
    }[case]
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "bad.json").write_text((video.with_suffix(".json")).read_text())
    (tmp_path / "junk.pt").write_bytes(b"junk")
    monkeypatch.setattr(cli_module, "DEFAULT_CKPT", tmp_path / "missing" / "fsm-small.pt")
    started = []
    monkeypatch.setattr(viser, "ViserServer", lambda *a, **k: started.append(1))
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--no-open"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expect in err and err.startswith("fsm-view: error: ") and err.strip().count("\n") == 0  # one line
    assert not started  # the server never started


def test_fsm_render_headless(files, tmp_path):
    video, ckpt = files
    clip = orbit_clip(n=6, size=48)
    path = CameraPath([Keyframe(clip.c2w[0].double().numpy(), 0.0, 0.9), Keyframe(clip.c2w[5].double().numpy(), 0.5, 0.9)], fps=8, duration=1.0, height=32)
    path.save(tmp_path / "path.json")
    out = tmp_path / "video.mp4"
    render_main([str(video), "--ckpt", str(ckpt), "--path", str(tmp_path / "path.json"), "--out", str(out), "--resolution", "32"])
    with av.open(str(out)) as container:
        n = sum(1 for _ in container.decode(video=0))
    assert n == 8


def test_snap_panel_hides_the_snapped_frustum(viewer, view):
    viewer.step()
    render_panel = view.panels.render
    render_panel.frame.value = 3
    render_panel._snap(type("Event", (), {"client": None})())
    assert view.state.time == pytest.approx(float(viewer.clip.times[3]))
    assert not view.frustums[3].visible and view.frustums[2].visible
    assert "PSNR" in render_panel.psnr.content and render_panel.compare.visible


@pytest.fixture
def viewer_4dgs():
    torch.manual_seed(0)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    app = ViewerApp(fsm.FSM.from_preset("tiny", heads=("lvsm", "4dgs")).eval(), orbit_clip(), server, frames_per_chunk=4)
    yield app
    app.close()
    server.stop()


def test_4dgs_panels_show_splats_and_export_ply(viewer_4dgs, monkeypatch):
    """With a 4DGS checkpoint: the head renders, the browser's splats are the default view and
    get the sliced Gaussians, and "Export PLY" downloads a PLY that reads back as the same Gaussians."""
    from fsm.gaussians import read_ply

    app = viewer_4dgs
    page = HeadlessBrowser(app.server)
    try:
        assert wait_for(lambda: page.client_id in app.views)
        view = app.views[page.client_id]
        assert app.heads == ("lvsm", "4dgs") and view.panels.render.splats is not None
        assert view.state.splats and view.panels.render.splats.value  # the default view with that head
        pushed = {}
        monkeypatch.setattr(view.client.scene, "add_gaussian_splats", lambda name, **kw: pushed.update(name=name, **kw))
        while app.step() is not None:
            pass
        c = app.clip
        image = app.render(c.c2w[2], c.fxfycxcy[2], float(c.times[2]), SIZE, SIZE, head="4dgs")
        assert image.shape == (3, SIZE, SIZE) and torch.isfinite(image).all()

        assert view.splats.wait_idle()
        g = view.gaussians()
        assert pushed["name"] == "/splats" and pushed["centers"].shape == (len(g), 3) and len(g) > 0
        np.testing.assert_allclose(pushed["covariances"], g.covariances.numpy(), rtol=1e-6)
        # the server draws nothing while the browser draws the splats
        assert view.render_frame(view.client) is None

        downloads = {}
        monkeypatch.setattr(view.client, "send_file_download", lambda name, data, save_immediately=True: downloads.update({name: data}))
        view.panels.render._export_ply(type("Event", (), {"client": view.client})())
        (name, data), = downloads.items()
        path = Path(tempfile.mkdtemp()) / name
        path.write_bytes(data)
        back = read_ply(path)
        np.testing.assert_allclose(back.means.numpy(), g.means.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back.opacities.numpy(), g.opacities.numpy(), rtol=1e-4, atol=1e-6)
    finally:
        page.close()


def test_default_checkpoint_is_the_shipped_one(files, tmp_path, monkeypatch):
    video, ckpt = files
    model = fsm.load_checkpoint(ckpt)
    model.metadata = {"notice": "shipped"}
    fsm.save_checkpoint(tmp_path / "fsm-small.pt", model, metadata=model.metadata)
    monkeypatch.setattr(cli_module, "DEFAULT_CKPT", tmp_path / "fsm-small.pt")
    loaded, _ = load_inputs(video, None, None, "cpu", None, 32)
    assert loaded.metadata["notice"] == "shipped"

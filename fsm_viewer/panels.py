"""The control panel: three tabs, read top to bottom like the page.

Stream   status line, progress over chunks, Start / Pause / Reset
         "Elastic memory": plain-LaCT switch, importance estimator, anchor policy, lambda
                           (any change resets the memory and streams the clip again)
         "Fast weights":   matrix + layer selectors, anchor drift per layer over chunks, update
                           size per layer, the selected layer's importance as a heatmap with its
                           colour scale, and a per-layer summary of the last chunk
Render   time slider with play / speed, "Camera along clip", head, resolution,
         "Compare with input": snap to input frame N, ground truth next to the render + PSNR,
         "Gaussians (4DGS)" when the checkpoint has that head: show splats, export PLY
Path     add / delete / reorder keyframes, duration / fps / height, "Render video",
         save / load the path as JSON

Every callback goes through `guarded`, so an exception becomes a notification in the browser
that caused it instead of a dead server.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import viser
import viser.uplot

from fsm.lacet import ANCHOR_POLICIES, ESTIMATORS, MATRICES
from fsm_viewer import scene
from fsm_viewer.paths import CameraPath, snap

# Distinct line colours for layers (Tableau 10); deeper models cycle through them.
LAYER_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def guarded(app, fn):
    """Run a GUI callback; report any exception to the browser that triggered it."""

    @functools.wraps(fn)
    def wrapper(event):
        try:
            return fn(event)
        except Exception as e:
            traceback.print_exc()
            app.notify("Error", f"{type(e).__name__}: {e}", client=getattr(event, "client", None))

    return wrapper


def importance_image(importance: torch.Tensor, max_side: int = 128, width: int = 320) -> tuple[np.ndarray, float, float]:
    """A fast-weight matrix's importance (in, out) -> heatmap (h, width, 3) uint8 of log10 F,
    with a colour bar along the bottom; returns (image, lo, hi) in log10 units.

    Importance spans orders of magnitude (it starts at 1e-6), so colour is log10 F, block-averaged
    down to at most `max_side` cells a side, stretched between its min (dark) and max (yellow)."""
    x = torch.log10(importance.detach().float().cpu().clamp_min(1e-30))
    rows, cols = x.shape
    s = min(1.0, max_side / max(rows, cols))
    x = F.adaptive_avg_pool2d(x[None, None], (max(1, round(rows * s)), max(1, round(cols * s))))[0, 0]
    lo, hi = x.min().item(), x.max().item()
    u = (x - lo) / max(hi - lo, 1e-9)
    heat = scene.colormap(u.numpy())  # (r, c, 3)
    h = max(1, round(width * heat.shape[0] / heat.shape[1]))
    heat = F.interpolate(torch.from_numpy(heat).permute(2, 0, 1)[None], size=(min(h, width), width), mode="nearest")[0]
    gap = torch.ones(3, 6, width)
    bar = torch.from_numpy(scene.colormap(np.linspace(0, 1, width))).T[:, None, :].expand(3, 14, width)
    image = torch.cat([heat, gap, bar], dim=1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), lo, hi


# ----------------------------------------------------------------------------------------------
# Stream tab


class StreamPanel:
    def __init__(self, app):
        self.app = app
        gui = app.server.gui
        elastic = app.stream.elastic
        depth = app.num_layers
        self.status = gui.add_markdown("")
        self.progress = gui.add_progress_bar(0.0)
        self.controls = gui.add_button_group("Stream", ("Start", "Pause", "Reset"), hint="Reset: fresh fast weights, back to frame 0")
        actions = {"Start": app.start, "Pause": app.pause, "Reset": app.reset}
        self.controls.on_click(guarded(app, lambda e: actions[e.target.value]()))

        with gui.add_folder("Elastic memory"):  # any change: a fresh memory, streamed again
            self.plain = gui.add_checkbox("Plain LaCT", not elastic.enabled, hint="No elastic consolidation (lambda = 0)")
            self.estimator = gui.add_dropdown("Importance", ESTIMATORS, initial_value=elastic.estimator, hint="si: |dW (W - W*)|, ewc: dW^2, mas: |dW|")
            self.anchor = gui.add_dropdown("Anchor", ANCHOR_POLICIES, initial_value=elastic.anchor, hint="What the weights are pulled back to")
            self.lam = gui.add_slider("Lambda", 0.0, 1.0, 0.05, elastic.lam if elastic.enabled else 0.5, disabled=not elastic.enabled, hint="Strength of the pull toward the anchor")

            def elastic_changed(_):
                self.lam.disabled = self.plain.value
                app.restream(self.elastic_config())

            for handle in (self.plain, self.estimator, self.anchor, self.lam):
                handle.on_update(guarded(app, elastic_changed))

        with gui.add_folder("Fast weights"):
            self.matrix = gui.add_dropdown("Matrix", MATRICES, initial_value="w0", hint="w0, w2: (D, Dh) gate and up; w1: (Dh, D) down")
            self.layer = gui.add_dropdown("Layer", tuple(str(i) for i in range(depth)), initial_value="0")
            for handle in (self.matrix, self.layer):
                handle.on_update(guarded(app, lambda _: self.refresh()))
            x_scale = {"x": viser.uplot.Scale(time=False, auto=True), "y": viser.uplot.Scale(auto=True)}
            series = (viser.uplot.Series(label="chunk"),) + tuple(
                viser.uplot.Series(label=f"L{i}", stroke=LAYER_COLORS[i % len(LAYER_COLORS)], width=2) for i in range(depth)
            )
            empty = tuple(np.zeros(1) for _ in series)  # refresh() below fills them
            self.drift_plot = gui.add_uplot(empty, series, title="Drift from anchor |W - W*| / |W*|", scales=x_scale, aspect=1.6)
            self.update_plot = gui.add_uplot(empty, series, title="Update size |dW| / |W|", scales=x_scale, aspect=1.6)
            self.heatmap = gui.add_image(np.full((8, 8, 3), 255, np.uint8), label="Importance F (log10)")
            self.legend = gui.add_markdown("")
            self.summary = gui.add_markdown("")

        app.on_chunk.append(self.refresh)
        self.refresh()

    def elastic_config(self):
        lam = 0.0 if self.plain.value else float(self.lam.value)
        return dataclasses.replace(self.app.stream.elastic, lam=lam, estimator=self.estimator.value, anchor=self.anchor.value)

    def refresh(self) -> None:
        """Redraw from the app's stream_view; called after every chunk and on a selector change."""
        layer, m = int(self.layer.value), self.matrix.value
        v = self.app.stream_view(layer, m)
        history, N = v.history, v.frames_total

        # status and progress
        if not history:
            self.status.content = f"**Ready.** {N} frames in {v.num_chunks} chunks of {v.frames_per_chunk}. Press Start."
        else:
            last = history[-1]
            rate = sum(r.frames for r in history) / max(sum(r.seconds for r in history), 1e-9)
            state = {"done": "Done.", "streaming": "Streaming...", "paused": "Paused."}[v.status]
            self.status.content = (
                f"**{state}** chunk {last.index + 1}/{v.num_chunks} · {last.frames_total}/{N} frames · "
                f"{rate:.1f} frames/s ({last.frames / max(last.seconds, 1e-9):.1f} last chunk)"
            )
        self.progress.value = 100.0 * v.frames_fed / N

        # curves: one line per layer over chunks. Every curve starts at (0, 0): before the first
        # chunk the fast weights are their anchors. (It also keeps the data non-empty: viser 1.1's
        # uPlot never draws a chart that was created with empty arrays.)
        x = np.array([0] + [r.index + 1 for r in history], dtype=np.float64)
        zero = np.zeros((1, v.drift.shape[1]))
        drift, upd = np.concatenate([zero, v.drift]), np.concatenate([zero, v.update])
        self.drift_plot.data = (x, *drift.T)
        self.update_plot.data = (x, *upd.T)

        # heatmap of the selected layer's importance
        image, lo, hi = importance_image(v.importance)
        self.heatmap.image = image
        rows, cols = v.importance.shape
        self.legend.content = (
            f"Layer {layer}, {m} ({rows} x {cols}: rows = inputs, columns = outputs). "
            f"Colour bar: log10 F from **{lo:.2f}** (purple) to **{hi:.2f}** (yellow)."
        )

        # per-layer summary of the last chunk
        if history:
            lines = ["| layer | F mean | F max | share > mean | drift |", "|---:|---:|---:|---:|---:|"]
            for l, s in enumerate(history[-1].layers):
                lines.append(
                    f"| {l} | {s.importance_mean[m]:.2e} | {s.importance_max[m]:.2e} | "
                    f"{100 * s.importance_frac_above_mean[m]:.0f}% | {s.drift[m]:.3f} |"
                )
            self.summary.content = f"Last chunk, {m}:\n\n" + "\n".join(lines)
        else:
            self.summary.content = ""


# ----------------------------------------------------------------------------------------------
# Render tab


class RenderPanel:
    def __init__(self, app):
        self.app = app
        gui = app.server.gui
        clip, view = app.clip, app.view
        N = len(clip)
        t0, t1 = app.time_span
        step = max((t1 - t0) / max(4 * (N - 1), 1), 1e-3)
        self.time = gui.add_slider("Time (s)", t0, max(t1, t0 + step), step, t0, hint="Clip time the model renders")
        self.time.on_update(guarded(app, lambda e: app.set_time(e.target.value)))
        self.play = gui.add_checkbox("Play", False, hint="Advance time (loops)")  # read by _play_loop
        self.speed = gui.add_slider("Speed", 0.1, 4.0, 0.1, 1.0)
        self.along = gui.add_slider(
            "Camera along clip", 0.0, float(max(N - 1, 1)), 0.1, 0.0,
            hint="Move your view along the clip's smoothed camera path (time stays: bullet time)",
        )
        self.along.on_update(guarded(app, lambda e: app.move_along(self.along.value, app.clients(e))))
        self.head = gui.add_dropdown("Head", app.heads, initial_value=view.head)
        self.head.on_update(guarded(app, lambda _: app.set_head(self.head.value)))
        self.show_inputs = gui.add_checkbox("Input cameras", view.show_inputs, hint="Show the clip's cameras in the scene")
        self.show_inputs.on_update(guarded(app, lambda _: app.show_input_cameras(self.show_inputs.value)))
        self.resolution = gui.add_slider("Resolution", 2 * app.patch, 512, app.patch, view.resolution, hint="Render height in pixels (half while the camera moves)")
        self.resolution.on_update(guarded(app, lambda _: app.set_resolution(self.resolution.value)))

        with gui.add_folder("Compare with input"):
            self.frame = gui.add_slider("Input frame", 0, max(N - 1, 1), 1, 0)
            self.snap = gui.add_button("Snap to input frame", icon=viser.Icon.CAMERA, hint="Camera and time of input frame N")
            self.snap.on_click(guarded(app, self._snap))
            blank = np.full((clip.cameras.height, 2 * clip.cameras.width, 3), 255, np.uint8)
            self.compare = gui.add_image(blank, label="Input frame | model render", visible=False)
            self.psnr = gui.add_markdown("Snap to a frame to compare the model's render with it.")

        self.splats = self.export_ply = None
        if "4dgs" in app.heads:  # only checkpoints with the 4DGS head
            with gui.add_folder("Gaussians (4DGS)"):
                self.splats = gui.add_checkbox("Show splats", False, hint="The 4D Gaussians sliced at the current time")
                self.splats.on_update(guarded(app, lambda _: self.update_splats()))
                self.export_ply = gui.add_button("Export PLY", icon=viser.Icon.DOWNLOAD)
                self.export_ply.on_click(guarded(app, self._export_ply))
            app.on_time.append(lambda _time: self.update_splats())

        self._playing = True
        self._player = threading.Thread(target=self._play_loop, name="play", daemon=True)
        self._player.start()

    def _play_loop(self, dt: float = 0.1) -> None:
        t0, t1 = self.app.time_span
        while self._playing:
            time.sleep(dt)
            if self.play.value and t1 > t0:
                t = self.time.value + dt * self.speed.value
                self.time.value = t0 + (t - t0) % (t1 - t0)  # wrap around: loop the clip
        # (setting .value runs the slider's callbacks, which call app.set_time)

    def _snap(self, event):
        n = int(self.frame.value)
        render, gt, value = self.app.snap_to_frame(n, event.client)
        self.time.value = float(self.app.clip.times[n])  # -> app.set_time
        self.app.show_input_cameras(self.show_inputs.value, except_frame=n)
        gap = np.full((gt.shape[0], max(2, gt.shape[1] // 32), 3), 255, np.uint8)
        self.compare.image = np.concatenate([gt, gap, render], axis=1)
        self.compare.visible = True
        self.psnr.content = f"Frame {n} at t = {self.app.view.time:.3f} s: **PSNR {value:.2f} dB** (render vs. input frame)"

    # 4DGS: app.gaussians() -> means (N,3), covariances (N,3,3), rgb (N,3), opacities (N,) in the
    # clip's world frame, and fsm.gaussians.export_ply.
    def update_splats(self) -> None:
        if self.splats is None:
            return
        if not self.splats.value:
            self.app.server.scene.remove_by_name("/splats")
            return
        g = self.app.gaussians()
        self.app.server.scene.add_gaussian_splats(
            "/splats",
            centers=g.means.cpu().numpy(),
            covariances=g.covariances.cpu().numpy(),
            rgbs=g.rgb.clamp(0, 1).cpu().numpy(),
            opacities=g.opacities.reshape(-1, 1).cpu().numpy(),
        )

    def _export_ply(self, event):
        from fsm.gaussians import export_ply

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"fsm-gaussians-t{self.app.view.time:.3f}.ply"
            export_ply(out, self.app.gaussians())
            target = event.client or self.app.server
            target.send_file_download(out.name, out.read_bytes(), save_immediately=True)

    def close(self) -> None:
        self._playing = False


# ----------------------------------------------------------------------------------------------
# Path tab


class PathPanel:
    def __init__(self, app):
        self.app = app
        gui = app.server.gui
        path = app.path
        self.add = gui.add_button("Add keyframe", icon=viser.Icon.PLUS, hint="Your current view at the current time")
        self.add.on_click(guarded(app, self._add))
        self.keys = gui.add_dropdown("Keyframe", ("(none)",))
        self.delete = gui.add_button("Delete", icon=viser.Icon.TRASH)
        self.delete.on_click(guarded(app, lambda _: self._edit("delete")))
        self.up = gui.add_button("Move earlier", icon=viser.Icon.ARROW_UP)
        self.up.on_click(guarded(app, lambda _: self._edit("up")))
        self.down = gui.add_button("Move later", icon=viser.Icon.ARROW_DOWN)
        self.down.on_click(guarded(app, lambda _: self._edit("down")))
        self.duration = gui.add_number("Duration (s)", path.duration, min=0.1, max=600.0, step=0.1)
        self.fps = gui.add_number("FPS", path.fps, min=1.0, max=120.0, step=1.0)
        self.height = gui.add_slider("Video height", 2 * app.patch, 1024, app.patch, path.height)
        for handle in (self.duration, self.fps, self.height):
            handle.on_update(guarded(app, self._settings_changed))
        self.progress = gui.add_progress_bar(0.0, visible=False)
        self.render = gui.add_button("Render video", icon=viser.Icon.MOVIE, hint="Every frame rendered by the model, saved as mp4")
        self.render.on_click(guarded(app, self._render_video))
        self.save = gui.add_button("Save path (JSON)", icon=viser.Icon.DEVICE_FLOPPY)
        self.save.on_click(guarded(app, self._save))
        self.load = gui.add_upload_button("Load path (JSON)", icon=viser.Icon.UPLOAD, mime_type="application/json")
        self.load.on_upload(guarded(app, self._load))

    def _settings_changed(self, _=None):
        p = self.app.path
        p.duration, p.fps, p.height = float(self.duration.value), float(self.fps.value), int(self.height.value)

    def _add(self, event):
        client = next(iter(self.app.clients(event)), None)
        if client is None:
            raise RuntimeError("no browser connected to take the camera from")
        self.app.add_keyframe(scene.client_c2w(client.camera), client.camera.fov)
        self.refresh(select=len(self.app.path.keyframes) - 1)

    def _selected(self) -> int | None:
        return self.keys.options.index(self.keys.value) if self.app.path.keyframes else None

    def _edit(self, action: str) -> None:
        keys, i = self.app.path.keyframes, self._selected()
        if i is None:
            return
        if action == "delete":
            keys.pop(i)
            j = min(i, len(keys) - 1)
        else:
            j = max(i - 1, 0) if action == "up" else min(i + 1, len(keys) - 1)
            keys[i], keys[j] = keys[j], keys[i]
        self.refresh(select=j)

    def refresh(self, select: int | None = None) -> None:
        """Keyframe list + the preview in the scene: the sampled spline and a frustum per key."""
        app, keys = self.app, self.app.path.keyframes
        labels = tuple(f"{i + 1}: t = {k.time:.2f} s" for i, k in enumerate(keys)) or ("(none)",)
        self.keys.options = labels
        if keys and select is not None:
            self.keys.value = labels[max(0, select)]
        H, W = app.clip.cameras.height, app.clip.cameras.width
        with app.server.atomic():
            app.server.scene.remove_by_name("/path")
            for i, k in enumerate(keys):
                app.server.scene.add_camera_frustum(
                    f"/path/key_{i}", fov=k.fov, aspect=W / H, scale=0.8 * scene.frustum_scale(app.norm),
                    color=(1.0, 0.55, 0.0), thickness=2.5, thickness_units="screen",
                    wxyz=viser.transforms.SO3.from_matrix(k.c2w[:3, :3]).wxyz, position=k.c2w[:3, 3],
                )
            if len(keys) >= 2:
                preview = CameraPath(keys, fps=max(8.0, 24.0 / len(keys)), duration=len(keys))  # ~24 points a segment
                pos = preview.sample()[0][:, :3, 3].numpy()
                segments = np.stack([pos[:-1], pos[1:]], axis=1)  # (M-1, 2, 3)
                app.server.scene.add_line_segments("/path/spline", segments, colors=(255, 140, 0), thickness=3.0, thickness_units="screen")

    def _render_video(self, event):
        app = self.app
        self._settings_changed()
        if not app.path.keyframes:
            raise ValueError("add at least one keyframe first")
        total = app.path.num_frames

        def progress(done, _total):
            self.progress.value = 100.0 * done / _total

        def work():
            self.render.disabled = True
            self.progress.value, self.progress.visible = 0.0, True
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "fsm-path.mp4"
                    app.export_video(out, progress)
                    data = out.read_bytes()
                target = event.client if event.client is not None else app.server
                target.send_file_download("fsm-path.mp4", data, save_immediately=True)
                app.notify("Video ready", f"{total} frames rendered", client=event.client, color="green")
            except Exception as e:  # includes the browser leaving mid-render
                traceback.print_exc()
                app.notify("Video failed", f"{type(e).__name__}: {e}", client=event.client)
            finally:
                self.render.disabled = False
                self.progress.visible = False

        threading.Thread(target=work, name="render-video", daemon=True).start()

    def _save(self, event):
        data = json.dumps(self.app.path.to_dict(), indent=1).encode()
        (event.client or self.app.server).send_file_download("fsm-path.json", data, save_immediately=True)

    def _load(self, event):
        upload = event.target.value
        path = CameraPath.from_dict(json.loads(upload.content.decode()), upload.name)
        self.app.set_path(path)
        self.duration.value, self.fps.value, self.height.value = path.duration, path.fps, snap(path.height, 8)
        self.refresh(select=0)


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Panels:
    stream: StreamPanel
    render: RenderPanel
    path: PathPanel

    def close(self) -> None:
        self.render.close()


def build_panels(app) -> Panels:
    gui = app.server.gui
    gui.configure_theme(control_width="large", show_share_button=False)
    tabs = gui.add_tab_group()
    with tabs.add_tab("Stream", viser.Icon.PLAYER_PLAY):
        stream = StreamPanel(app)
    with tabs.add_tab("Render", viser.Icon.CAMERA):
        render = RenderPanel(app)
    with tabs.add_tab("Path", viser.Icon.ROUTE):
        path = PathPanel(app)
    return Panels(stream, render, path)

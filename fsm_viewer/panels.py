"""The control panel: three tabs, read top to bottom like the page.

Stream   status line, progress over chunks, Start / Pause / Reset
         "Elastic memory": plain-LaCT switch, importance estimator, anchor policy, lambda
                           (any change resets the memory and streams the clip again)
         "Fast weights":   matrix + layer selectors, anchor drift per layer over chunks, update
                           size per layer, the selected layer's importance as a heatmap with its
                           colour scale, and a per-layer summary of the last chunk
Render   time slider with play / speed, "Camera along clip", head, resolution,
         "Compare with input": snap to input frame N, ground truth next to the render + PSNR,
         "Gaussians (4DGS)" when the checkpoint has that head: browser-drawn splats, PLY export
         of the current time or of a time range
Path     add / delete / reorder keyframes, duration / fps / height, "Render video",
         save / load the path as JSON

The Stream tab shows the one shared memory (server-wide widgets, ViewerApp). The Render and
Path tabs are per browser: their widgets belong to that browser (client.gui, nested in the
shared tabs) and act on its BrowserView. Each handler sits beside its widget; every one goes
through `guarded`, so an exception becomes a notification in the browser that caused it
instead of a dead server (a UserError or PathError without a traceback in the log).
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
from viser._messages import FileTransferStartUpload, RemoveNotificationMessage

from fsm.lacet import ANCHOR_POLICIES, ESTIMATORS, MATRICES
from fsm_viewer import scene
from fsm_viewer.paths import CameraPath, PathError
from fsm_viewer.video import snap
from fsm_viewer.splats import ply_sequence_zip
from fsm_viewer.view import UserError

# Distinct line colours for layers (Tableau 10); deeper models cycle through them.
LAYER_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
MAX_POINTS = 256  # per curve: longer histories are binned (each bin shows its maximum)
CHUNK_TICKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)  # integer chunk ticks only


def guarded(app, fn):
    """Run a GUI callback; report any exception to the browser that triggered it. A user error
    (UserError, PathError) is that message only; anything else also logs its traceback."""

    @functools.wraps(fn)
    def wrapper(event):
        try:
            return fn(event)
        except (UserError, PathError) as e:
            app.notify("Cannot do that", str(e), client=getattr(event, "client", None), color="yellow")
        except Exception as e:
            traceback.print_exc()
            app.notify("Error", f"{type(e).__name__}: {e}", client=getattr(event, "client", None))

    return wrapper


def importance_image(importance: torch.Tensor, max_side: int = 128, width: int = 320) -> tuple[np.ndarray, float, float]:
    """A fast-weight matrix's importance (in, out) -> heatmap (h, width, 3) uint8 of log10 F,
    with a colour bar along the bottom; returns (image, lo, hi) in log10 units.

    Importance spans orders of magnitude (it starts at 1e-6) and concentrates in few entries,
    so the matrix is max-pooled (not averaged) down to at most `max_side` cells a side: a cell
    shows the largest F in its block, and `hi` is the matrix's true maximum, the same number as
    the table's "F max". Colour is log10 F between the cells' min (dark) and max (yellow). The
    heatmap keeps the matrix's aspect (rows = inputs down, columns = outputs across), centred on
    a white strip `width` wide."""
    x = importance.detach().float().cpu().clamp_min(1e-30)
    rows, cols = x.shape
    s = min(1.0, max_side / max(rows, cols))
    x = F.adaptive_max_pool2d(x[None, None], (max(1, round(rows * s)), max(1, round(cols * s))))[0, 0]
    x = torch.log10(x)
    lo, hi = x.min().item(), x.max().item()
    u = (x - lo) / max(hi - lo, 1e-9)
    heat = torch.from_numpy(scene.colormap(u.numpy())).permute(2, 0, 1)  # (3, r, c)
    h, w = (width, max(1, round(width * cols / rows))) if rows > cols else (max(1, round(width * rows / cols)), width)
    heat = F.interpolate(heat[None], size=(h, w), mode="nearest")[0]
    pad = width - w
    heat = F.pad(heat, (pad // 2, pad - pad // 2), value=1.0)  # white either side of a tall matrix
    gap = torch.ones(3, 6, width)
    bar = torch.from_numpy(scene.colormap(np.linspace(0, 1, width))).T[:, None, :].expand(3, 14, width)
    image = torch.cat([heat, gap, bar], dim=1)
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), lo, hi


def decimate(x: np.ndarray, ys: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """x (n,), ys (n, k) -> at most max_points rows: consecutive rows binned, each bin drawn at
    its last x with the maximum of each curve in it (a spike in a long history stays visible)."""
    n = len(x)
    if n <= max_points:
        return x, ys
    edges = np.linspace(0, n, max_points + 1).round().astype(int)
    return x[edges[1:] - 1], np.maximum.reduceat(ys, edges[:-1], axis=0)


# ----------------------------------------------------------------------------------------------
# Stream tab (shared: the one memory)


def _chart(gui, title: str, y_label: str, depth: int):
    """A uPlot line chart over chunks, one line per layer; hidden until the first chunk."""
    series = (viser.uplot.Series(label="chunk"),) + tuple(
        viser.uplot.Series(label=f"L{i}", stroke=LAYER_COLORS[i % len(LAYER_COLORS)], width=2) for i in range(depth)
    )
    return gui.add_uplot(
        tuple(np.zeros(1) for _ in series), series, title=title, aspect=1.25, visible=False,
        scales={"x": viser.uplot.Scale(time=False, auto=True), "y": viser.uplot.Scale(auto=True)},
        axes=(viser.uplot.Axis(label="chunk", incrs=CHUNK_TICKS), viser.uplot.Axis(label=y_label)),
        legend=viser.uplot.Legend(live=False),  # the labels carry the last values (below)
    )  # fmt: skip


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
            # The slider shows the lambda in effect: 0 while Plain LaCT is ticked (the last chosen
            # value comes back when it is unticked).
            self._lam_chosen = elastic.lam if elastic.enabled else 0.5
            self.lam = gui.add_slider("Lambda", 0.0, 1.0, 0.05, elastic.lam if elastic.enabled else 0.0, disabled=not elastic.enabled, hint="Strength of the pull toward the anchor")
            self._syncing = False

            def elastic_changed(event):
                if self._syncing:  # our own write to the slider below
                    return
                if event.target is self.plain:
                    self._syncing = True
                    try:
                        self.lam.value = 0.0 if self.plain.value else self._lam_chosen
                    finally:
                        self._syncing = False
                    self.lam.disabled = self.plain.value
                elif event.target is self.lam:
                    self._lam_chosen = float(self.lam.value)
                app.restream(self.elastic_config())

            for handle in (self.plain, self.estimator, self.anchor, self.lam):
                handle.on_update(guarded(app, elastic_changed))

        with gui.add_folder("Fast weights"):
            self.matrix = gui.add_dropdown("Matrix", MATRICES, initial_value="w0", hint="w0, w2: (D, Dh) gate and up; w1: (Dh, D) down")
            self.layer = gui.add_dropdown("Layer", tuple(str(i) for i in range(depth)), initial_value="0")
            for handle in (self.matrix, self.layer):
                handle.on_update(guarded(app, lambda _: self.refresh()))
            self.empty_note = gui.add_markdown("*The plots appear after the first chunk.*")
            self.drift_plot = _chart(gui, "Drift from anchor |W - W*| / |W*|", "drift", depth)
            self.update_plot = _chart(gui, "Update size |dW| / |W|", "update size", depth)
            self.heatmap = gui.add_image(np.full((8, 8, 3), 255, np.uint8), label="Importance F (log10)", visible=False)
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
        for handle in (self.drift_plot, self.update_plot, self.heatmap):
            handle.visible = bool(history)
        self.empty_note.visible = not history
        if not history:
            self.legend.content = self.summary.content = ""
            return

        # curves: one line per layer over chunks. Every curve starts at (0, 0): before the first
        # chunk the fast weights are their anchors. Long histories are binned to MAX_POINTS.
        x = np.arange(len(history) + 1, dtype=np.float64)
        zero = np.zeros((1, v.drift.shape[1]))
        for plot, values in ((self.drift_plot, v.drift), (self.update_plot, v.update)):
            xs, ys = decimate(x, np.concatenate([zero, values]))
            plot.data = (xs, *ys.T)
            # legend values without hovering: the last chunk's value in each label
            plot.series = (plot.series[0],) + tuple(
                {**s, "label": f"L{i} {values[-1, i]:.3g}"} for i, s in enumerate(plot.series[1:])  # Series: TypedDicts
            )

        # heatmap of the selected layer's importance
        image, lo, hi = importance_image(v.importance)
        self.heatmap.image = image
        rows, cols = v.importance.shape
        self.legend.content = (
            f"Layer {layer}, {m} ({rows} x {cols}: rows = inputs, columns = outputs; "
            f"each cell the largest F of its block). Colour: F from **{10**lo:.1e}** (purple) to **{10**hi:.1e}** (yellow)."
        )

        # per-layer summary of the last chunk
        lines = ["| layer | F mean | F max | share > mean | drift |", "|---:|---:|---:|---:|---:|"]
        for l, st in enumerate(history[-1].layers):
            lines.append(
                f"| {l} | {st.importance_mean[m]:.2e} | {st.importance_max[m]:.2e} | "
                f"{100 * st.importance_frac_above_mean[m]:.0f}% | {st.drift[m]:.3f} |"
            )
        self.summary.content = f"Last chunk, {m}:\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Render tab (per browser)


class RenderPanel:
    def __init__(self, view, gui):
        self.view = view
        app, clip, state = view.app, view.app.clip, view.state
        N = len(clip)
        t0, t1 = app.time_span
        step = max((t1 - t0) / max(4 * (N - 1), 1), 1e-3)
        self.empty_note = gui.add_markdown("**The memory is empty.** Press **Start** in the Stream tab; renders appear after the first chunk.")
        self.time = gui.add_slider("Time (s)", t0, max(t1, t0 + step), step, t0, hint="Clip time the model renders (this browser)")
        self.time.on_update(guarded(app, lambda e: view.set_time(e.target.value)))
        self.play = gui.add_checkbox("Play", False, hint="Advance time (loops)")  # read by _play_loop
        self.speed = gui.add_slider("Speed", 0.1, 4.0, 0.1, 1.0)
        self.along = gui.add_slider(
            "Camera along clip", 0.0, float(max(N - 1, 1)), 0.1, 0.0,
            hint="Move your view along the clip's smoothed camera path (time stays: bullet time)",
        )
        self.along.on_update(guarded(app, lambda _: view.move_along(self.along.value)))
        self.splats = self.export_ply = self.export_seq = None
        if "4dgs" in app.heads:  # only checkpoints with the 4DGS head
            self.splats = gui.add_checkbox("Splats in the browser", state.splats, hint="The 4D Gaussians at the current time, drawn by your browser (camera moves need no server render)")
            self.splats.on_update(guarded(app, lambda _: self._splats_changed()))
        self.head = gui.add_dropdown("Head", app.heads, initial_value=state.head, disabled=state.splats, hint="The server-rendered image's head (also for videos)")
        self.head.on_update(guarded(app, lambda _: view.set_head(self.head.value)))
        self.show_inputs = gui.add_checkbox("Input cameras", state.show_inputs, hint="Show the clip's cameras in the scene")
        self.show_inputs.on_update(guarded(app, lambda _: view.show_input_cameras(self.show_inputs.value)))
        self.resolution = gui.add_slider("Resolution", 2 * app.patch, 512, app.patch, state.resolution, disabled=state.splats, hint="Render height in pixels (half while the camera moves)")
        self.resolution.on_update(guarded(app, lambda _: view.set_resolution(self.resolution.value)))

        with gui.add_folder("Compare with input"):
            self.frame = gui.add_slider("Input frame", 0, max(N - 1, 1), 1, 0)
            self.snap = gui.add_button("Snap to input frame", icon=viser.Icon.CAMERA, hint="Camera and time of input frame N")
            self.snap.on_click(guarded(app, self._snap))
            blank = np.full((clip.cameras.height, 2 * clip.cameras.width, 3), 255, np.uint8)
            self.compare = gui.add_image(blank, label="Input frame | model render", visible=False)
            self.psnr = gui.add_markdown("Snap to a frame to compare the model's render with it.")

        if "4dgs" in app.heads:
            with gui.add_folder("Gaussians (4DGS)"):
                self.export_ply = gui.add_button("Export PLY (current time)", icon=viser.Icon.DOWNLOAD)
                self.export_ply.on_click(guarded(app, self._export_ply))
                self.seq_from = gui.add_number("From (s)", t0, step=step)
                self.seq_to = gui.add_number("To (s)", t1, step=step)
                self.seq_frames = gui.add_number("PLY files", min(N, 24), min=1, max=1000, step=1)
                self.export_seq = gui.add_button("Export PLY sequence (zip)", icon=viser.Icon.FILE_ZIP)
                self.export_seq.on_click(guarded(app, self._export_sequence))

        self._playing = True
        self._player = threading.Thread(target=self._play_loop, name="play", daemon=True)
        self._player.start()

    def memory_changed(self) -> None:
        self.empty_note.visible = self.view.app.empty

    def _splats_changed(self) -> None:
        on = self.splats.value
        self.head.disabled = self.resolution.disabled = on
        self.view.set_splats(on)

    def _play_loop(self, dt: float = 0.1) -> None:
        t0, t1 = self.view.app.time_span
        while self._playing:
            time.sleep(dt)
            if self.play.value and t1 > t0 and self._playing:
                t = self.time.value + dt * self.speed.value
                try:
                    self.time.value = t0 + (t - t0) % (t1 - t0)  # wrap around: loop the clip
                except RuntimeError:  # viser refuses writes to the widgets of a page that left
                    if not self.view.closed:
                        raise
                    return
        # (setting .value runs the slider's callbacks, which call view.set_time)

    def _snap(self, event):
        view = self.view
        n = int(self.frame.value)
        render, gt, value = view.snap_to_frame(n)
        self.time.value = float(view.app.clip.times[n])  # -> view.set_time
        view.show_input_cameras(self.show_inputs.value, except_frame=n)
        gap = np.full((gt.shape[0], max(2, gt.shape[1] // 32), 3), 255, np.uint8)
        self.compare.image = np.concatenate([gt, gap, render], axis=1)
        self.compare.visible = True
        self.psnr.content = f"Frame {n} at t = {view.state.time:.3f} s: **PSNR {value:.2f} dB** ({view.state.head} render vs. input frame)"

    def _export_ply(self, event):
        from fsm.gaussians import export_ply

        g = self.view.gaussians()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"fsm-gaussians-t{self.view.state.time:.3f}.ply"
            export_ply(out, g)
            self.view.client.send_file_download(out.name, out.read_bytes(), save_immediately=True)

    def _export_sequence(self, event):
        view = self.view
        view.app.require_memory("export Gaussians")
        times = np.linspace(float(self.seq_from.value), float(self.seq_to.value), int(self.seq_frames.value))
        data = ply_sequence_zip(view.app.gaussians, times)
        view.client.send_file_download("fsm-gaussians.zip", data, save_immediately=True)

    def close(self) -> None:
        self._playing = False


# ----------------------------------------------------------------------------------------------
# Path tab (per browser)


class PathPanel:
    def __init__(self, view, gui):
        self.view = view
        app, path = view.app, view.path
        self.add = gui.add_button("Add keyframe", icon=viser.Icon.PLUS, hint="Your current view at your current time")
        self.add.on_click(guarded(app, lambda _: self._add()))
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
        # viser's upload button shows its own green "File uploaded successfully." once the bytes
        # arrive, whatever they hold; our answer about the content (loaded, or why not) is to be
        # the only message. viser has no public way to withdraw its notice, so we watch this
        # button's upload starts and remove it by its id ("upload-" + transfer uuid, viser 1.1's
        # client UploadButton.tsx) when we answer. Private viser API: the browser test
        # (test_viewer_browser.py) fails if a viser release changes it.
        self._upload_notice: str | None = None
        app.server._websock_server.register_handler(FileTransferStartUpload, self._upload_started)
        self.exports: list[threading.Thread] = []  # video exports of this page

    def _upload_started(self, client_id, message: FileTransferStartUpload) -> None:
        if client_id == self.view.client.client_id and message.source_component_uuid == self.load._impl.uuid:
            self._upload_notice = "upload-" + message.transfer_uuid

    def _withdraw_upload_notice(self) -> None:
        notice, self._upload_notice = self._upload_notice, None
        if notice is not None:
            self.view.client._websock_connection.queue_message(RemoveNotificationMessage(notice))

    def close(self) -> None:
        try:
            self.view.app.server._websock_server.unregister_handler(FileTransferStartUpload, self._upload_started)
        except ValueError:
            pass  # closed before: the page's disconnect and the app's close both close its view

    def _settings_changed(self, _=None):
        p = self.view.path
        p.duration, p.fps, p.height = float(self.duration.value), float(self.fps.value), int(self.height.value)

    def _add(self):
        self.view.add_keyframe()
        self.refresh(select=len(self.view.path.keyframes) - 1)

    def _selected(self) -> int | None:
        return self.keys.options.index(self.keys.value) if self.view.path.keyframes else None

    def _edit(self, action: str) -> None:
        keys, i = self.view.path.keyframes, self._selected()
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
        """Keyframe list + the preview in this browser's scene: the spline and a frustum per key."""
        view, keys = self.view, self.view.path.keyframes
        labels = tuple(f"{i + 1}: t = {k.time:.2f} s" for i, k in enumerate(keys)) or ("(none)",)
        self.keys.options = labels
        if keys and select is not None:
            self.keys.value = labels[max(0, select)]
        H, W = view.app.clip.cameras.height, view.app.clip.cameras.width
        sc = view.client.scene
        with view.client.atomic():
            sc.remove_by_name("/path")
            for i, k in enumerate(keys):
                sc.add_camera_frustum(
                    f"/path/key_{i}", fov=k.fov, aspect=W / H, scale=0.8 * scene.frustum_scale(view.app.norm),
                    color=(1.0, 0.55, 0.0), thickness=2.5, thickness_units="screen",
                    wxyz=viser.transforms.SO3.from_matrix(k.c2w[:3, :3]).wxyz, position=k.c2w[:3, 3],
                )
            if len(keys) >= 2:
                preview = CameraPath(keys, fps=max(8.0, 24.0 / len(keys)), duration=len(keys))  # ~24 points a segment
                pos = preview.sample()[0][:, :3, 3].numpy()
                segments = np.stack([pos[:-1], pos[1:]], axis=1)  # (M-1, 2, 3)
                sc.add_line_segments("/path/spline", segments, colors=(255, 140, 0), thickness=3.0, thickness_units="screen")

    def _render_video(self, event):
        view = self.view
        self._settings_changed()
        if not view.path.keyframes:
            raise UserError("add at least one keyframe first")
        view.app.require_memory("render a video")
        total = view.path.num_frames

        def progress(done, _total):
            self.progress.value = 100.0 * done / _total

        def work():
            self.render.disabled = True
            self.progress.value, self.progress.visible = 0.0, True
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "fsm-path.mp4"
                    view.export_video(out, progress)
                    data = out.read_bytes()
                view.client.send_file_download("fsm-path.mp4", data, save_immediately=True)
                view.app.notify("Video ready", f"{total} frames rendered", client=view.client, color="green")
            except Exception as e:
                if not view.closed:  # a page that left needs no message (and the log no traceback)
                    traceback.print_exc()
                    view.app.notify("Video failed", f"{type(e).__name__}: {e}", client=view.client)
            finally:
                if not view.closed:
                    self.render.disabled = False
                    self.progress.visible = False

        thread = threading.Thread(target=work, name="render-video", daemon=True)
        self.exports = [t for t in self.exports if t.is_alive()] + [thread]
        thread.start()

    def _save(self, event):
        self.view.path.stream = self.view.app.stream.to_dict()  # fsm-render streams with these
        data = json.dumps(self.view.path.to_dict(), indent=1).encode()
        self.view.client.send_file_download("fsm-path.json", data, save_immediately=True)

    def _load(self, event):
        upload = event.target.value
        self._withdraw_upload_notice()  # our message below (or guarded's error) is the one answer
        try:
            d = json.loads(upload.content.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PathError(f"{upload.name}: not JSON ({e})") from None
        path = CameraPath.from_dict(d, upload.name)
        self.view.set_path(path)
        self.duration.value, self.fps.value, self.height.value = path.duration, path.fps, snap(path.height, 8)
        self.refresh(select=0)
        self.view.app.notify("Path loaded", f"{upload.name}: {len(path.keyframes)} keyframes", client=self.view.client, color="green")


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tabs:
    stream: viser.GuiTabHandle
    render: viser.GuiTabHandle
    path: viser.GuiTabHandle


@dataclasses.dataclass
class Panels:
    """The shared part of the page: the tabs and the Stream panel."""

    tabs: Tabs
    stream: StreamPanel


@dataclasses.dataclass
class ViewPanels:
    """One browser's Render and Path panels."""

    render: RenderPanel
    path: PathPanel

    def close(self) -> None:
        self.render.close()
        self.path.close()


def build_panels(app) -> Panels:
    tabs = app.server.gui.add_tab_group()
    t = Tabs(tabs.add_tab("Stream", viser.Icon.PLAYER_PLAY), tabs.add_tab("Render", viser.Icon.CAMERA), tabs.add_tab("Path", viser.Icon.ROUTE))
    with t.stream:
        stream = StreamPanel(app)
    return Panels(t, stream)


def build_view_panels(view) -> ViewPanels:
    """This browser's own widgets, inside the shared Render and Path tabs."""
    tabs, gui = view.app.panels.tabs, view.client.gui
    with tabs.render:
        render = RenderPanel(view, gui)
    with tabs.path:
        path = PathPanel(view, gui)
    return ViewPanels(render, path)

"""One browser's view of the shared memory.

What is per browser (each page has its own BrowserView): the camera and its render loop, the
time (with Play and Speed), the head, the resolution, which scene helpers are shown (input
cameras, splats), the compare-with-input result, and the keyframe path with its video export.
What is shared (fsm_viewer/app.py, ViewerApp): the model and its memory, i.e. the StreamSession,
Start / Pause / Reset, the elastic settings and the Stream tab's plots of them.

The view's Render and Path controls are that browser's own widgets (client.gui, placed inside
the shared tab group), and its scene helpers live in client.scene, so nothing one person does
there moves another person's page.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import viser

from fsm.gaussians import Gaussians3D
from fsm.raster import EPS_2D
from fsm.metrics import psnr
from fsm_viewer import scene
from fsm_viewer.paths import CameraPath, Keyframe
from fsm_viewer.video import intrinsics_from_fov, render_path_video, snap, to_uint8
from fsm_viewer.render_thread import ClientRenderer
from fsm_viewer.splats import SplatStreamer


class UserError(ValueError):
    """Something the person asked for that cannot be done now: shown as a message, no traceback."""


class PageClosed(RuntimeError):
    """The browser that asked for this work has gone."""


@dataclass
class ViewState:
    """What one browser looks at (its camera is the browser's own)."""

    time: float  # clip time the model renders, seconds
    head: str  # decoding head of the server-rendered image
    resolution: int  # render height; width follows the browser's aspect
    show_inputs: bool = True  # the input frustums and the current (red) one
    hidden_frame: int | None = None  # a snapped input frame, whose frustum would cover the render
    splats: bool = False  # 4DGS: the browser draws the sliced Gaussians (no server render)


class BrowserView:
    def __init__(self, app, client: viser.ClientHandle, build_panels):
        """build_panels(view) -> this page's Render and Path panels (fsm_viewer.panels.build_view_panels)."""
        self.app, self.client = app, client
        clip = app.clip
        self.state = ViewState(
            time=app.time_span[0], head="4dgs" if "4dgs" in app.heads else app.heads[0], resolution=clip.cameras.height,
            splats="4dgs" in app.heads,  # the 4DGS head is the default view where the checkpoint has it
        )  # fmt: skip
        self.path = CameraPath(height=clip.cameras.height, aspect=clip.cameras.width / clip.cameras.height)
        self._closed = False
        self._background = False  # a server render is on the page
        with client.atomic():
            self.frustums = scene.add_input_cameras(client.scene, clip, app.norm)
            self.current = scene.show_current_camera(client.scene, clip, app.norm, 0)
        c2w, fov = scene.overview_camera(clip, app.norm)
        scene.set_client_camera(client, c2w, fov)
        self.renderer = ClientRenderer(client, self.render_frame)
        self.splats = SplatStreamer(client.scene, self._slice, lambda: self.state.time, lambda: self.state.splats,
                                    on_error=lambda msg: app.notify("Splats failed", msg, client=client))  # fmt: skip
        client.camera.on_update(lambda _: self.renderer.camera_moved())
        self.panels = build_panels(self)
        self.memory_changed()

    # -- what the memory and the view say to draw ------------------------------------------------

    def memory_changed(self) -> None:
        """A chunk was ingested or the memory was reset: redraw what depends on it."""
        self.renderer.rerender()
        if "4dgs" in self.app.heads:
            self.splats.request()
        self.panels.render.memory_changed()

    def render_frame(self, client: viser.ClientHandle, scale: float = 1.0) -> np.ndarray | None:
        """The browser's view at its time, (H,W,3) uint8; None when the server draws nothing:
        an empty memory (nothing to render yet) or the browser drawing the splats itself."""
        if self.app.empty or self.state.splats:
            if self._background:
                client.scene.set_background_image(None)
                self._background = False
            return None
        cam = client.camera
        H, W = self.render_size(cam.aspect, scale)
        image = to_uint8(self.app.render(scene.client_c2w(cam), intrinsics_from_fov(cam.fov, H, W), self.state.time, H, W, self.state.head))
        self._background = True
        return image

    def render_size(self, aspect: float, scale: float = 1.0) -> tuple[int, int]:
        """(H, W) for an aspect ratio: height from the resolution setting, both multiples of the patch."""
        h = self.state.resolution * scale
        return snap(h, self.app.patch), snap(h * aspect, self.app.patch)

    def _slice(self, t: float) -> Gaussians3D | None:
        # the browser draws at its own resolution: widen the splats by the rasterizer's dilation
        # in the model's pixels (sqrt(0.3) px), which the browser adds only in its own
        return None if self.app.empty else self.app.gaussians(t, footprint_px=math.sqrt(EPS_2D))

    # -- actions ---------------------------------------------------------------------------------

    def set_time(self, t: float) -> None:
        self.state.time = float(t)
        idx = int(torch.argmin((self.app.clip.times - self.state.time).abs()))
        with self.client.atomic():
            self.current = scene.show_current_camera(self.client.scene, self.app.clip, self.app.norm, idx, visible=self._current_visible())
        self.renderer.rerender()
        if "4dgs" in self.app.heads:
            self.splats.request()

    def set_head(self, head: str) -> None:
        if head not in self.app.heads:
            raise UserError(f"unknown head {head!r}; this model has {self.app.heads}")
        self.state.head = head
        self.renderer.rerender()

    def set_resolution(self, height: int) -> None:
        self.state.resolution = int(height)
        self.renderer.rerender()

    def set_splats(self, on: bool) -> None:
        """Browser-drawn Gaussians (on) or the server's render (off)."""
        self.state.splats = bool(on)
        self.splats.request()
        self.renderer.rerender()

    def _current_visible(self) -> bool:
        return self.state.show_inputs and self.state.hidden_frame is None

    def show_input_cameras(self, visible: bool, except_frame: int | None = None) -> None:
        """Show or hide the input frustums (a snapped view hides its own frustum, which would
        otherwise cover the whole render)."""
        self.state.show_inputs, self.state.hidden_frame = visible, except_frame
        with self.client.atomic():
            for i, handle in self.frustums.items():
                handle.visible = visible and i != except_frame
            self.current.visible = self._current_visible()

    def move_along(self, s: float) -> None:
        """Put the camera on the clip's smoothed trajectory at frame parameter s."""
        c2w, fov = self.app.trajectory_camera(s)
        scene.set_client_camera(self.client, c2w, fov)
        self.renderer.camera_moved()

    def snap_to_frame(self, n: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Camera and time of input frame n. Returns (render, ground truth) as uint8 images at the
        clip's size with the input intrinsics, and the render's PSNR against the frame."""
        c = self.app.clip
        if not 0 <= n < len(c):
            raise UserError(f"frame {n} is outside the clip (0..{len(c) - 1})")
        self.app.require_memory("compare with an input frame")
        scene.set_client_camera(self.client, c.c2w[n], scene.vertical_fov(c.fxfycxcy[n], c.cameras.height))
        image = self.app.render(c.c2w[n], c.fxfycxcy[n], float(c.times[n]), c.cameras.height, c.cameras.width, self.state.head)
        return to_uint8(image), to_uint8(c.frames[n]), float(psnr(image.float(), c.frames[n].float()))

    def add_keyframe(self, c2w=None, fov: float | None = None, time: float | None = None) -> None:
        """A keyframe at this browser's camera (or the given one) and time."""
        if c2w is None:
            c2w, fov = scene.client_c2w(self.client.camera), self.client.camera.fov
        self.path.keyframes.append(Keyframe(np.asarray(c2w, dtype=np.float64), self.state.time if time is None else float(time), float(fov)))

    def set_path(self, path: CameraPath) -> None:
        self.path = path

    def export_video(self, out: str | Path, progress=None) -> int:
        """Render the path with the model frame by frame into an mp4; returns the frame count."""
        if not self.path.keyframes:
            raise UserError("add at least one keyframe first")
        self.app.require_memory("render a video")
        self.path.stream = self.app.stream.to_dict()  # the settings the video was made with
        head = self.state.head

        def render(c2w, K, t, H, W):
            if self.closed:
                raise PageClosed("the page closed during the export")
            return self.app.render(c2w, K, t, H, W, head)

        return render_path_video(render, self.path, out, self.app.patch, progress)

    def gaussians(self) -> Gaussians3D:
        """The 3D Gaussians at this browser's time, clip world frame."""
        self.app.require_memory("export Gaussians")
        return self.app.gaussians(self.state.time)

    @property
    def closed(self) -> bool:
        """The browser left: long work for it (a video export, Play) stops. True once close() ran,
        and already before when viser has dropped the client: viser removes a page's widgets
        before our disconnect handler runs, so a background thread can find the page gone first."""
        return self._closed or self.client.client_id not in self.app.server.get_clients()

    def close(self) -> None:
        """The browser left: stop its threads (render, splats, play; an export ends at its next frame)."""
        self._closed = True
        self.renderer.stop()
        self.splats.stop()
        self.panels.close()

    @property
    def threads(self) -> list[threading.Thread]:
        """Every thread this page owns (they end after close())."""
        return [self.renderer._thread, self.splats._thread, self.panels.render._player, *self.panels.path.exports]

"""fsm-view: stream a posed clip through an FSM model and look at it in the browser.

    fsm-view clip.mp4 --ckpt fsm.pt          # then open the printed URL (it opens by itself)

The page (built in fsm_viewer/panels.py):
  * the 3D scene: the clip's cameras as frustums with their frames, coloured by time; the
    current input camera in red; the model's rendering of the browser's view as the background;
  * "Stream": start / pause / reset feeding the clip chunk by chunk, elastic settings, and
    live plots of what every chunk did to each layer's fast weights (drift from the anchor,
    update size, where the importance concentrates);
  * "Render": the time slider (play / pause / speed), a slider that moves the camera along the
    clip's own smoothed trajectory, head and resolution, "snap to input frame" with its PSNR;
  * "Path": keyframes (camera + time), a spline preview, and "Render video" to an mp4.

ViewerApp owns the model, the clip and the StreamSession (the only way it talks to the model);
one lock serialises every use of the model. The panels see a narrow interface: the view state
(`app.view`, a ViewState), the actions below (start / pause / reset / step / set_time / snap /
add_keyframe / export ...), and `stream_view()` for the plots. It works without a browser,
which is how the tests drive it. The command line is in fsm_viewer/cli.py.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import traceback
import webbrowser
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import viser

from fsm import FSM, ChunkRecord, ElasticConfig, StreamSession
from fsm.cameras import ClipNormalization, interpolate_cameras, look_at, smooth_trajectory
from fsm.gaussians import Gaussians3D
from fsm.io import Clip
from fsm.metrics import psnr
from fsm_viewer import scene
from fsm_viewer.panels import build_panels
from fsm_viewer.paths import CameraPath, Keyframe, intrinsics_from_fov, render_path_video, snap, to_uint8
from fsm_viewer.render_thread import ClientRenderer


@dataclass
class ViewState:
    """What the page shows, shared by every browser (each browser has its own camera)."""

    time: float  # clip time the model renders, seconds
    head: str  # decoding head
    resolution: int  # render height; width follows the browser's aspect
    show_inputs: bool = True  # the input frustums and the current (red) one
    hidden_frame: int | None = None  # a snapped input frame, whose frustum would cover the render


@dataclass
class StreamView:
    """What the Stream tab plots, read from the session in one go (under the lock)."""

    status: str  # "ready" | "streaming" | "paused" | "done"
    frames_fed: int  # clip frames handed to the session
    frames_total: int  # clip length
    num_chunks: int  # chunks in the whole clip
    frames_per_chunk: int
    history: list[ChunkRecord]  # one record per processed chunk
    drift: np.ndarray  # (chunks, layers) |W - W*| / |W*| of the matrix
    update: np.ndarray  # (chunks, layers) |dW| / |W|
    importance: torch.Tensor  # (in, out) F of the layer and matrix


class ViewerApp:
    def __init__(self, model: FSM, clip: Clip, server: viser.ViserServer, frames_per_chunk: int | None = None):
        self.model, self.clip, self.server = model, clip, server
        self.lock = threading.RLock()  # the one lock around the model and the session
        self.clip_norm = ClipNormalization.for_clip(clip.c2w, clip.times)  # clip world -> model frame, once
        self.norm, self.time_span = self.clip_norm.poses, self.clip_norm.time_span
        self.stream = model.stream_config(frames_per_chunk=frames_per_chunk)  # reset(elastic) replaces .elastic
        self.session = self._new_session()
        self.heads, self.num_layers = self.session.heads, self.session.num_layers
        self.patch = model.config.patch
        self.view = ViewState(time=self.time_span[0], head=self.heads[0], resolution=clip.cameras.height)
        self.path = CameraPath(height=clip.cameras.height, aspect=clip.cameras.width / clip.cameras.height)
        # streaming state
        self.next_frame = 0  # clip frames handed to the session so far
        self._run = threading.Event()  # set while streaming should proceed
        self._alive = True
        self.renderers: dict[int, ClientRenderer] = {}
        self.on_chunk: list = []  # callbacks() after every chunk and after a reset
        self.on_time: list = []  # callbacks(time) when the time moves
        self.last_record: ChunkRecord | None = None

        # the scene, in the clip's world frame
        server.scene.set_up_direction(tuple(scene.up_direction(self.norm)))
        with server.atomic():
            self.frustums = scene.add_input_cameras(server, clip, self.norm)
            self.current = scene.show_current_camera(server, clip, self.norm, 0)
        notice = model.metadata.get("notice")
        if notice:  # e.g. a preview checkpoint saying how little it was trained
            server.gui.add_markdown(f"**Model:** {notice}")
        self.panels = build_panels(self)
        server.on_client_connect(self._client_connected)
        server.on_client_disconnect(self._client_disconnected)
        self._stream_thread = threading.Thread(target=self._stream_loop, name="stream", daemon=True)
        self._stream_thread.start()

    # -- streaming -----------------------------------------------------------------------------

    def _new_session(self) -> StreamSession:
        return StreamSession(self.model, self.clip_norm, self.stream)

    @property
    def num_chunks(self) -> int:
        return math.ceil(len(self.clip) / self.stream.frames_per_chunk)

    @property
    def done(self) -> bool:
        return self.next_frame >= len(self.clip)

    def start(self) -> None:
        self._run.set()

    def pause(self) -> None:
        self._run.clear()

    @property
    def running(self) -> bool:
        return self._run.is_set() and not self.done

    def reset(self, elastic: ElasticConfig | None = None) -> None:
        """A fresh memory (optionally with new elastic settings); streaming starts again from frame 0."""
        with self.lock:
            if elastic is not None:
                self.stream = dataclasses.replace(self.stream, elastic=elastic)
            self.session = self._new_session()
            self.next_frame = 0
            self.last_record = None
        self._chunk_done()

    def restream(self, elastic: ElasticConfig) -> None:
        """New elastic settings: a fresh memory, and stream the clip again."""
        self.reset(elastic)
        self.start()

    def step(self) -> ChunkRecord | None:
        """Feed the next chunk of the clip (the last one may be short). None when the clip is done."""
        with self.lock:
            if self.done:
                return None
            a, b = self.next_frame, min(self.next_frame + self.stream.frames_per_chunk, len(self.clip))
            c = self.clip
            records = self.session.feed(c.frames[a:b], c.c2w[a:b], c.fxfycxcy[a:b], c.times[a:b])
            if b == len(c) and self.session.pending_frames:
                records.append(self.session.flush())
            self.next_frame = b
            record = records[-1] if records else None
            self.last_record = record
        if record is not None:
            self._chunk_done()
        return record

    def _chunk_done(self) -> None:
        for callback in self.on_chunk:
            callback()
        self.rerender_all()

    def _stream_loop(self) -> None:
        """Background feeder: one chunk at a time while running, so the page stays live."""
        while self._alive:
            if not self._run.wait(timeout=0.5):
                continue
            try:
                if self.step() is None or self.done:
                    self._run.clear()
                    self._chunk_done()  # let the panel show "done"
            except Exception as e:
                self._run.clear()
                traceback.print_exc()
                self.notify("Streaming stopped", f"{type(e).__name__}: {e}")

    def stream_view(self, layer: int, matrix: str) -> StreamView:
        """Everything the Stream tab draws, for one layer's importance and one matrix's curves."""
        with self.lock:
            s = self.session
            history = list(s.history)
            status = "done" if self.done else "streaming" if self.running else "paused" if history else "ready"
            return StreamView(
                status=status, frames_fed=self.next_frame, frames_total=len(self.clip), num_chunks=self.num_chunks,
                frames_per_chunk=self.stream.frames_per_chunk, history=history,
                drift=s.chunk_stats("drift", matrix).numpy(), update=s.chunk_stats("update_norm", matrix).numpy(),
                importance=s.importance(layer, matrix),
            )  # fmt: skip

    # -- rendering -----------------------------------------------------------------------------

    def render(self, c2w: torch.Tensor, fxfycxcy: torch.Tensor, time: float, height: int, width: int, head: str | None = None) -> torch.Tensor:
        """(3,H,W) in [0,1]: the memory as it is now, seen from a clip-world camera at a clip time."""
        with self.lock:
            return self.session.render(c2w, fxfycxcy, time, height, width, head=head or self.view.head).float().cpu()

    def render_size(self, aspect: float, scale: float = 1.0) -> tuple[int, int]:
        """(H, W) for an aspect ratio: height from the resolution setting, both multiples of the patch."""
        h = self.view.resolution * scale
        return snap(h, self.patch), snap(h * aspect, self.patch)

    def render_client(self, client: viser.ClientHandle, scale: float = 1.0) -> np.ndarray:
        """The browser's current view at the current time, (H,W,3) uint8."""
        cam = client.camera
        H, W = self.render_size(cam.aspect, scale)
        image = self.render(scene.client_c2w(cam), intrinsics_from_fov(cam.fov, H, W), self.view.time, H, W)
        return to_uint8(image)

    def rerender_all(self) -> None:
        for r in list(self.renderers.values()):
            r.rerender()

    def set_time(self, t: float) -> None:
        self.view.time = float(t)
        idx = int(torch.argmin((self.clip.times - self.view.time).abs()))
        with self.server.atomic():
            self.current = scene.show_current_camera(self.server, self.clip, self.norm, idx)
        for callback in self.on_time:
            callback(self.view.time)
        self.rerender_all()

    def set_head(self, head: str) -> None:
        if head not in self.heads:
            raise ValueError(f"unknown head {head!r}; this model has {self.heads}")
        self.view.head = head
        self.rerender_all()

    def set_resolution(self, height: int) -> None:
        self.view.resolution = int(height)
        self.rerender_all()

    def trajectory_camera(self, s: float) -> tuple[torch.Tensor, float]:
        """Pose on the clip's smoothed camera trajectory at frame parameter s in [0, N-1], and its fov."""
        smooth = smooth_trajectory(self.clip.c2w.double())
        c2w = interpolate_cameras(smooth, torch.tensor([float(s)], dtype=torch.float64))[0].float()
        i = min(int(round(s)), len(self.clip) - 1)
        return c2w, scene.vertical_fov(self.clip.fxfycxcy[i], self.clip.cameras.height)

    def move_along(self, s: float, clients: list[viser.ClientHandle]) -> None:
        """Put these browsers' cameras on the clip's smoothed trajectory at frame parameter s."""
        c2w, fov = self.trajectory_camera(s)
        for client in clients:
            scene.set_client_camera(client, c2w, fov)
            renderer = self.renderers.get(client.client_id)
            if renderer is not None:
                renderer.camera_moved()

    def show_input_cameras(self, visible: bool, except_frame: int | None = None) -> None:
        """Show or hide the input frustums (a snapped view hides its own frustum, which would
        otherwise cover the whole render)."""
        self.view.show_inputs, self.view.hidden_frame = visible, except_frame
        with self.server.atomic():
            for i, handle in self.frustums.items():
                handle.visible = visible and i != except_frame
            self.current.visible = visible and except_frame is None

    def snap_to_frame(self, n: int, client: viser.ClientHandle | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Go to input camera n at frame n's time. Returns (render, ground truth) as uint8 images at
        the clip's size with the input intrinsics, and the render's PSNR against the frame."""
        if not 0 <= n < len(self.clip):
            raise ValueError(f"frame {n} is outside the clip (0..{len(self.clip) - 1})")
        c = self.clip
        if client is not None:
            scene.set_client_camera(client, c.c2w[n], scene.vertical_fov(c.fxfycxcy[n], c.cameras.height))
        image = self.render(c.c2w[n], c.fxfycxcy[n], float(c.times[n]), c.cameras.height, c.cameras.width)
        return to_uint8(image), to_uint8(c.frames[n]), float(psnr(image.float(), c.frames[n].float()))

    # -- paths ---------------------------------------------------------------------------------

    def add_keyframe(self, c2w: torch.Tensor, fov: float, time: float | None = None) -> None:
        self.path.keyframes.append(Keyframe(np.asarray(c2w, dtype=np.float64), self.view.time if time is None else float(time), float(fov)))

    def set_path(self, path: CameraPath) -> None:
        self.path = path

    def export_video(self, out: str | Path, progress=None) -> int:
        """Render the path with the model frame by frame into an mp4; returns the frame count."""
        render = lambda c2w, K, t, H, W: self.render(c2w, K, t, H, W)
        return render_path_video(render, self.path, out, self.patch, progress)

    # -- 4DGS (only offered when the checkpoint has the head) ----------------------------------

    def gaussians(self) -> Gaussians3D:
        """The 3D Gaussians at the current time, clip world frame."""
        with self.lock:
            return self.session.gaussians(self.view.time)

    # -- clients -------------------------------------------------------------------------------

    def _client_connected(self, client: viser.ClientHandle) -> None:
        # Start behind and above the first input camera, looking at a point ahead of it: the
        # frustums show as a trajectory and the render still faces what the clip saw.
        c2w0 = self.clip.c2w[0]
        s, up = self.norm.scale, torch.from_numpy(scene.up_direction(self.norm)).float()
        target = c2w0[:3, 3] + 2.0 * s * c2w0[:3, 2]
        eye = c2w0[:3, 3] - 1.2 * s * c2w0[:3, 2] + 0.8 * s * up
        fov = scene.vertical_fov(self.clip.fxfycxcy[0], self.clip.cameras.height)
        scene.set_client_camera(client, look_at(eye, target, up), fov)
        renderer = ClientRenderer(client, self.render_client)
        self.renderers[client.client_id] = renderer
        client.camera.on_update(lambda _: renderer.camera_moved())
        renderer.rerender()

    def _client_disconnected(self, client: viser.ClientHandle) -> None:
        renderer = self.renderers.pop(client.client_id, None)
        if renderer is not None:
            renderer.stop()

    def clients(self, event=None) -> list[viser.ClientHandle]:
        """The browser behind a GUI event, or every browser when there is none (tests, threads)."""
        client = getattr(event, "client", None)
        return [client] if client is not None else list(self.server.get_clients().values())

    def notify(self, title: str, body: str, client: viser.ClientHandle | None = None, color: str = "red") -> None:
        """A notification on one browser (or all): errors in callbacks end up here, not in a dead server."""
        for c in [client] if client is not None else list(self.server.get_clients().values()):
            try:
                c.add_notification(title, body, color=color, auto_close_seconds=8.0)
            except Exception:
                pass  # that browser is gone

    def close(self) -> None:
        self._alive = False
        self._run.clear()
        self.panels.close()
        for r in self.renderers.values():
            r.stop()


def serve(model: FSM, clip: Clip, args) -> None:
    """fsm-view after the inputs loaded (fsm_viewer.cli.main): the server, the app, the URL, wait."""
    server = viser.ViserServer(host=args.host, port=args.port)
    app = ViewerApp(model, clip, server, args.frames_per_chunk)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{server.get_port()}/"
    print(f"fsm-view: {len(clip)} frames from {args.clip}, {model.config.preset} model on {next(model.parameters()).device}; open {url}")
    if model.metadata.get("notice"):
        print(f"fsm-view: note: {model.metadata['notice']}")
    if not args.no_open:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        app.close()
        server.stop()

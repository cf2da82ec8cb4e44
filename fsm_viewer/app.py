"""fsm-view: stream a posed clip through an FSM model and look at it in the browser.

    fsm-view clip.mp4 --ckpt fsm.pt          # then open the printed URL (it opens by itself)

The page (built in fsm_viewer/panels.py):
  * the 3D scene: the clip's cameras as frustums with their frames, coloured by time; the
    current input camera in red; the model's rendering of the browser's view as the background,
    or with the 4DGS head the Gaussians at the current time drawn by the browser itself;
  * "Stream": start / pause / reset feeding the clip chunk by chunk, elastic settings, and
    live plots of what every chunk did to each layer's fast weights (drift from the anchor,
    update size, where the importance concentrates);
  * "Render": the time slider (play / pause / speed), a slider that moves the camera along the
    clip's own smoothed trajectory, head and resolution, "snap to input frame" with its PSNR;
  * "Path": keyframes (camera + time), a spline preview, and "Render video" to an mp4.

ViewerApp owns what every browser shares: the model, the clip and the StreamSession (the only
way it talks to the model; one lock serialises every use of it), streaming and the Stream tab.
Each browser gets a BrowserView (fsm_viewer/view.py) with its own camera, time, settings and
path. The panels see a narrow interface: ViewState and the actions of BrowserView, and
ViewerApp's start / pause / reset / restream / stream_view. Streaming and rendering work
without a browser, which is how the tests drive them. The command line is fsm_viewer/cli.py.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import traceback
import webbrowser
from dataclasses import dataclass

import numpy as np
import torch
import viser

from fsm import FSM, ChunkRecord, ElasticConfig, StreamSession
from fsm.cameras import ClipNormalization, interpolate_cameras, smooth_trajectory
from fsm.gaussians import Gaussians3D
from fsm.io import Clip
from fsm_viewer import scene
from fsm_viewer.panels import build_panels, build_view_panels
from fsm_viewer.view import BrowserView, UserError


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
        # streaming state
        self.next_frame = 0  # clip frames handed to the session so far
        self._run = threading.Event()  # set while streaming should proceed
        self._alive = True
        self.views: dict[int, BrowserView] = {}  # one per connected browser
        self._views_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.on_chunk: list = []  # callbacks() after every chunk and after a reset
        self.last_record: ChunkRecord | None = None

        server.scene.set_up_direction(tuple(scene.up_direction(self.norm)))
        gui = server.gui
        gui.configure_theme(control_width="large", show_share_button=False)
        notice = model.metadata.get("notice")
        if notice:  # e.g. a preview checkpoint saying how little it was trained
            gui.add_markdown(f"**Model:** {notice}")
        self.memory_line = gui.add_markdown("")  # what the memory holds, and what to do
        self.panels = build_panels(self)
        self.on_chunk.append(self._show_memory_state)
        self._show_memory_state()
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

    @property
    def empty(self) -> bool:
        """No chunk ingested yet: the memory holds nothing to render."""
        return not self.session.history

    def require_memory(self, action: str) -> None:
        if self.empty:
            raise UserError(f"The memory is empty: press Start (Stream tab) and let at least one chunk stream in before you {action}.")

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
        for view in self.browser_views():
            view.memory_changed()

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

    def _show_memory_state(self) -> None:
        if self.empty:
            self.memory_line.content = ("**Memory: empty.** Nothing to render yet — press **Start** in the Stream tab "
                                        "to stream the clip into the model.")  # fmt: skip
        else:
            r = self.session.history[-1]
            state = "streaming" if self.running else "complete" if self.done else "paused"
            self.memory_line.content = f"**Memory:** {r.frames_total}/{len(self.clip)} frames in {r.index + 1} chunks ({state})."

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

    # -- the memory, seen from any camera --------------------------------------------------------

    def render(self, c2w: torch.Tensor, fxfycxcy: torch.Tensor, time: float, height: int, width: int, head: str | None = None) -> torch.Tensor:
        """(3,H,W) in [0,1]: the memory as it is now, seen from a clip-world camera at a clip time."""
        with self.lock:
            return self.session.render(c2w, fxfycxcy, time, height, width, head=head or self.heads[0]).float().cpu()

    def gaussians(self, time: float, footprint_px: float = 0.0) -> Gaussians3D:
        """4DGS head: the 3D Gaussians at a clip time, clip world frame (footprint_px: see
        StreamSession.gaussians; the browser's splats use it, exports do not)."""
        with self.lock:
            return self.session.gaussians(time, footprint_px=footprint_px)

    def trajectory_camera(self, s: float) -> tuple[torch.Tensor, float]:
        """Pose on the clip's smoothed camera trajectory at frame parameter s in [0, N-1], and its fov."""
        smooth = smooth_trajectory(self.clip.c2w.double())
        c2w = interpolate_cameras(smooth, torch.tensor([float(s)], dtype=torch.float64))[0].float()
        i = min(int(round(s)), len(self.clip) - 1)
        return c2w, scene.vertical_fov(self.clip.fxfycxcy[i], self.clip.cameras.height)

    # -- browsers --------------------------------------------------------------------------------

    def browser_views(self) -> list[BrowserView]:
        with self._views_lock:
            return list(self.views.values())

    def _client_connected(self, client: viser.ClientHandle) -> None:
        with self._build_lock:  # one page at a time: a tab is a `with` context, not re-entrant across threads
            view = BrowserView(self, client, build_view_panels)
        with self._views_lock:
            self.views[client.client_id] = view

    def _client_disconnected(self, client: viser.ClientHandle) -> None:
        with self._views_lock:
            view = self.views.pop(client.client_id, None)
        if view is not None:
            view.close()

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
        for view in self.browser_views():
            view.close()


def start_server(model: FSM, clip: Clip, args) -> tuple[viser.ViserServer, ViewerApp, str, str]:
    """The server and the app for fsm-view's options; returns them, the URL and the startup line."""
    server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
    app = ViewerApp(model, clip, server, args.frames_per_chunk)
    port = server.get_port()
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{port}/"
    taken = f" (port {args.port} was taken, so {port} is used)" if port != args.port else ""
    line = f"fsm-view: {len(clip)} frames from {args.clip}, {model.config.preset} model on {next(model.parameters()).device}; open {url}{taken}"
    return server, app, url, line


def serve(model: FSM, clip: Clip, args) -> None:
    """fsm-view after the inputs loaded (fsm_viewer.cli.main): the server, the app, the URL, wait."""
    server, app, url, line = start_server(model, clip, args)
    print(line, flush=True)
    if model.metadata.get("notice"):
        print(f"fsm-view: note: {model.metadata['notice']}", flush=True)
    if not args.no_open:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        app.close()
        server.stop()

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
one lock serialises every use of the model. It works without a browser, which is how the
tests drive it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
import traceback
import webbrowser
from pathlib import Path

import numpy as np
import torch
import tyro
import viser

from fsm import FSM, ChunkRecord, ElasticConfig, StreamSession, load_checkpoint
from fsm.cameras import ClipNormalization, interpolate_cameras, look_at, smooth_trajectory
from fsm.checkpoint import CheckpointError
from fsm.precision import DtypeChoice, resolve_dtype
from fsm.io import Clip, ClipError
from fsm.metrics import psnr
from fsm_viewer import scene
from fsm_viewer.panels import build_panels
from fsm_viewer.paths import CameraPath, Keyframe, intrinsics_from_fov, render_path_video, snap, to_uint8
from fsm_viewer.render_thread import ClientRenderer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / "assets" / "sample" / "sample.mp4"
DEFAULT_CKPT = REPO / "assets" / "fsm-small.pt"
# Used when the product checkpoint has not been trained yet; it says what it is (metadata "notice").
PREVIEW_CKPT = REPO / "assets" / "fsm-small-cpu-preview.pt"


class ViewerApp:
    def __init__(self, model: FSM, clip: Clip, server: viser.ViserServer, frames_per_chunk: int | None = None):
        self.model, self.clip, self.server = model, clip, server
        self.device = next(model.parameters()).device
        self.patch = model.config.patch
        self.lock = threading.RLock()  # the one lock around the model and the session
        self.clip_norm = ClipNormalization.for_clip(clip.c2w, clip.times)  # clip world -> model frame, once
        self.norm, self.time_span = self.clip_norm.poses, self.clip_norm.time_span
        self.stream = model.stream_config(frames_per_chunk=frames_per_chunk)  # the elastic panel replaces .elastic
        self.heads = tuple(model.config.heads)
        # render state shared by every browser
        self.time = self.time_span[0]
        self.head = self.heads[0]
        self.resolution = clip.cameras.height  # render height; width follows the browser's aspect
        self.path = CameraPath(height=clip.cameras.height, aspect=clip.cameras.width / clip.cameras.height)
        # streaming state
        self.session = self._new_session()
        self.next_frame = 0  # clip frames handed to the session so far
        self._run = threading.Event()  # set while streaming should proceed
        self._alive = True
        self.renderers: dict[int, ClientRenderer] = {}
        self.on_chunk: list = []  # callbacks(record | None); None after a reset
        self.on_time: list = []  # callbacks(time) when the time slider moves
        self.last_record: ChunkRecord | None = None

        # the scene, in the clip's world frame
        server.scene.set_up_direction(tuple(scene.up_direction(self.norm)))
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
        self._chunk_done(None)

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
            self._chunk_done(record)
        return record

    def _chunk_done(self, record: ChunkRecord | None) -> None:
        for callback in self.on_chunk:
            callback(record)
        self.rerender_all()

    def _stream_loop(self) -> None:
        """Background feeder: one chunk at a time while running, so the page stays live."""
        while self._alive:
            if not self._run.wait(timeout=0.5):
                continue
            try:
                if self.step() is None or self.done:
                    self._run.clear()
                    self._chunk_done(self.last_record)  # let the panel show "done"
            except Exception as e:
                self._run.clear()
                traceback.print_exc()
                self.notify("Streaming stopped", f"{type(e).__name__}: {e}")

    # -- rendering -----------------------------------------------------------------------------

    def render(self, c2w: torch.Tensor, fxfycxcy: torch.Tensor, time: float, height: int, width: int, head: str | None = None) -> torch.Tensor:
        """(3,H,W) in [0,1]: the memory as it is now, seen from a clip-world camera at a clip time."""
        with self.lock:
            return self.session.render(c2w, fxfycxcy, time, height, width, head=head or self.head).float().cpu()

    def render_size(self, aspect: float, scale: float = 1.0) -> tuple[int, int]:
        """(H, W) for an aspect ratio: height from the resolution setting, both multiples of the patch."""
        h = self.resolution * scale
        return snap(h, self.patch), snap(h * aspect, self.patch)

    def render_client(self, client: viser.ClientHandle, scale: float = 1.0) -> np.ndarray:
        """The browser's current view at the current time, (H,W,3) uint8."""
        cam = client.camera
        H, W = self.render_size(cam.aspect, scale)
        image = self.render(scene.client_c2w(cam), intrinsics_from_fov(cam.fov, H, W), self.time, H, W)
        return to_uint8(image)

    def rerender_all(self) -> None:
        for r in list(self.renderers.values()):
            r.rerender()

    def set_time(self, t: float) -> None:
        self.time = float(t)
        idx = int(torch.argmin((self.clip.times - self.time).abs()))
        self.current = scene.show_current_camera(self.server, self.clip, self.norm, idx)
        for callback in self.on_time:
            callback(self.time)
        self.rerender_all()

    def trajectory_camera(self, s: float) -> tuple[torch.Tensor, float]:
        """Pose on the clip's smoothed camera trajectory at frame parameter s in [0, N-1], and its fov."""
        smooth = smooth_trajectory(self.clip.c2w.double())
        c2w = interpolate_cameras(smooth, torch.tensor([float(s)], dtype=torch.float64))[0].float()
        i = min(int(round(s)), len(self.clip) - 1)
        return c2w, scene.vertical_fov(self.clip.fxfycxcy[i], self.clip.cameras.height)

    def show_input_cameras(self, visible: bool, except_frame: int | None = None) -> None:
        """Show or hide the input frustums (a snapped view hides its own frustum, which would
        otherwise cover the whole render)."""
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
        self.path.keyframes.append(Keyframe(np.asarray(c2w, dtype=np.float64), self.time if time is None else float(time), float(fov)))

    def export_video(self, out: str | Path, progress=None) -> int:
        """Render the path with the model frame by frame into an mp4; returns the frame count."""
        render = lambda c2w, K, t, H, W: self.render(c2w, K, t, H, W)
        return render_path_video(render, self.path, out, self.patch, progress)

    # -- 4DGS (only offered when the checkpoint has the head) ----------------------------------

    def gaussians(self):
        with self.lock:
            return self.session.gaussians(self.time)

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


# ----------------------------------------------------------------------------------------------
# Command line


@dataclasses.dataclass
class ClipArgs:
    """The clip and model options shared by fsm-view and fsm-render."""

    clip: tyro.conf.Positional[Path] = DEFAULT_CLIP
    """Video, image folder, or camera file (cameras next to a video/folder are found by name).
    Default: the shipped sample clip."""
    ckpt: Path | None = None
    """Model checkpoint (.pt). Default: the shipped assets/fsm-small.pt (or the CPU preview)."""
    cameras: Path | None = None
    """Camera file to use instead of the one found next to the clip."""
    device: str = "auto"
    """torch device; "auto" = CUDA if present, else CPU."""
    dtype: DtypeChoice = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""
    frames_per_chunk: int | None = None
    """Frames per fast-weight update (default: the checkpoint's setting)."""
    max_frames: int | None = None
    """Read at most this many frames of the clip."""
    resolution: int = 128
    """Model input size: the frames' short side; the long side keeps the clip's aspect (a multiple
    of the patch, so a few pixels may be cropped from its ends)."""
    no_sfm: tyro.conf.FlagCreatePairsOff[bool] = False
    """With no camera file next to the clip, refuse instead of estimating cameras by structure
    from motion (COLMAP; written next to the clip and reused)."""


@dataclasses.dataclass
class Args(ClipArgs):
    """Stream a posed clip through an FSM model and explore it in the browser."""

    host: str = "127.0.0.1"
    """Address to serve on (0.0.0.0 to allow other machines)."""
    port: int = 8080
    """Port to serve on; the next free one is used if it is busy."""
    no_open: tyro.conf.FlagCreatePairsOff[bool] = False
    """Do not open the default browser."""


def fail(message: str) -> None:
    print(f"fsm-view: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_inputs(clip: Path, ckpt: Path | None, cameras: Path | None, device: str, max_frames: int | None, resolution: int,
                sfm: bool = True, dtype: str = "auto") -> tuple[FSM, Clip]:
    """Checkpoint and clip, or exit with code 2 and one clear message (before any server starts)."""
    from fsm.io import load_clip

    if ckpt is None:
        ckpt = next((c for c in (DEFAULT_CKPT, PREVIEW_CKPT) if c.is_file()), None)
        if ckpt is None:
            fail(
                f"no checkpoint given and the shipped one at {DEFAULT_CKPT} is missing; "
                "train one with `python train/pretrain.py` or pass --ckpt PATH"
            )
    try:
        model = load_checkpoint(ckpt, device=resolve_device(device))
        model.compute_dtype = resolve_dtype(dtype, next(model.parameters()).device)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    p = model.config.patch
    if resolution < p or resolution % p:
        fail(f"--resolution {resolution} must be a positive multiple of the model's patch size {p}")
    try:
        loaded = load_clip(clip, cameras=cameras, max_frames=max_frames, size=resolution, multiple=p, sfm=sfm)
    except (ClipError, ValueError) as e:
        fail(getattr(e, "cli", str(e)))
    if len(loaded) == 0:
        fail(f"{clip}: the clip has no frames")
    return model, loaded


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    model, clip = load_inputs(args.clip, args.ckpt, args.cameras, args.device, args.max_frames, args.resolution, not args.no_sfm, args.dtype)
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


if __name__ == "__main__":
    main()

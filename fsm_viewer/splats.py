"""4D Gaussians drawn by the browser: slice at a time, prune, push to viser's Gaussian-splat node.

With the 4DGS head a camera move needs nothing from the server: the browser rasterizes the 3D
Gaussians it holds at its own frame rate. Only a change of time (or of the memory) needs a new
set: session.gaussians(time) slices the 4D Gaussians at that time and prunes them (temporal
marginal, opacity), and the result replaces the browser's "/splats" node.

Time changes come faster than a slice + push takes (Play ticks every 0.1 s, a dragged slider
sends many values), so pushes are coalesced: request() only marks "the time changed" and wakes
one thread per browser, which slices at whatever the time is when it gets there. The latest
time wins; intermediate times are skipped, never queued.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
import traceback
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import viser

from fsm.gaussians import Gaussians3D, export_ply

# viser's splat buffer per Gaussian: centre 3 x f32, 4 reserved bytes, covariance upper
# triangle 6 x f16, RGBA 4 x u8 (viser/_scene_api.py add_gaussian_splats).
BYTES_PER_GAUSSIAN = 32
NODE = "/splats"


@dataclass
class Push:
    time: float  # clip time of the slice, seconds
    gaussians: int  # Gaussians sent
    bytes: int  # their size on the wire
    ms: float  # from the latest time change to the push handed to viser


def push_gaussians(scene: viser.SceneApi, g: Gaussians3D) -> None:
    """Replace the scene's splat node with these 3D Gaussians (clip world frame)."""
    scene.add_gaussian_splats(
        NODE,
        centers=g.means.cpu().numpy(),
        covariances=g.covariances.cpu().numpy(),
        rgbs=g.rgb.clamp(0, 1).cpu().numpy(),
        opacities=g.opacities.reshape(-1, 1).cpu().numpy(),
    )


class SplatStreamer:
    """One browser's splats: coalesced slice-and-push in a thread of its own.

    slice_at(time) -> Gaussians3D, or None when there is nothing to show (an empty memory);
    time_now() -> the browser's current time; enabled() -> whether splats are on."""

    def __init__(self, scene: viser.SceneApi, slice_at: Callable[[float], Gaussians3D | None], time_now: Callable[[], float],
                 enabled: Callable[[], bool], on_error: Callable[[str], None] | None = None):  # fmt: skip
        self.scene, self.slice_at, self.time_now, self.enabled, self.on_error = scene, slice_at, time_now, enabled, on_error
        self.pushes: deque[Push] = deque(maxlen=256)  # the latest pushes, for the bench and tests
        self.requests = 0
        self._requested_at: float | None = None  # monotonic time of the latest unserved request
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._alive = True
        self._shown = False
        self._thread = threading.Thread(target=self._loop, name="splats", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """The time, the memory or the switch changed: (re)push when the thread gets to it."""
        with self._lock:
            self._requested_at = time.monotonic()
            self.requests += 1
            self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until every request so far has been served (tests, bench)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._alive = False
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while self._alive:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                requested_at, self._requested_at = self._requested_at, None
            if requested_at is None or not self._alive:
                continue
            try:
                self._serve(requested_at)
            except Exception as e:  # a failed push must not kill the thread
                if self._alive:
                    traceback.print_exc()
                    if self.on_error is not None:
                        self.on_error(f"{type(e).__name__}: {e}")
            with self._lock:
                if self._requested_at is None:
                    self._idle.set()

    def _serve(self, requested_at: float) -> None:
        t = self.time_now()
        g = self.slice_at(t) if self.enabled() else None
        if g is None:
            if self._shown:
                self.scene.remove_by_name(NODE)
                self._shown = False
            return
        push_gaussians(self.scene, g)
        self._shown = True
        self.pushes.append(Push(t, len(g), BYTES_PER_GAUSSIAN * len(g), 1000 * (time.monotonic() - requested_at)))


# ----------------------------------------------------------------------------------------------
# Export


def export_ply_sequence(slice_at: Callable[[float], Gaussians3D], times, folder: str | Path, stem: str = "fsm-gaussians") -> list[Path]:
    """One PLY per time, numbered in time order: folder/stem-0000.ply, ... Returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, t in enumerate(times):
        out = folder / f"{stem}-{i:04d}.ply"
        export_ply(out, slice_at(float(t)))
        files.append(out)
    return files


def ply_sequence_zip(slice_at: Callable[[float], Gaussians3D], times, stem: str = "fsm-gaussians") -> bytes:
    """The numbered PLY sequence as one zip (for a browser download), with times.txt listing
    each file's clip time."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        files = export_ply_sequence(slice_at, times, tmp, stem)
        for f in files:
            z.write(f, f.name)
        z.writestr("times.txt", "".join(f"{f.name} {float(t):.6f}\n" for f, t in zip(files, times)))
    return buffer.getvalue()

"""One render thread per browser: the latest camera wins, low resolution while it moves.

viser calls camera callbacks from a thread pool, one task per message, so rendering inside
them would queue up stale frames. Instead each callback only records "the camera moved" and
wakes this thread; the thread renders whatever the camera is when it gets to it:

    camera moves            -> render at `moving_scale` of the resolution (fast feedback)
    0.2 s without a move    -> render once more at full resolution
    time/settings changed   -> render at full resolution

The model itself is shared and guarded by one lock (inside the `render` callable).
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

import numpy as np
import viser

SETTLE_SECONDS = 0.2  # full resolution this long after the last camera move


class ClientRenderer:
    def __init__(self, client: viser.ClientHandle, render: Callable[[viser.ClientHandle, float], np.ndarray | None], moving_scale: float = 0.5):
        """render(client, scale) -> (H,W,3) uint8 for the client's current camera, or None to skip."""
        self.client = client
        self.render = render
        self.moving_scale = moving_scale
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last_move = 0.0
        self._pending_full = False  # a full-resolution frame is still owed
        self._alive = True
        self.frames_rendered = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name=f"render-client-{client.client_id}", daemon=True)
        self._thread.start()

    def camera_moved(self) -> None:
        with self._lock:
            self._last_move = time.monotonic()
            self._pending_full = True
        self._wake.set()

    def rerender(self) -> None:
        """Something other than the camera changed (time, head, memory): a full frame."""
        with self._lock:
            self._pending_full = True
            self._last_move = 0.0
        self._wake.set()

    def stop(self) -> None:
        self._alive = False
        self._wake.set()

    def _loop(self) -> None:
        while self._alive:
            self._wake.wait(timeout=SETTLE_SECONDS)
            self._wake.clear()
            if not self._alive:
                break
            with self._lock:
                since_move = time.monotonic() - self._last_move
                if not self._pending_full:
                    continue
                moving = since_move < SETTLE_SECONDS
                if not moving:
                    self._pending_full = False
            try:
                image = self.render(self.client, self.moving_scale if moving else 1.0)
                if image is not None and self._alive:
                    self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=85 if not moving else 60)
                    self.frames_rendered += 1
            except Exception as e:  # a failed frame must not kill the thread; tell the user once
                msg = f"{type(e).__name__}: {e}"
                if msg != self.last_error and self._alive:
                    self.last_error = msg
                    traceback.print_exc()
                    try:
                        self.client.add_notification("Render failed", msg, color="red", auto_close_seconds=8.0)
                    except Exception:
                        pass  # the client went away meanwhile

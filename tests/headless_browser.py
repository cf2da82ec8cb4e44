"""A stand-in browser for tests and benches: a websocket client that speaks just enough of viser's
protocol to be a connected page (it reports a camera, receives and counts everything the server
sends, and can set a GUI value as a page does). No chromium needed; tests/test_viewer_browser.py
uses the real one."""

from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
import viser
import viser.transforms as vtf
from viser import _messages
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


class HeadlessBrowser:
    def __init__(self, server: viser.ViserServer, height: int = 240, width: int = 320, fov: float = 0.9):
        self.server = server
        known = set(server.get_clients())
        self.ws = connect(f"ws://127.0.0.1:{server.get_port()}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self.bytes_received = 0
        self.messages_received = 0
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="headless-browser", daemon=True)
        self._reader.start()
        self.send_camera(np.eye(4), fov, height, width)
        end = time.monotonic() + 30
        while not (set(server.get_clients()) - known):
            if time.monotonic() > end:
                raise TimeoutError("the server never saw the headless browser")
            time.sleep(0.01)
        self.client_id = max(set(server.get_clients()) - known)

    @property
    def client(self) -> viser.ClientHandle:
        return self.server.get_clients()[self.client_id]

    def _read(self) -> None:
        try:
            while self._alive:
                data = self.ws.recv()
                self.bytes_received += len(data)
                self.messages_received += 1
        except (ConnectionClosed, OSError):
            pass

    def send(self, message: _messages.Message) -> None:
        self.ws.send(msgspec.msgpack.encode(message.as_serializable_dict()))

    def send_camera(self, c2w: np.ndarray, fov: float = 0.9, height: int = 240, width: int = 320) -> None:
        c2w = np.asarray(c2w, dtype=np.float64)
        look = c2w[:3, 3] + c2w[:3, 2]
        self.send(_messages.ViewerCameraMessage(
            wxyz=tuple(vtf.SO3.from_matrix(c2w[:3, :3]).wxyz), position=tuple(c2w[:3, 3]), fov=fov, near=0.01, far=1000.0,
            image_height=height, image_width=width, look_at=tuple(look), up_direction=tuple(-c2w[:3, 1]),
        ))  # fmt: skip

    def close(self) -> None:
        self._alive = False
        self.ws.close()
        self._reader.join(timeout=5)

"""The 3D scene: input cameras as frustums coloured by time, the current camera, camera helpers.

Everything is shown in the clip's own world frame (the frame its camera file uses); the
PoseNormalization from fsm.cameras.normalize_poses is only used for sizes (frustum scale,
how far the initial view stands back) and for the world's up direction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import viser
import viser.transforms as vtf

from fsm.cameras import PoseNormalization

# Viridis sampled at 0, 1/4, 1/2, 3/4, 1 (a perceptually ordered map readable on dark and light
# backgrounds); linear interpolation between the stops is close enough for colouring by time.
_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
) / 255.0


def colormap(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB in [0, 1] (shape + (3,))."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_VIRIDIS) - 2)
    f = (x - i)[..., None]
    return _VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f


def vertical_fov(fxfycxcy: torch.Tensor, height: int) -> float:
    return 2.0 * math.atan(0.5 * height / float(fxfycxcy[1]))


def up_direction(norm: PoseNormalization) -> np.ndarray:
    """World up = minus the mean camera's y axis (OpenCV cameras look along +z with y down)."""
    return -norm.rotation[:, 1].double().numpy()


def frustum_scale(norm: PoseNormalization) -> float:
    """Frustum depth: a tenth of the camera trajectory's extent (norm.scale is its max |t|)."""
    return 0.15 * norm.scale


def thumbnail(frame: torch.Tensor, size: int = 64) -> np.ndarray:
    """(3,H,W) [0,1] -> (h,w,3) uint8 with the long side `size` (small: one per frustum)."""
    H, W = frame.shape[-2:]
    s = size / max(H, W)
    small = F.interpolate(frame[None], size=(max(1, round(H * s)), max(1, round(W * s))), mode="area")[0]
    return (small.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def add_input_cameras(server: viser.ViserServer, clip, norm: PoseNormalization, max_shown: int = 120) -> dict[int, viser.CameraFrustumHandle]:
    """One frustum per input frame (at most `max_shown`, evenly spaced), its frame as the image,
    coloured by time along the clip. Returns the handles by frame index."""
    N = len(clip)
    H, W = clip.cameras.height, clip.cameras.width
    t = clip.times.numpy()
    span = max(t[-1] - t[0], 1e-9)
    handles = {}
    for i in np.unique(np.linspace(0, N - 1, min(N, max_shown)).round().astype(int)):
        c2w = clip.c2w[i].double().numpy()
        handles[int(i)] = server.scene.add_camera_frustum(
            f"/inputs/frame_{i:05d}",
            fov=vertical_fov(clip.fxfycxcy[i], H),
            aspect=W / H,
            scale=frustum_scale(norm),
            thickness=1.5, thickness_units="screen",
            color=tuple(colormap((t[i] - t[0]) / span)),
            image=thumbnail(clip.frames[i]),
            wxyz=vtf.SO3.from_matrix(c2w[:3, :3]).wxyz,
            position=c2w[:3, 3],
        )
    return handles


def show_current_camera(server: viser.ViserServer, clip, norm: PoseNormalization, index: int) -> viser.CameraFrustumHandle:
    """Highlight input camera `index` (the one nearest the current time) with a larger red frustum."""
    H, W = clip.cameras.height, clip.cameras.width
    c2w = clip.c2w[index].double().numpy()
    return server.scene.add_camera_frustum(
        "/current",
        fov=vertical_fov(clip.fxfycxcy[index], H),
        aspect=W / H,
        scale=1.4 * frustum_scale(norm),
        thickness=4.0, thickness_units="screen",
        color=(0.9, 0.1, 0.1),
        wxyz=vtf.SO3.from_matrix(c2w[:3, :3]).wxyz,
        position=c2w[:3, 3],
    )


# ----------------------------------------------------------------------------------------------
# The browser camera <-> c2w


def client_c2w(camera: viser.CameraHandle) -> torch.Tensor:
    """viser reports OpenCV cameras: c2w = [R(wxyz) | position]. -> (4,4) float32."""
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(camera.wxyz)).as_matrix()
    c2w[:3, 3] = camera.position
    return torch.from_numpy(c2w).float()


def set_client_camera(client: viser.ClientHandle, c2w: torch.Tensor | np.ndarray, fov: float | None = None) -> None:
    """Put a browser's camera at an OpenCV c2w; it orbits around a point one unit-ish ahead."""
    c2w = np.asarray(c2w, dtype=np.float64)
    with client.atomic():
        if fov is not None:
            client.camera.fov = fov
        client.camera.wxyz = vtf.SO3.from_matrix(c2w[:3, :3]).wxyz
        client.camera.position = c2w[:3, 3]

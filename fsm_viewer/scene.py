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

from fsm.cameras import PoseNormalization, look_at

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


def add_input_cameras(scene: viser.SceneApi, clip, norm: PoseNormalization, max_shown: int = 120) -> dict[int, viser.CameraFrustumHandle]:
    """One frustum per input frame (at most `max_shown`, evenly spaced), its frame as the image,
    coloured by time along the clip, in `scene` (a browser's client.scene). Returns the handles
    by frame index."""
    N = len(clip)
    H, W = clip.cameras.height, clip.cameras.width
    t = clip.times.numpy()
    span = max(t[-1] - t[0], 1e-9)
    handles = {}
    for i in np.unique(np.linspace(0, N - 1, min(N, max_shown)).round().astype(int)):
        c2w = clip.c2w[i].double().numpy()
        handles[int(i)] = scene.add_camera_frustum(
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


def show_current_camera(scene: viser.SceneApi, clip, norm: PoseNormalization, index: int, visible: bool = True) -> viser.CameraFrustumHandle:
    """Highlight input camera `index` (the one nearest the current time) with a larger red frustum."""
    H, W = clip.cameras.height, clip.cameras.width
    c2w = clip.c2w[index].double().numpy()
    return scene.add_camera_frustum(
        "/current",
        fov=vertical_fov(clip.fxfycxcy[index], H),
        aspect=W / H,
        scale=1.4 * frustum_scale(norm),
        thickness=4.0, thickness_units="screen",
        color=(0.9, 0.1, 0.1),
        wxyz=vtf.SO3.from_matrix(c2w[:3, :3]).wxyz,
        position=c2w[:3, 3],
        visible=visible,
    )


def overview_camera(clip, norm: PoseNormalization) -> tuple[torch.Tensor, float]:
    """A first browser camera from which the input trajectory is visible: (c2w (4,4), fov).

    It looks at the cameras' centroid along the normal of their best-fit plane (the direction in
    which their positions spread least), turned to the up side and tilted toward the back of the
    mean camera, far enough that every camera centre fits the view. An orbit is seen from above
    and behind; a forward-moving clip (all cameras facing one way, on a line) from above and
    behind at 35 degrees instead of end-on, where its frustums would stack into one block."""
    pos = clip.c2w[:, :3, 3].double()  # (N,3)
    centre = pos.mean(0)
    up = torch.from_numpy(up_direction(norm)).double()
    forward = torch.nn.functional.normalize(clip.c2w[:, :3, 2].double().mean(0), dim=0)
    # normal of the best-fit plane; for a line (two flat directions) the one nearest up
    _, spread, vh = torch.linalg.svd(pos - centre, full_matrices=True)  # rows of vh: directions, by spread
    flat = vh[1:] if len(spread) < 2 or spread[1] < 1e-3 * spread[0].clamp_min(1e-12) else vh[2:]
    normal = flat[torch.argmax((flat @ up).abs())] if len(flat) > 1 else flat[0]
    normal = torch.where((normal @ up) < 0, -normal, normal)
    back = -(forward - (forward @ normal) * normal)  # behind the mean camera, in the plane
    if back.norm() < 1e-6:  # cameras look along the normal: any direction in the plane
        back = flat[-1] if len(flat) > 1 and abs(float(flat[-1] @ normal)) < 0.5 else vh[0]
    back = torch.nn.functional.normalize(back - (back @ normal) * normal, dim=0)
    view = torch.nn.functional.normalize(normal + 0.7 * back, dim=0)  # from the centroid to the eye
    fov = vertical_fov(clip.fxfycxcy[0], clip.cameras.height)
    radius = max(float((pos - centre).norm(dim=1).max()), 3 * frustum_scale(norm), 1e-3)
    distance = 1.2 * radius / math.tan(0.5 * fov) + radius
    eye = centre + distance * view
    return look_at(eye.float(), centre.float(), up.float()), fov


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

"""Cameras: OpenCV convention, Plücker rays, resize/crop intrinsics, pose and time normalisation,
camera-path interpolation.

Conventions (shared by the whole project):
  * c2w is a 4x4 camera-to-world matrix, OpenCV axes (x right, y down, z forward).
  * fxfycxcy holds fx, fy, cx, cy in pixels of the image they belong to; pixel (u, v) has its
    centre at (u + 0.5, v + 0.5).
  * Images are float (..., 3, H, W) in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Rays


def pixel_rays(c2w: torch.Tensor, fxfycxcy: torch.Tensor, height: int, width: int):
    """World-space rays through pixel centres.

    c2w (N,4,4), fxfycxcy (N,4) -> origins (N,H,W,3), unit directions (N,H,W,3).
    """
    device, dtype = c2w.device, c2w.dtype
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )  # (H,W)
    fx, fy, cx, cy = (fxfycxcy[:, i, None, None] for i in range(4))  # (N,1,1)
    dirs_cam = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u).expand_as(u - cx)], -1)
    dirs = torch.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], dirs_cam)  # (N,H,W,3)
    dirs = F.normalize(dirs, dim=-1)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def plucker_rays(c2w: torch.Tensor, fxfycxcy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Plücker ray map [d, o x d] per pixel: (N,4,4), (N,4) -> (N,6,H,W)."""
    origins, dirs = pixel_rays(c2w, fxfycxcy, height, width)
    moment = torch.cross(origins, dirs, dim=-1)
    return torch.cat([dirs, moment], dim=-1).permute(0, 3, 1, 2)


def project_points(points: torch.Tensor, c2w: torch.Tensor, fxfycxcy: torch.Tensor):
    """World points (..., P, 3) -> pixel coordinates (..., P, 2) and camera depth (..., P).

    c2w (...,4,4), fxfycxcy (...,4). Pixel coordinates use the +0.5 centre convention,
    so the point on the ray through pixel (u, v)'s centre projects to (u + 0.5, v + 0.5).
    """
    w2c = torch.linalg.inv(c2w)
    cam = points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]
    z = cam[..., 2]
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    u = fx[..., None] * cam[..., 0] / z + cx[..., None]
    v = fy[..., None] * cam[..., 1] / z + cy[..., None]
    return torch.stack([u, v], -1), z


# ----------------------------------------------------------------------------------------------
# Resize to cover + centre crop


@dataclass(frozen=True)
class CoverCrop:
    """Scale an (src_h, src_w) image so it covers (dst_h, dst_w), then crop the centre."""

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int

    @property
    def scale(self) -> float:
        return max(self.dst_h / self.src_h, self.dst_w / self.src_w)

    @property
    def resized_hw(self) -> tuple[int, int]:
        # round() keeps e.g. 512 * 0.25 exactly 128; max() guarantees coverage.
        s = self.scale
        return max(self.dst_h, round(self.src_h * s)), max(self.dst_w, round(self.src_w * s))

    @property
    def offset(self) -> tuple[int, int]:
        rh, rw = self.resized_hw
        return (rh - self.dst_h) // 2, (rw - self.dst_w) // 2

    def intrinsics(self, fxfycxcy: torch.Tensor) -> torch.Tensor:
        """fx fy cx cy in source pixels -> in pixels of the cropped image (..., 4)."""
        rh, rw = self.resized_hw
        sy, sx = rh / self.src_h, rw / self.src_w
        oy, ox = self.offset
        fx, fy, cx, cy = fxfycxcy.unbind(-1)
        return torch.stack([fx * sx, fy * sy, cx * sx - ox, cy * sy - oy], -1)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(..., C, src_h, src_w) -> (..., C, dst_h, dst_w), antialiased bilinear resize."""
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        rh, rw = self.resized_hw
        if (rh, rw) != (self.src_h, self.src_w):
            x = F.interpolate(x.float(), size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        oy, ox = self.offset
        x = x[..., oy : oy + self.dst_h, ox : ox + self.dst_w]
        return x.reshape(*lead, *x.shape[-3:])


# ----------------------------------------------------------------------------------------------
# Pose normalisation (one function for training, evaluation and the viewer)


@dataclass
class PoseNormalization:
    """Similarity from the clip's world frame to the model's normalised frame.

    x_norm = rotation^T (x_world - center) / scale. Cameras transform as c2w_norm = T c2w_world
    with T = [[R^T / s, -R^T c / s], [0, 1]] applied to positions, rotations rotated by R^T.
    """

    rotation: torch.Tensor  # (3,3), the mean camera's orientation (columns = its axes)
    center: torch.Tensor  # (3,)
    scale: float

    @staticmethod
    def identity(dtype=torch.float32) -> "PoseNormalization":
        return PoseNormalization(torch.eye(3, dtype=dtype), torch.zeros(3, dtype=dtype), 1.0)

    def to(self, device) -> "PoseNormalization":
        return PoseNormalization(self.rotation.to(device), self.center.to(device), self.scale)

    def c2w_to_normalized(self, c2w: torch.Tensor) -> torch.Tensor:
        R, c = self.rotation.to(c2w), self.center.to(c2w)
        out = c2w.clone()
        out[..., :3, :3] = R.T @ c2w[..., :3, :3]
        out[..., :3, 3] = (c2w[..., :3, 3] - c) @ R / self.scale
        return out

    def c2w_to_world(self, c2w_norm: torch.Tensor) -> torch.Tensor:
        R, c = self.rotation.to(c2w_norm), self.center.to(c2w_norm)
        out = c2w_norm.clone()
        out[..., :3, :3] = R @ c2w_norm[..., :3, :3]
        out[..., :3, 3] = c2w_norm[..., :3, 3] * self.scale @ R.T + c
        return out

    def points_to_world(self, points_norm: torch.Tensor) -> torch.Tensor:
        R, c = self.rotation.to(points_norm), self.center.to(points_norm)
        return points_norm * self.scale @ R.T + c

    def points_to_normalized(self, points: torch.Tensor) -> torch.Tensor:
        R, c = self.rotation.to(points), self.center.to(points)
        return (points - c) @ R / self.scale

    def covariances_to_world(self, cov_norm: torch.Tensor) -> torch.Tensor:
        R = self.rotation.to(cov_norm)
        return (self.scale**2) * (R @ cov_norm @ R.T)

    def to_dict(self) -> dict:
        return {"rotation": self.rotation.tolist(), "center": self.center.tolist(), "scale": self.scale}


# A mean of unit axes shorter than this says "no common direction" (e.g. cameras on a full
# circle looking inwards average to ~0); its direction would be rounding noise.
MIN_AXIS_NORM = 0.1


def normalize_poses(c2w: torch.Tensor) -> tuple[torch.Tensor, PoseNormalization]:
    """Centre on the mean camera and scale translations into [-1, 1].

    The mean camera sits at the mean position. Its axes come from an ordered list of candidate
    directions, each used only if it is well defined (see `_frame_axes`): forward = the mean
    forward, else the first camera's; down = the mean down orthogonalised against forward, else
    the first camera's, else a world axis. So every layout (a full ring, one camera, cameras at
    one point) gets a proper rotation. Returns (normalised c2w (N,4,4), the transform).
    """
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or c2w.shape[0] == 0:
        raise ValueError(f"camera poses must be (N,4,4) with N >= 1, got {tuple(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise ValueError("camera poses contain NaN or inf")
    c = c2w.double()  # the frame is built in float64; float32 means of ~cancelling axes are noise
    center = c[:, :3, 3].mean(0)
    rotation = _frame_axes(c[:, :3, :3])
    spread = ((c[:, :3, 3] - center) @ rotation).abs().max().item()
    # All cameras at one point (to rounding of their coordinates): nothing to scale by.
    tiny = 1e-6 * max(1.0, center.abs().max().item())
    scale = spread if spread > tiny else 1.0
    _check_similarity(rotation, scale)
    norm = PoseNormalization(rotation.to(c2w.dtype), center.to(c2w.dtype), scale)
    return norm.c2w_to_normalized(c2w), norm


def _frame_axes(R: torch.Tensor) -> torch.Tensor:
    """Orthonormal (3,3) frame (columns x, y, z) from camera rotations R (N,3,3), float64.

    Gram-Schmidt over candidates in a fixed order of preference; the first whose part orthogonal
    to the axes already chosen is at least MIN_AXIS_NORM long wins. The first camera's own axes
    are unit and mutually orthogonal and the world axes span space, so a candidate always wins.
    """
    eye = torch.eye(3, dtype=R.dtype)
    z = _first_usable([R[:, :, 2].mean(0), R[0, :, 2]], [])
    y = _first_usable([R[:, :, 1].mean(0), R[0, :, 1], *eye], [z])
    x = torch.linalg.cross(y, z)
    return torch.stack([x, y, z], dim=1)


def _first_usable(candidates: list[torch.Tensor], chosen: list[torch.Tensor]) -> torch.Tensor:
    for v in candidates:
        for a in chosen:
            v = v - (v @ a) * a
        n = v.norm()
        if n >= MIN_AXIS_NORM:
            return v / n
    raise AssertionError("unreachable: the world axes always leave one usable direction")


def _check_similarity(rotation: torch.Tensor, scale: float) -> None:
    """The normalisation must be a proper similarity: rotation orthonormal with det +1, scale > 0."""
    err = (rotation.T @ rotation - torch.eye(3, dtype=rotation.dtype)).abs().max().item()
    det = torch.linalg.det(rotation).item()
    if not (err < 1e-9 and abs(det - 1.0) < 1e-9 and math.isfinite(scale) and scale > 0):
        raise AssertionError(f"normalize_poses built an improper similarity (|R^T R - I| = {err:.3g}, det = {det:.6g}, scale = {scale})")


def normalize_times(times: torch.Tensor, span: tuple[float, float]) -> torch.Tensor:
    """Map times in [t0, t1] linearly to [-1, 1] (outside values extrapolate)."""
    t0, t1 = float(span[0]), float(span[1])
    if t1 <= t0:
        return torch.zeros_like(times)
    return (times - t0) / (t1 - t0) * 2.0 - 1.0


@dataclass(frozen=True)
class ClipNormalization:
    """How one clip's world frame and seconds map into the model's frame: its poses normalised
    over all its cameras, its time span [first, last] mapped to [-1, 1]. Derived once per clip
    (for_clip) and shared by everything that streams, evaluates or fine-tunes on that clip.
    The default is the identity: poses and times already in the model's frame."""

    poses: PoseNormalization = field(default_factory=PoseNormalization.identity)
    time_span: tuple[float, float] = (-1.0, 1.0)  # seconds

    @staticmethod
    def for_clip(c2w: torch.Tensor, times: torch.Tensor) -> "ClipNormalization":
        """From every frame of the clip: c2w (N,4,4), times (N,) seconds."""
        _, poses = normalize_poses(c2w)
        return ClipNormalization(poses, (float(times[0]), float(times[-1])))

    def c2w(self, c2w: torch.Tensor) -> torch.Tensor:
        """Clip-frame cameras (...,4,4) -> the model's frame."""
        return self.poses.c2w_to_normalized(c2w)

    def times(self, times: torch.Tensor) -> torch.Tensor:
        """Seconds (...) -> normalised time (float64; outside the span extrapolates)."""
        return normalize_times(torch.as_tensor(times, dtype=torch.float64), self.time_span)


# ----------------------------------------------------------------------------------------------
# Rotations and camera paths


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(...,3,3) rotation -> (...,4) unit quaternion (w, x, y, z) with w >= 0."""
    m = R
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate forms; take the one with the largest (best conditioned) denominator.
    cands = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # (...,4,4)
    diag = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(...,4) quaternion (w, x, y, z), any norm -> (...,3,3) rotation."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: torch.Tensor, q1: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions (...,4) at fractions s (...), shortest arc."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    s = s[..., None]
    sin = torch.sin(theta)
    near = sin < 1e-6  # nearly parallel: linear interpolation is exact enough
    w0 = torch.where(near, 1 - s, torch.sin((1 - s) * theta) / sin.clamp(min=1e-12))
    w1 = torch.where(near, s, torch.sin(s * theta) / sin.clamp(min=1e-12))
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)


def interpolate_cameras(c2w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Camera path through K keyframes c2w (K,4,4), sampled at parameters s (M,) in [0, K-1].

    Rotations: slerp between neighbouring keys. Positions: centripetal-free uniform
    Catmull-Rom spline (C1, passes through every key; ends use duplicated end points).
    """
    K = c2w.shape[0]
    if K == 1:
        return c2w.expand(s.shape[0], 4, 4).clone()
    s = s.to(c2w.dtype).clamp(0, K - 1)
    i = s.floor().long().clamp(max=K - 2)
    f = s - i
    q = matrix_to_quaternion(c2w[:, :3, :3])
    R = quaternion_to_matrix(slerp(q[i], q[i + 1], f))
    p = c2w[:, :3, 3]
    p0, p1, p2, p3 = p[(i - 1).clamp(min=0)], p[i], p[i + 1], p[(i + 2).clamp(max=K - 1)]
    f = f[:, None]
    pos = 0.5 * (
        2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2 + (3 * p1 - p0 - 3 * p2 + p3) * f**3
    )
    out = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(s.shape[0], 1, 1)
    out[:, :3, :3] = R
    out[:, :3, 3] = pos
    return out


def smooth_trajectory(c2w: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Low-pass a camera trajectory (N,4,4): box-filtered positions, averaged quaternions."""
    N = c2w.shape[0]
    if N < 3 or window <= 1:
        return c2w.clone()
    half = window // 2
    idx = torch.arange(N, device=c2w.device)
    nbr = (idx[:, None] + torch.arange(-half, half + 1, device=c2w.device)[None]).clamp(0, N - 1)  # (N,win)
    pos = c2w[:, :3, 3][nbr].mean(1)
    q = matrix_to_quaternion(c2w[:, :3, :3])
    qn = q[nbr]
    qn = torch.where((qn * q[:, None]).sum(-1, keepdim=True) < 0, -qn, qn)  # same hemisphere
    R = quaternion_to_matrix(qn.mean(1))
    out = c2w.clone()
    out[:, :3, :3] = R
    out[:, :3, 3] = pos
    return out


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """OpenCV c2w (...,4,4) at eyes (...,3) looking at targets (...,3); `up` (3,) or (...,3) is the
    world's up direction. One camera: eye, target (3,) -> (4,4)."""
    z = F.normalize(target - eye, dim=-1)
    x = F.normalize(torch.cross(z, up.expand_as(z), dim=-1), dim=-1)  # x = y x z with y = -up (OpenCV: y down)
    y = torch.cross(z, x, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(*z.shape[:-1], 1, 1)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    return c2w

"""Camera trajectories around a synthetic scene, defined for any time, and cameras off them.

make_path(scene, kind) draws a Trajectory (orbit, dolly, pan or hand-held) as a pure function of
(scene.seed, kind, variant); novel_cameras displaces cameras off a trajectory. Cameras are OpenCV
c2w (x right, y down, z forward) with fx fy cx cy in pixels, as in fsm.cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsm.cameras import look_at
from fsm.data.synthetic.builders import pick, uniform
from fsm.data.synthetic.scene import Scene
from fsm.data.synthetic.vec import dot, tri

PATH_KINDS = ("orbit", "dolly", "pan", "handheld")
Z_UP = (0.0, 0.0, 1.0)  # the synthetic world's up


@dataclass
class Trajectory:
    """A closed-form camera trajectory around scene.look, smooth and defined for any time t (seconds).

    eye(t)    = look + r(t) (cos theta(t), sin theta(t), 0) + z(t) e_z + jitter_e(t)
    target(t) = look + pan(t) (sideways) + jitter_t(t)
    with theta = theta0 + omega t, r = clamp(r_mid + dolly tri(dolly_freq t + dolly_phase)),
    z = height + height_amp sin(...), pan = pan_amp sin(2 pi pan_freq t + pan_phase), jitter a
    sum of sinusoids (hand-held shake). Square pixels, vertical field of view fov_y (radians).
    """

    kind: str
    look: torch.Tensor  # (3,)
    theta0: float
    omega: float
    r_mid: float
    dolly: float
    dolly_freq: float
    dolly_phase: float
    r_range: tuple[float, float]
    height: float
    height_amp: float
    height_freq: float
    pan_amp: float
    pan_freq: float
    pan_phase: float
    jitter_amp: torch.Tensor  # (2,K,3) eye / target sinusoid amplitudes
    jitter_freq: torch.Tensor  # (2,K,3) Hz
    jitter_phase: torch.Tensor  # (2,K,3)
    fov_y: float

    def c2w(self, times: torch.Tensor) -> torch.Tensor:
        """times (N,) seconds -> c2w (N,4,4) float32 (CPU)."""
        t = times.to(torch.float32).cpu()
        theta = self.theta0 + self.omega * t
        r = (self.r_mid + self.dolly * tri(self.dolly_freq * t + self.dolly_phase)).clamp(*self.r_range)
        z = self.height + self.height_amp * torch.sin(2 * math.pi * self.height_freq * t)
        eye = self.look + torch.stack([r * torch.cos(theta), r * torch.sin(theta), z - self.look[2]], -1)
        side = torch.stack([-torch.sin(theta), torch.cos(theta), torch.zeros_like(theta)], -1)
        target = self.look + side * (self.pan_amp * torch.sin(2 * math.pi * self.pan_freq * t + self.pan_phase))[:, None]
        shake = (self.jitter_amp * torch.sin(2 * math.pi * self.jitter_freq * t[:, None, None, None] + self.jitter_phase)).sum(2)
        return look_at(eye + shake[:, 0], target + shake[:, 1], eye.new_tensor(Z_UP))

    def fxfycxcy(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n,4) intrinsics for (height, width) images: fy from fov_y, fx = fy, centred."""
        f = 0.5 * height / math.tan(0.5 * self.fov_y)
        return torch.tensor([f, f, width / 2, height / 2], dtype=torch.float32).repeat(n, 1)


def frame_times(num_frames: int, fps: float = 24.0, start: float = 0.0) -> torch.Tensor:
    """(N,) float64 timestamps in seconds of consecutive frames."""
    return start + torch.arange(num_frames, dtype=torch.float64) / fps


def make_path(scene: Scene, kind: str | None = None, variant: int = 0) -> Trajectory:
    """A camera path for `scene`, a pure function of (scene.seed, kind, variant)."""
    g = torch.Generator().manual_seed(int(scene.seed) * 7919 + 104729 + int(variant))
    drawn = pick(g, ["orbit", "orbit", "dolly", "pan", "handheld"] if scene.family != "object" else ["orbit", "orbit", "orbit", "handheld", "dolly"])
    kind = kind or drawn
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown camera path kind {kind!r}; expected one of {PATH_KINDS}")
    r0, r1 = scene.cam_radius
    h0, h1 = scene.cam_height
    sign = pick(g, [-1.0, 1.0])
    p = dict(
        kind=kind, look=scene.look.clone(), theta0=float(uniform(g, 0, 2 * math.pi)), omega=0.0,
        r_mid=float(uniform(g, r0, r1)), dolly=0.0, dolly_freq=0.1, dolly_phase=float(uniform(g, 0, 1)), r_range=(r0, r1),
        height=float(uniform(g, h0, h1)), height_amp=float(uniform(g, 0.0, 0.2)), height_freq=float(uniform(g, 0.05, 0.2)),
        pan_amp=0.0, pan_freq=0.1, pan_phase=float(uniform(g, 0, 6.28)), fov_y=math.radians(float(uniform(g, 45.0, 70.0))),
    )  # fmt: skip
    shake = 0.01
    if kind == "orbit":
        p.update(omega=sign * float(uniform(g, 0.15, 0.4)), pan_amp=float(uniform(g, 0.0, 0.3)))
    elif kind == "dolly":  # forward/backward at constant speed, slight drift sideways
        p.update(omega=sign * float(uniform(g, 0.0, 0.05)), r_mid=(r0 + r1) / 2, dolly=(r1 - r0) / 2, dolly_freq=float(uniform(g, 0.05, 0.15)))
    elif kind == "pan":  # camera nearly still, looking across the scene
        p.update(r_mid=float(uniform(g, (r0 + r1) / 2, r1)), omega=sign * float(uniform(g, 0.0, 0.05)),
                 pan_amp=float(uniform(g, 1.0, 2.5)), pan_freq=float(uniform(g, 0.05, 0.15)))  # fmt: skip
    else:  # hand-held: slow walk around the scene with a shaky hand
        p.update(omega=sign * float(uniform(g, 0.05, 0.2)), dolly=(r1 - r0) / 4, dolly_freq=float(uniform(g, 0.05, 0.1)),
                 r_mid=(r0 + r1) / 2)  # fmt: skip
        shake = 0.06
    K = 3
    p["jitter_amp"] = shake * uniform(g, 0.3, 1.0, 2, K, 3) * torch.tensor([1.0, 2.5])[:, None, None]
    p["jitter_freq"] = uniform(g, 0.2, 1.5, 2, K, 3)
    p["jitter_phase"] = uniform(g, 0, 2 * math.pi, 2, K, 3)
    return Trajectory(**p)


def novel_cameras(scene: Scene, c2w: torch.Tensor, generator: torch.Generator, shift=(0.5, 1.5)) -> torch.Tensor:
    """Cameras displaced off a trajectory: c2w (N,4,4) -> (N,4,4).

    Each eye moves by a random offset of length in `shift` (metres; mostly sideways), is kept in
    the scene's camera region, and looks at what the original camera looked at (the point on
    its optical axis as deep as scene.look), give or take 0.2 m.
    """
    c2w = c2w.cpu()
    N = c2w.shape[0]
    eye, fwd = c2w[:, :3, 3], c2w[:, :3, 2]
    depth = dot(scene.look - eye, fwd).clamp(min=1.0)
    target = eye + fwd * depth[:, None]
    direction = F.normalize(torch.randn(N, 3, generator=generator) * torch.tensor([1.0, 1.0, 0.4]), dim=-1)
    new_eye = eye + direction * (shift[0] + (shift[1] - shift[0]) * torch.rand(N, 1, generator=generator))
    rel = new_eye[:, :2] - scene.look[:2]
    r = rel.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    new_xy = scene.look[:2] + rel / r * r.clamp(*scene.cam_radius)
    new_z = new_eye[:, 2:].clamp(*scene.cam_height)
    new_target = target + 0.2 * torch.randn(N, 3, generator=generator)
    return look_at(torch.cat([new_xy, new_z], -1), new_target, c2w.new_tensor(Z_UP))

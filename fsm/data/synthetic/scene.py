"""A synthetic scene as plain tensors, and the closed-form motion of its objects.

A scene is an environment of one-sided planes (a closed box room seen from inside, or a ground
plane) plus a sky gradient for rays that hit nothing; objects (ellipsoids, boxes, capped
cylinders), each a unit shape placed by a rigid motion and a per-axis size that may pulse over
time, optionally hanging from a parent object; one procedural solid texture per plane and per
object; one light. World z is up, lengths are metres-ish, time is in seconds (any real number:
the motions are defined for all t).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from fsm.data.synthetic.vec import axis_angle, matmul3, rot, tri

ELLIPSOID, BOX, CYLINDER = 0, 1, 2  # object kinds: unit sphere, cube [-1,1]^3, cylinder r=1 |z|<=1
FLAT, CHECKER, STRIPES, NOISE, GRADIENT, BLOBS = range(6)  # texture kinds

# ----------------------------------------------------------------------------------------------
# Scene description


@dataclass
class Textures:
    """K solid textures: colour = a + (b - a) * m(q) with q = coords * scale + offset."""

    kind: torch.Tensor  # (K,) long, FLAT..BLOBS
    color_a: torch.Tensor  # (K,3)
    color_b: torch.Tensor  # (K,3)
    scale: torch.Tensor  # (K,) pattern cells per unit of texture coordinate
    offset: torch.Tensor  # (K,3) keeps cell borders off the faces of boxes/planes
    direction: torch.Tensor  # (K,3) unit, for stripes and gradients
    waves: torch.Tensor  # (K,M,4) plane waves (frequency vector, phase) for noise and blobs


@dataclass
class Objects:
    """O objects. Local motion of object i at time t (seconds):

    joint(t)  = pos + lin * tri(lin_freq t) + amp * sin(2 pi freq t + phase)
                + z_up * bounce * |sin(pi bounce_freq t + bounce_phase)|
    R_swing   = rotation about swing_axis by swing_amp * sin(2 pi swing_freq t + swing_phase)
    centre    = joint + R_swing arm
    rotation  = R_swing @ rotation(spin_axis, spin_rate t) @ rot0
    size(t)   = size * (1 + pulse * sin(2 pi pulse_freq t + pulse_phase))

    If parent >= 0 the local pose is expressed in the parent's (rigid) frame. tri() is a
    triangle wave in [-1, 1] (ping-pong straight-line motion at constant speed).
    """

    kind: torch.Tensor  # (O,) long
    size: torch.Tensor  # (O,3) radii / half extents
    parent: torch.Tensor  # (O,) long, -1 for none; parents come before their children
    pos: torch.Tensor  # (O,3)
    lin: torch.Tensor  # (O,3)
    lin_freq: torch.Tensor  # (O,)
    amp: torch.Tensor  # (O,3)
    freq: torch.Tensor  # (O,)
    phase: torch.Tensor  # (O,3)
    bounce: torch.Tensor  # (O,)
    bounce_freq: torch.Tensor  # (O,)
    bounce_phase: torch.Tensor  # (O,)
    swing_axis: torch.Tensor  # (O,3) unit
    swing_amp: torch.Tensor  # (O,) radians
    swing_freq: torch.Tensor  # (O,)
    swing_phase: torch.Tensor  # (O,)
    arm: torch.Tensor  # (O,3)
    spin_axis: torch.Tensor  # (O,3) unit
    spin_rate: torch.Tensor  # (O,) rad/s
    rot0: torch.Tensor  # (O,3,3)
    pulse: torch.Tensor  # (O,3) relative size amplitude per axis
    pulse_freq: torch.Tensor  # (O,)
    pulse_phase: torch.Tensor  # (O,)

    def __len__(self) -> int:
        return self.kind.shape[0]


@dataclass
class Scene:
    seed: int
    family: str
    # environment: P one-sided planes {x : normal . x = offset}, normals pointing at the viewer
    plane_normal: torch.Tensor  # (P,3)
    plane_offset: torch.Tensor  # (P,)
    plane_u: torch.Tensor  # (P,3) texture axes on the plane
    plane_v: torch.Tensor  # (P,3)
    objects: Objects
    textures: Textures  # P plane textures, then one per object
    light: torch.Tensor  # (4,) homogeneous: w=0 direction towards the sun, w=1 point lamp
    ambient: float
    sky_horizon: torch.Tensor  # (3,)
    sky_zenith: torch.Tensor  # (3,)
    # where cameras may go: around `look` at horizontal distance in cam_radius, height in cam_height
    look: torch.Tensor  # (3,)
    cam_radius: tuple[float, float]
    cam_height: tuple[float, float]

    def to(self, device) -> "Scene":
        return _to(self, device)


def _to(obj, device):
    """Copy of a (nested) tensor dataclass with every tensor on `device`."""
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            changes[f.name] = v.to(device)
        elif dataclasses.is_dataclass(v):
            changes[f.name] = _to(v, device)
    return dataclasses.replace(obj, **changes)


def new_objects(kinds: list[int]) -> Objects:
    """Objects of the given kinds, unit size, at the origin, static; callers fill in the rest."""
    O = len(kinds)
    z, z3 = torch.zeros(O), torch.zeros(O, 3)
    ez = torch.tensor([0.0, 0.0, 1.0]).expand(O, 3).clone()
    return Objects(
        kind=torch.tensor(kinds, dtype=torch.long), size=torch.ones(O, 3), parent=torch.full((O,), -1),
        pos=z3.clone(), lin=z3.clone(), lin_freq=z.clone(), amp=z3.clone(), freq=z.clone(), phase=z3.clone(),
        bounce=z.clone(), bounce_freq=z.clone(), bounce_phase=z.clone(),
        swing_axis=ez.clone(), swing_amp=z.clone(), swing_freq=z.clone(), swing_phase=z.clone(), arm=z3.clone(),
        spin_axis=ez.clone(), spin_rate=z.clone(), rot0=torch.eye(3).repeat(O, 1, 1),
        pulse=z3.clone(), pulse_freq=z.clone(), pulse_phase=z.clone(),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Motion


def object_poses(objects: Objects, times: torch.Tensor):
    """World pose of every object at every time.

    times (B,) seconds -> rotation (B,O,3,3), centre (B,O,3), size (B,O,3). The world point of
    local unit-shape point h is centre + rotation (size * h).
    """
    ob = objects
    t = times.to(ob.pos.dtype)[:, None]  # (B,1)
    two_pi = 2 * math.pi
    joint = (
        ob.pos
        + ob.lin * tri(ob.lin_freq * t)[..., None]
        + ob.amp * torch.sin(two_pi * ob.freq[:, None] * t[..., None] + ob.phase)
    )  # (B,O,3)
    hop = ob.bounce * torch.sin(math.pi * ob.bounce_freq * t + ob.bounce_phase).abs()  # (B,O)
    joint = joint + torch.stack([torch.zeros_like(hop), torch.zeros_like(hop), hop], -1)
    swing = axis_angle(ob.swing_axis.expand(t.shape[0], -1, -1), ob.swing_amp * torch.sin(two_pi * ob.swing_freq * t + ob.swing_phase))
    spin = axis_angle(ob.spin_axis.expand(t.shape[0], -1, -1), ob.spin_rate * t)
    R_local = matmul3(swing, matmul3(spin, ob.rot0.expand_as(spin)))  # (B,O,3,3)
    p_local = joint + rot(swing, ob.arm.expand_as(joint))
    size = ob.size * (1 + ob.pulse * torch.sin(two_pi * ob.pulse_freq * t + ob.pulse_phase)[..., None])

    # Chain parents: after k rounds every object of depth <= k has its world pose.
    R, p = R_local, p_local
    has_parent = (ob.parent >= 0)[:, None]  # (O,1)
    par = ob.parent.clamp(min=0)
    for _ in range(_max_depth(ob.parent)):
        R_par, p_par = R[:, par], p[:, par]
        R = torch.where(has_parent[..., None], matmul3(R_par, R_local), R_local)
        p = torch.where(has_parent, rot(R_par, p_local) + p_par, p_local)
    return R, p, size


def _max_depth(parent: torch.Tensor) -> int:
    parent = parent.tolist()
    depth = [0] * len(parent)
    for i, q in enumerate(parent):  # parents come first, so one pass suffices
        depth[i] = depth[q] + 1 if q >= 0 else 0
    return max(depth, default=0)

"""Procedural 4D scenes rendered exactly by analytic ray casting.

There is no 4D data set to download, so training, evaluation and the shipped sample clip come
from here. A scene is a handful of plain tensors:

  * an environment of one-sided planes (a closed box room seen from inside, or a ground plane)
    plus a sky gradient for rays that hit nothing;
  * objects (ellipsoids, boxes, capped cylinders), each a unit shape placed by a rigid motion
    and a per-axis size that may pulse over time; objects may hang from a parent object
    (a two-link pendulum is built that way);
  * procedural solid textures (flat, checker, stripes, value noise, gradient, blobs) evaluated
    at the hit point, so any resolution is exact;
  * one light (directional sun or point lamp), Lambert + ambient shading, hard shadows cast by
    the objects.

Conventions: world z is up, lengths are metres-ish, time is in SECONDS (any real number; the
motions are defined for all t). Cameras are OpenCV c2w (x right, y down, z forward) with
fx fy cx cy in pixels, as in fsm.cameras.

    scene = make_scene(seed, family="room")             # deterministic by seed
    path = make_path(scene, kind="orbit")                # deterministic by scene seed and kind
    times = frame_times(96, fps=24.0)                    # (N,) seconds
    images = render(scene, path.c2w(times), path.fxfycxcy(len(times), 128, 128), times, 128, 128)

Everything random is drawn from a CPU torch.Generator seeded by the seed, so the same seed gives
bit-identical scene tensors everywhere and bit-identical renders on CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsm.cameras import pixel_rays

FAMILIES = ("room", "outdoor", "object")
PATH_KINDS = ("orbit", "dolly", "pan", "handheld")

ELLIPSOID, BOX, CYLINDER = 0, 1, 2  # object kinds: unit sphere, cube [-1,1]^3, cylinder r=1 |z|<=1
FLAT, CHECKER, STRIPES, NOISE, GRADIENT, BLOBS = range(6)  # texture kinds

EPS = 1e-4  # minimum ray distance (metres): keeps shadow rays off their own surface

# ----------------------------------------------------------------------------------------------
# Scene description (plain tensors)


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


def _stack_objects(objs: list[dict]) -> Objects:
    out = new_objects([o["kind"] for o in objs])
    for i, o in enumerate(objs):
        for name, value in o.items():
            if name != "kind":
                getattr(out, name)[i] = torch.as_tensor(value, dtype=getattr(out, name).dtype)
    return out


def _stack_textures(texs: list[dict]) -> Textures:
    return Textures(
        kind=torch.tensor([t["kind"] for t in texs], dtype=torch.long),
        color_a=torch.stack([t["color_a"] for t in texs]),
        color_b=torch.stack([t["color_b"] for t in texs]),
        scale=torch.tensor([t["scale"] for t in texs]),
        offset=torch.stack([t["offset"] for t in texs]),
        direction=torch.stack([t["direction"] for t in texs]),
        waves=torch.stack([t["waves"] for t in texs]),
    )


# ----------------------------------------------------------------------------------------------
# Small math helpers. 3x3 products are written out as sums of three elementwise products: the
# result for one pixel then never depends on how many other pixels or frames share the batch.


def _rot(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R v for (...,3,3), (...,3)."""
    return R[..., :, 0] * v[..., 0:1] + R[..., :, 1] * v[..., 1:2] + R[..., :, 2] * v[..., 2:3]


def _rot_t(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R^T v for (...,3,3), (...,3)."""
    return R[..., 0, :] * v[..., 0:1] + R[..., 1, :] * v[..., 1:2] + R[..., 2, :] * v[..., 2:3]


def _matmul3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return A[..., :, 0:1] * B[..., 0:1, :] + A[..., :, 1:2] * B[..., 1:2, :] + A[..., :, 2:3] * B[..., 2:3, :]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit axis (...,3), angle (...) radians -> rotation (...,3,3)."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    C = 1 - c
    return torch.stack(
        [
            c + x * x * C, x * y * C - z * s, x * z * C + y * s,
            y * x * C + z * s, c + y * y * C, y * z * C - x * s,
            z * x * C - y * s, z * y * C + x * s, c + z * z * C,
        ],
        -1,
    ).reshape(*angle.shape, 3, 3)  # fmt: skip


def _tri(x: torch.Tensor) -> torch.Tensor:
    """Triangle wave of period 1 in [-1, 1], tri(0) = 1."""
    return 1 - 4 * (x - torch.floor(x + 0.5)).abs()


def look_at_batch(eye: torch.Tensor, target: torch.Tensor, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV c2w (N,4,4) at eyes (N,3) looking at targets (N,3); world `up` is +z here."""
    up = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = F.normalize(target - eye, dim=-1)
    x = F.normalize(torch.cross(z, up, dim=-1), dim=-1)  # OpenCV y points down = -up
    y = torch.cross(z, x, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, eye
    return c2w


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
        + ob.lin * _tri(ob.lin_freq * t)[..., None]
        + ob.amp * torch.sin(two_pi * ob.freq[:, None] * t[..., None] + ob.phase)
    )  # (B,O,3)
    hop = ob.bounce * torch.sin(math.pi * ob.bounce_freq * t + ob.bounce_phase).abs()  # (B,O)
    joint = joint + torch.stack([torch.zeros_like(hop), torch.zeros_like(hop), hop], -1)
    swing = axis_angle(ob.swing_axis.expand(t.shape[0], -1, -1), ob.swing_amp * torch.sin(two_pi * ob.swing_freq * t + ob.swing_phase))
    spin = axis_angle(ob.spin_axis.expand(t.shape[0], -1, -1), ob.spin_rate * t)
    R_local = _matmul3(swing, _matmul3(spin, ob.rot0.expand_as(spin)))  # (B,O,3,3)
    p_local = joint + _rot(swing, ob.arm.expand_as(joint))
    size = ob.size * (1 + ob.pulse * torch.sin(two_pi * ob.pulse_freq * t + ob.pulse_phase)[..., None])

    # Chain parents: after k rounds every object of depth <= k has its world pose.
    R, p = R_local, p_local
    has_parent = (ob.parent >= 0)[:, None]  # (O,1)
    par = ob.parent.clamp(min=0)
    for _ in range(_max_depth(ob.parent)):
        R_par, p_par = R[:, par], p[:, par]
        R = torch.where(has_parent[..., None], _matmul3(R_par, R_local), R_local)
        p = torch.where(has_parent, _rot(R_par, p_local) + p_par, p_local)
    return R, p, size


def _max_depth(parent: torch.Tensor) -> int:
    parent = parent.tolist()
    depth = [0] * len(parent)
    for i, q in enumerate(parent):  # parents come first, so one pass suffices
        depth[i] = depth[q] + 1 if q >= 0 else 0
    return max(depth, default=0)


# ----------------------------------------------------------------------------------------------
# Ray casting. A ray (o, d) is mapped into each object's unit frame, where the entry distance is
# the same as in the world. Most rays miss most objects, so rays are handled in tiles of TILE
# neighbouring pixels (8x8 on screen): a tile's rays start inside a small ball and point inside a
# narrow cone, and the exact test runs only for (tile, object) pairs where that bundle can reach
# the object's bounding sphere -- typically a few percent of all pairs.

TILE_SIDE = 8
TILE = TILE_SIDE * TILE_SIDE
_BOUND = {0: 1.0, 1: math.sqrt(3.0), 2: math.sqrt(2.0)}  # unit shape's bounding radius, by kind


def _hit_ellipsoid(o, d):
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    return torch.where((disc >= 0) & (t > EPS), t, torch.inf)


def _slab(o, d):
    """Entry/exit distances of the slab |x| <= 1 along one axis."""
    inv = 1 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-1 - o) * inv, (1 - o) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _hit_box(o, d):
    (n0, f0), (n1, f1), (n2, f2) = (_slab(o[k], d[k]) for k in range(3))
    t_in = torch.maximum(torch.maximum(n0, n1), n2)
    t_out = torch.minimum(torch.minimum(f0, f1), f2)
    return torch.where((t_out >= t_in) & (t_in > EPS), t_in, torch.inf)


def _hit_cylinder(o, d):
    # Infinite side x^2 + y^2 = 1 intersected with the slab |z| <= 1.
    a = d[0] * d[0] + d[1] * d[1]
    b = o[0] * d[0] + o[1] * d[1]
    c = o[0] * o[0] + o[1] * o[1] - 1
    disc = b * b - a * c
    root = disc.clamp(min=0).sqrt()
    along_axis = a < 1e-12  # ray parallel to the axis: inside the side for all t iff c <= 0
    a_safe = a.clamp(min=1e-12)
    s_in = torch.where(along_axis, torch.where(c <= 0, -torch.inf, torch.inf), (-b - root) / a_safe)
    s_out = torch.where(along_axis, torch.inf, (-b + root) / a_safe)
    z_in, z_out = _slab(o[2], d[2])
    t_in = torch.maximum(s_in, z_in)
    t_out = torch.minimum(s_out, z_out)
    return torch.where((disc >= 0) & (t_out >= t_in) & (t_in > EPS), t_in, torch.inf)


_HIT = {ELLIPSOID: _hit_ellipsoid, BOX: _hit_box, CYLINDER: _hit_cylinder}


def _ray_bundles(o, d, B, N):
    """Per tile of TILE rays: ball (centre (B,T,3), radius (B,T)) holding the origins and cone
    (unit axis (B,T,3), half-angle (B,T)) holding the directions. o (B,No,3), d (B,Nd,3) with
    No, Nd either 1 (shared by all rays) or N (tile-major order)."""
    T = N // TILE
    if o.shape[1] == 1:
        centre, rho = o, torch.zeros(B, 1, device=o.device)
    else:
        tiles = o.reshape(B, T, TILE, 3)
        centre = tiles.mean(2)
        rho = (tiles - centre[:, :, None]).norm(dim=-1).amax(2)
    if d.shape[1] == 1:
        axis, beta = d, torch.zeros(B, 1, device=d.device)
    else:
        tiles = d.reshape(B, T, TILE, 3)
        axis = F.normalize(tiles.sum(2), dim=-1)
        beta = torch.acos(_dot(tiles, axis[:, :, None]).amin(2).clamp(-1, 1))
    return centre, rho, axis, beta


def _trace_objects(kinds: list[int], R, p, s, o, d):
    """Nearest object hit along rays o (B,No,3), d (B,Nd,3): No, Nd are each 1 (primary rays of a
    frame share their origin, sun shadow rays their direction) or N, a multiple of TILE with the
    rays in tile-major order.

    R (B,O,3,3), p and s (B,O,3) from object_poses. Returns distance t (B,N) (inf: no hit) and
    the hit object's index (B,N).
    """
    B, N = o.shape[0], max(o.shape[1], d.shape[1])
    t = torch.full((B, len(kinds), N), torch.inf, device=o.device)
    if not kinds:
        return t.sum(1), torch.zeros((B, N), dtype=torch.long, device=o.device)
    kind = torch.tensor(kinds, device=o.device)
    radius = s.amax(-1) * torch.tensor([_BOUND[k] for k in kinds], device=o.device)  # (B,O)

    # A ray from the ball that hits the sphere passes within radius + rho of it from the ball's
    # centre, so its direction is within asin((radius + rho) / dist) of the centre's direction.
    centre, rho, axis, beta = _ray_bundles(o, d, B, N)
    to_obj = p[:, :, None] - centre[:, None]  # (B,O,T,3)
    dist = to_obj.norm(dim=-1)
    reach = radius[..., None] + rho[:, None] + 1e-4  # (B,O,T)
    angle = torch.acos((_dot(to_obj, axis[:, None]) / dist.clamp(min=1e-9)).clamp(-1, 1))
    spread = torch.asin((reach / dist.clamp(min=1e-9)).clamp(max=1))
    near = (dist <= reach) | (angle <= beta[:, None] + spread + 1e-3)  # (B,O,T or 1)
    near = near.expand(B, len(kinds), N // TILE)

    A = R.transpose(-1, -2) / s[..., :, None]  # unit-frame point = A (x - p): rotate, then unscale
    lanes = torch.arange(TILE, device=o.device)
    for k, hit in _HIT.items():
        b, j, tile = (near & (kind == k)[None, :, None]).nonzero(as_tuple=True)  # (tile, object) pairs
        if b.numel() == 0:
            continue
        b, j, n = b[:, None].expand(-1, TILE), j[:, None].expand(-1, TILE), tile[:, None] * TILE + lanes  # (K,TILE)
        o_pair = o[b, n if o.shape[1] > 1 else 0]  # (K,TILE,3)
        d_pair = d[b, n if d.shape[1] > 1 else 0]
        A_pair, p_pair = A[b[:, :1], j[:, :1]], p[b[:, :1], j[:, :1]]  # one object per row: (K,1,3,3), (K,1,3)
        o_local = _rot(A_pair, o_pair - p_pair)
        d_local = _rot(A_pair, d_pair)
        t[b, j, n] = hit(o_local.unbind(-1), d_local.unbind(-1))
    return t.min(1)


def _trace_planes(normal, offset, o, d):
    """Nearest one-sided plane hit (only from the side the normal points to). -> t, index (B,N)."""
    if normal.shape[0] == 0:
        return torch.full(d.shape[:2], torch.inf, device=d.device), torch.zeros(d.shape[:2], dtype=torch.long, device=d.device)
    denom = _dot(d[..., None, :], normal)  # (B,N,P)
    t = (offset - _dot(o[..., None, :], normal)) / torch.where(denom < -1e-8, denom, torch.full_like(denom, -1.0))
    t = torch.where((denom < -1e-8) & (t > EPS), t, torch.inf)
    return t.min(-1)


def _local_normal(h, kind):
    """Outward normal of the unit shape at local surface point h (...,3)."""
    n_ell = h
    axis = h.abs().argmax(-1, keepdim=True)
    n_box = torch.zeros_like(h).scatter(-1, axis, torch.sign(h.gather(-1, axis)))
    radial = torch.cat([h[..., :2], torch.zeros_like(h[..., 2:])], -1)
    cap = h[..., 2:].abs() > radial.norm(dim=-1, keepdim=True)
    n_cyl = torch.where(cap, torch.cat([torch.zeros_like(h[..., :2]), torch.sign(h[..., 2:])], -1), radial)
    kind = kind[..., None]
    return torch.where(kind == ELLIPSOID, n_ell, torch.where(kind == BOX, n_box, n_cyl))


# ----------------------------------------------------------------------------------------------
# Procedural textures


def wave_noise(q: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
    """Smooth solid noise in [0,1] at points q (...,3): a sum of plane waves (...,M,4) =
    (angular frequency vector, phase). Cheaper than lattice noise and just as analytic."""
    s = torch.sin((q[..., None, :] * waves[..., :3]).sum(-1) + waves[..., 3]).sum(-1)
    return (0.5 + s / (2 * math.sqrt(2 * waves.shape[-2]))).clamp(0, 1)  # +-2 std of the sum (sqrt(M/2)) -> [0, 1]


def _texture(tex: Textures, idx: torch.Tensor, coords: torch.Tensor, footprint: torch.Tensor | None = None) -> torch.Tensor:
    """Albedo (...,3) of texture idx (...) at texture coordinates (...,3).

    footprint (...): size of the pixel on the surface, in the units of `coords` (metres on the
    planes). Patterns whose cells shrink below about a pixel fade to their mean (a and b mixed
    half and half) instead of aliasing into moire; None keeps every pattern at full contrast.
    """
    kind = tex.kind[idx]
    q = coords * tex.scale[idx][..., None] + tex.offset[idx]
    along = _dot(q, tex.direction[idx])
    m = torch.zeros_like(along)
    m = torch.where(kind == CHECKER, torch.floor(q).sum(-1).remainder(2), m)
    m = torch.where(kind == STRIPES, (torch.sin(2 * math.pi * along) > 0).to(m.dtype), m)
    m = torch.where(kind == GRADIENT, 0.5 + 0.5 * torch.sin(along), m)
    noisy = (kind == NOISE) | (kind == BLOBS)
    if noisy.any():  # noise costs a few sines per pixel: evaluate only where needed
        n = wave_noise(q[noisy], tex.waves[idx[noisy]])
        blob = ((n - 0.5) / 0.04).clamp(0, 1)  # a sharp threshold on smooth noise
        m[noisy] = torch.where(kind[noisy] == BLOBS, blob, n)
    if footprint is not None:
        cells = footprint * tex.scale[idx]  # pattern cells per pixel
        m = 0.5 + (m - 0.5) * (1.5 - cells).clamp(0, 1)
    return tex.color_a[idx] + (tex.color_b[idx] - tex.color_a[idx]) * m[..., None]


# ----------------------------------------------------------------------------------------------
# Rendering


def render(
    scene: Scene,
    c2w: torch.Tensor,
    fxfycxcy: torch.Tensor,
    times: torch.Tensor,
    height: int,
    width: int,
    device=None,
    supersample: int = 1,
    shadows: bool = True,
    filter_textures: bool = True,
    max_elements: int = 1 << 23,
) -> torch.Tensor:
    """Exact images of `scene` seen by cameras c2w (B,4,4), fxfycxcy (B,4) at times (B,) seconds.

    Returns (B,3,H,W) float32 in [0,1] on `device` (default: c2w's device). supersample=s renders
    at s x the resolution and box-filters down (anti-aliasing). filter_textures fades ground and
    wall patterns to their mean colour where their cells get smaller than a pixel (far away or at
    grazing angles), which removes moire; with it off, every pixel is the exact colour at its
    centre ray at any resolution. Frames are processed in chunks of about max_elements ray-object
    pairs to bound memory.
    """
    device = torch.device(device) if device is not None else c2w.device
    scene = scene.to(device)
    c2w = c2w.to(device, torch.float32)
    fxfycxcy = fxfycxcy.to(device, torch.float32) * supersample  # exact for +0.5 pixel centres
    times = times.to(device, torch.float32)
    H, W = height * supersample, width * supersample
    kinds = scene.objects.kind.tolist()
    per_chunk = max(1, max_elements // (H * W * max(1, len(kinds))))
    out = []
    for i in range(0, c2w.shape[0], per_chunk):
        sl = slice(i, i + per_chunk)
        img = _render_frames(scene, kinds, c2w[sl], fxfycxcy[sl], times[sl], H, W, shadows, filter_textures)
        if supersample > 1:
            img = F.avg_pool2d(img, supersample)
        out.append(img)
    if not out:
        return torch.zeros(0, 3, height, width, device=device)
    return torch.cat(out).clamp(0, 1)


def trace(scene: Scene, c2w, fxfycxcy, times, height: int, width: int, device=None):
    """What each pixel sees: distance along its ray (B,H,W) (inf: sky) and object index (B,H,W)
    (-1: the environment or the sky). Same arguments as render()."""
    device = torch.device(device) if device is not None else c2w.device
    scene = scene.to(device)
    c2w, fxfycxcy, times = c2w.to(device, torch.float32), fxfycxcy.to(device, torch.float32), times.to(device, torch.float32)
    o, d, R, p, s = _primary_rays(scene, c2w, fxfycxcy, times, height, width)
    t_obj, i_obj, t_env, _ = _intersect(scene, scene.objects.kind.tolist(), o, d, R, p, s)
    obj = torch.where(t_obj < t_env, i_obj, -1)
    depth = _from_tiles(torch.minimum(t_obj, t_env)[..., None], height, width)[:, 0]
    return depth, _from_tiles(obj[..., None], height, width)[:, 0]


def _primary_rays(scene, c2w, fxfycxcy, times, H, W):
    """Camera origins (B,1,3), pixel directions (B,N,3) in tile-major order over the image padded
    to whole tiles, and the object poses at the frames' times."""
    B = c2w.shape[0]
    Hp, Wp = -(-H // TILE_SIDE) * TILE_SIDE, -(-W // TILE_SIDE) * TILE_SIDE
    origins, dirs = pixel_rays(c2w, fxfycxcy, Hp, Wp)  # the padding extends right and down
    d = dirs.reshape(B, Hp // TILE_SIDE, TILE_SIDE, Wp // TILE_SIDE, TILE_SIDE, 3).transpose(2, 3).reshape(B, -1, 3)
    R, p, s = object_poses(scene.objects, times)  # (B,O,3,3), (B,O,3), (B,O,3)
    return origins[:, 0, :1], d, R, p, s


def _from_tiles(x, H, W):
    """(B,N,C) in tile-major order -> (B,C,H,W), padding cropped."""
    B, N, C = x.shape
    Hp, Wp = -(-H // TILE_SIDE) * TILE_SIDE, -(-W // TILE_SIDE) * TILE_SIDE
    x = x.reshape(B, Hp // TILE_SIDE, Wp // TILE_SIDE, TILE_SIDE, TILE_SIDE, C).transpose(2, 3).reshape(B, Hp, Wp, C)
    return x[:, :H, :W].permute(0, 3, 1, 2)


def _intersect(scene, kinds, o, d, R, p, s):
    t_obj, i_obj = _trace_objects(kinds, R, p, s, o, d)  # (B,N)
    t_env, i_env = _trace_planes(scene.plane_normal, scene.plane_offset, o, d)
    return t_obj, i_obj, t_env, i_env


def _render_frames(scene: Scene, kinds, c2w, fxfycxcy, times, H, W, shadows, filter_textures):
    B = c2w.shape[0]
    o, d, R, p, s = _primary_rays(scene, c2w, fxfycxcy, times, H, W)
    t_obj, i_obj, t_env, i_env = _intersect(scene, kinds, o, d, R, p, s)
    on_object = t_obj < t_env
    t = torch.minimum(t_obj, t_env)
    hit = torch.isfinite(t)
    x = o + torch.where(hit, t, 0.0)[..., None] * d  # (B,N,3) hit point

    # Surface frame: objects in their unit frame, planes by their fixed normal and axes.
    h = n_obj = plane_uv = plane_n = torch.zeros_like(x)
    if kinds:
        rows = torch.arange(B, device=o.device)[:, None]
        R_px, p_px, s_px = R[rows, i_obj], p[rows, i_obj], s[rows, i_obj]  # (B,N,3,3), (B,N,3), (B,N,3)
        h = _rot_t(R_px, x - p_px) / s_px  # local unit-shape point
        n_obj = F.normalize(_rot(R_px, _local_normal(h, scene.objects.kind[i_obj]) / s_px), dim=-1)
    P = scene.plane_normal.shape[0]
    if P:
        plane_uv = torch.stack([_dot(x, scene.plane_u[i_env]), _dot(x, scene.plane_v[i_env]), torch.zeros_like(t)], -1)
        plane_n = scene.plane_normal[i_env]
    normal = torch.where(on_object[..., None], n_obj, plane_n)
    footprint = None
    if filter_textures:  # only the planes reach far enough for their patterns to alias
        slant = _dot(d, normal).abs().clamp(min=0.05)
        footprint = torch.where(on_object, 0.0, t / (fxfycxcy[:, :1] * slant))  # metres per pixel
    albedo = _texture(scene.textures, torch.where(on_object, P + i_obj, i_env), torch.where(on_object[..., None], h, plane_uv), footprint)

    # Lambert + ambient, hard shadows cast by the objects (planes bound the scene, never occlude).
    light = scene.light
    to_light = light[:3] - x * light[3]
    light_dist = torch.where(light[3] > 0, to_light.norm(dim=-1), torch.inf)
    L = F.normalize(to_light, dim=-1)
    lambert = _dot(normal, L).clamp(min=0)
    if shadows and kinds:
        sun = light[3] == 0  # parallel shadow rays: one direction per frame
        t_occ, _ = _trace_objects(kinds, R, p, s, x + 1e-3 * normal, L[:, :1] if sun else L)
        lambert = torch.where(t_occ < light_dist, 0.0, lambert)
    color = albedo * (scene.ambient + (1 - scene.ambient) * lambert)[..., None]

    # Sky: horizon-to-zenith gradient, plus a sun glow when the light is the sun.
    up = d[..., 2:].clamp(0, 1).sqrt()
    sky = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * up
    sky = sky + (1 - light[3]) * _dot(d, F.normalize(light[:3], dim=0)).clamp(min=0)[..., None] ** 256
    img = torch.where(hit[..., None], color, sky)
    return _from_tiles(img, H, W)


# ----------------------------------------------------------------------------------------------
# Scene generation


def _u(g, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(shape or (), generator=g)


def _pick(g, options):
    return options[int(torch.randint(len(options), (1,), generator=g))]


def _unit(g, *shape):
    return F.normalize(torch.randn(*shape, 3, generator=g), dim=-1)


def _random_texture(g, kinds, scale=(1.0, 3.0), dark=0.05, bright=0.95) -> dict:
    a = _u(g, dark, bright, 3)
    b = (a + _u(g, 0.25, 0.6) * _pick(g, [-1.0, 1.0]) * _unit(g)).clamp(0.02, 0.98)  # contrasting partner
    return dict(
        kind=_pick(g, kinds), color_a=a, color_b=b, scale=float(_u(g, *scale)),
        offset=_u(g, 0.1, 0.9, 3), direction=_unit(g),
        waves=torch.cat([_unit(g, 6) * _u(g, 2.0, 5.0, 6, 1), _u(g, 0, 2 * math.pi, 6, 1)], -1),
    )  # fmt: skip


_OBJECT_TEXTURES = [FLAT, CHECKER, STRIPES, NOISE, GRADIENT, BLOBS]


def _random_shape(g) -> tuple[int, torch.Tensor]:
    kind = _pick(g, [ELLIPSOID, ELLIPSOID, BOX, BOX, CYLINDER])
    if kind == ELLIPSOID:
        size = _u(g, 0.2, 0.45).expand(3).clone() if torch.rand((), generator=g) < 0.5 else _u(g, 0.15, 0.45, 3)
    elif kind == BOX:
        size = _u(g, 0.15, 0.4, 3)
    else:
        r = _u(g, 0.15, 0.35)
        size = torch.stack([r, r, _u(g, 0.2, 0.45)])
    return kind, size


def _moving_object(g, region: float, floor: float, scale: float = 1.0) -> dict:
    """A shape with one random motion (straight ping-pong, curved loop, bounce or spin in place)."""
    kind, size = _random_shape(g)
    size = size * scale
    motion = _pick(g, ["linear", "curved", "bounce", "spin"])
    reach = 0.0
    obj = dict(kind=kind, size=size)
    if motion == "linear":
        reach = float(_u(g, 0.6, 0.5 * region))
        heading = F.normalize(torch.randn(2, generator=g), dim=0)
        obj.update(lin=torch.cat([reach * heading, torch.zeros(1)]), lin_freq=_u(g, 0.08, 0.25))
    elif motion == "curved":
        reach = float(_u(g, 0.5, 0.5 * region))
        phi = float(_u(g, 0, 2 * math.pi))
        obj.update(
            amp=torch.tensor([reach, reach * float(_u(g, 0.4, 1.0)), float(_u(g, 0.0, 0.3))]),
            freq=_u(g, 0.08, 0.3) * _pick(g, [-1.0, 1.0]),
            phase=torch.tensor([phi, phi + math.pi / 2, float(_u(g, 0, 6.28))]),
        )
    elif motion == "bounce":
        obj.update(bounce=_u(g, 0.3, 1.0), bounce_freq=_u(g, 0.4, 1.0), bounce_phase=_u(g, 0, math.pi))
    if motion == "spin" or torch.rand((), generator=g) < 0.5:
        obj.update(spin_axis=_unit(g), spin_rate=_u(g, 0.5, 2.5) * _pick(g, [-1.0, 1.0]))
    if kind == BOX and torch.rand((), generator=g) < 0.5:
        obj["rot0"] = axis_angle(_unit(g), _u(g, 0, math.pi))
    extent = float(size.max())
    radius = max(0.0, region - reach - extent)
    ang = float(_u(g, 0, 2 * math.pi))
    rad = float(_u(g, 0, 1).sqrt()) * radius
    z = floor + extent + (float(_u(g, 0, 0.8)) if motion != "bounce" and torch.rand((), generator=g) < 0.3 else 0.0)
    obj["pos"] = torch.tensor([rad * math.cos(ang), rad * math.sin(ang), z])
    return obj


def _static_object(g, center_xy, floor: float, scale=1.0) -> dict:
    kind, size = _random_shape(g)
    size = size * scale
    obj = dict(kind=kind, size=size, pos=torch.tensor([center_xy[0], center_xy[1], floor + float(size[2])]))
    if kind == BOX:
        obj["rot0"] = axis_angle(torch.tensor([0.0, 0.0, 1.0]), _u(g, 0, math.pi))
    return obj


def _pulsing_ellipsoid(g, region: float, floor: float) -> dict:
    a = float(_u(g, 0.15, 0.3))
    r = _u(g, 0.3, 0.45, 3)
    ang = float(_u(g, 0, 2 * math.pi))
    rad = float(_u(g, 0, 1)) * max(0.0, region - 0.6)
    return dict(
        kind=ELLIPSOID, size=r, pulse=torch.tensor([a, a, -a]),  # squash and stretch
        pulse_freq=_u(g, 0.4, 1.2), pulse_phase=_u(g, 0, 6.28), spin_axis=torch.tensor([0.0, 0.0, 1.0]),
        spin_rate=_u(g, -1.0, 1.0), pos=torch.tensor([rad * math.cos(ang), rad * math.sin(ang), floor + 0.75]),
    )  # fmt: skip


def _pendulum(g, pivot: torch.Tensor, length: float, first: int) -> list[dict]:
    """Two-link pendulum hanging from `pivot`: rod, elbow ball, rod, bob (objects first..first+3)."""
    axis = torch.cat([_unit(g)[:2], torch.zeros(1)])
    axis = F.normalize(axis, dim=0)
    l1, l2 = 0.55 * length, 0.45 * length
    down1, down2 = torch.tensor([0.0, 0.0, -l1 / 2]), torch.tensor([0.0, 0.0, -l2 / 2])
    rod1 = dict(kind=BOX, size=torch.tensor([0.04, 0.04, l1 / 2]), pos=pivot, arm=down1, swing_axis=axis,
                swing_amp=_u(g, 0.4, 0.8), swing_freq=_u(g, 0.3, 0.6), swing_phase=_u(g, 0, 6.28))
    elbow = dict(kind=ELLIPSOID, size=torch.full((3,), 0.08), parent=first, pos=down1)
    rod2 = dict(kind=BOX, size=torch.tensor([0.035, 0.035, l2 / 2]), parent=first, pos=down1, arm=down2,
                swing_axis=axis, swing_amp=_u(g, 0.5, 1.0), swing_freq=_u(g, 0.5, 1.1), swing_phase=_u(g, 0, 6.28))
    bob = dict(kind=ELLIPSOID, size=_u(g, 0.15, 0.25).expand(3).clone(), parent=first + 2, pos=down2)
    return [rod1, elbow, rod2, bob]  # fmt: skip


def _room(g):
    hx, hy, hz = float(_u(g, 3.6, 5.5)), float(_u(g, 3.6, 5.5)), float(_u(g, 2.6, 3.4))
    ex, ey, ez = torch.eye(3)
    # Inward normals; offset such that normal . x = offset on the plane.
    normals = torch.stack([ez, -ez, ex, -ex, ey, -ey])
    offsets = torch.tensor([0.0, -hz, -hx, -hx, -hy, -hy])
    plane_u = torch.stack([ex, ex, ey, ey, ex, ex])
    plane_v = torch.stack([ey, ey, ez, ez, ez, ez])
    floor_tex = _random_texture(g, [CHECKER, STRIPES, NOISE, BLOBS], scale=(0.8, 2.0))
    wall_tex = [_random_texture(g, [FLAT, NOISE, STRIPES, BLOBS, GRADIENT], scale=(0.4, 1.5)) for _ in range(4)]
    ceil_tex = _random_texture(g, [FLAT, NOISE], scale=(0.3, 1.0), dark=0.6)
    region = 2.0
    objs = [_static_object(g, (r * math.cos(a), r * math.sin(a)), 0.0)
            for r, a in ((float(_u(g, 0.8, 1.6)), float(_u(g, 0, 6.28))) for _ in range(int(torch.randint(1, 4, (1,), generator=g))))]  # fmt: skip
    objs += [_moving_object(g, region, 0.0) for _ in range(int(torch.randint(2, 5, (1,), generator=g)))]
    if torch.rand((), generator=g) < 0.7:
        if torch.rand((), generator=g) < 0.5:
            objs.append(_pulsing_ellipsoid(g, region, 0.0))
        else:
            pivot = torch.tensor([float(_u(g, -1, 1)), float(_u(g, -1, 1)), hz])
            objs += _pendulum(g, pivot, float(_u(g, 1.4, hz - 0.6)), len(objs))
    env = dict(
        plane_normal=normals, plane_offset=offsets, plane_u=plane_u, plane_v=plane_v,
        light=torch.tensor([float(_u(g, -1, 1)), float(_u(g, -1, 1)), hz - 0.3, 1.0]),
        ambient=float(_u(g, 0.25, 0.4)), sky_horizon=torch.zeros(3), sky_zenith=torch.zeros(3),
        look=torch.tensor([0.0, 0.0, float(_u(g, 0.6, 1.0))]),
        cam_radius=(2.8, min(hx, hy) - 0.6), cam_height=(1.0, 2.0),
    )  # fmt: skip
    return env, [floor_tex, ceil_tex, *wall_tex], objs


def _sky(g):
    horizon = _u(g, 0.7, 0.95, 3)
    zenith = torch.stack([_u(g, 0.15, 0.45), _u(g, 0.35, 0.6), _u(g, 0.7, 0.95)])
    return horizon, zenith


def _sun(g):
    elev, azim = float(_u(g, 0.45, 1.15)), float(_u(g, 0, 2 * math.pi))
    return torch.tensor([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev), 0.0])


def _ground():
    ex, ey, ez = torch.eye(3)
    return dict(plane_normal=ez[None], plane_offset=torch.zeros(1), plane_u=ex[None], plane_v=ey[None])


def _outdoor(g):
    ground_tex = _random_texture(g, [CHECKER, NOISE, BLOBS, STRIPES], scale=(0.3, 1.0))
    region = 2.5
    objs = []
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):  # props beyond the camera ring
        r, a = float(_u(g, 8.0, 12.0)), float(_u(g, 0, 2 * math.pi))
        objs.append(_static_object(g, (r * math.cos(a), r * math.sin(a)), 0.0, scale=float(_u(g, 2.0, 4.0))))
    objs += [_moving_object(g, region, 0.0, scale=1.6) for _ in range(int(torch.randint(2, 6, (1,), generator=g)))]
    if torch.rand((), generator=g) < 0.6:
        if torch.rand((), generator=g) < 0.5:
            objs.append(_pulsing_ellipsoid(g, region, 0.0))
        else:  # pendulum from a static gantry beam
            pivot = torch.tensor([float(_u(g, -1.5, 1.5)), float(_u(g, -1.5, 1.5)), float(_u(g, 2.2, 2.8))])
            objs.append(dict(kind=BOX, size=torch.tensor([0.6, 0.06, 0.06]), pos=pivot + torch.tensor([0.0, 0.0, 0.06])))
            objs += _pendulum(g, pivot, float(pivot[2]) - 0.5, len(objs))
    horizon, zenith = _sky(g)
    env = dict(
        **_ground(), light=_sun(g), ambient=float(_u(g, 0.3, 0.45)), sky_horizon=horizon, sky_zenith=zenith,
        look=torch.tensor([0.0, 0.0, float(_u(g, 0.4, 1.0))]), cam_radius=(4.0, 6.0), cam_height=(0.8, 2.5),
    )  # fmt: skip
    return env, [ground_tex], objs


def _object_centric(g):
    ground_tex = _random_texture(g, [FLAT, CHECKER, NOISE], scale=(0.5, 1.5))
    r, hh = float(_u(g, 0.7, 1.0)), float(_u(g, 0.2, 0.4))
    pedestal = dict(kind=CYLINDER, size=torch.tensor([r, r, hh]), pos=torch.tensor([0.0, 0.0, hh]))
    objs = [pedestal]
    for _ in range(int(torch.randint(1, 3, (1,), generator=g))):  # on the pedestal
        o = _moving_object(g, 0.5 * r, 2 * hh)
        o.update(lin=torch.zeros(3), amp=torch.zeros(3))  # stay on top: spin, bounce or rest
        objs.append(o)
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):  # circling around it
        kind, size = _random_shape(g)
        rad, phi = float(_u(g, r + 0.5, 2.2)), float(_u(g, 0, 2 * math.pi))
        objs.append(dict(kind=kind, size=size, pos=torch.tensor([0.0, 0.0, float(size[2]) + float(_u(g, 0, 0.6))]),
                         amp=torch.tensor([rad, rad, 0.0]), freq=_u(g, 0.1, 0.3) * _pick(g, [-1.0, 1.0]),
                         phase=torch.tensor([phi, phi + math.pi / 2, 0.0]), spin_axis=_unit(g), spin_rate=_u(g, -2, 2)))  # fmt: skip
    if torch.rand((), generator=g) < 0.5:
        objs.append(_pulsing_ellipsoid(g, 2.0, 0.0))
    else:
        pivot = torch.tensor([0.0, 0.0, float(_u(g, 2.6, 3.0))])
        objs += _pendulum(g, pivot, float(pivot[2]) - 2 * hh - 0.9, len(objs))
    horizon, zenith = _sky(g)
    env = dict(
        **_ground(), light=_sun(g), ambient=float(_u(g, 0.3, 0.45)), sky_horizon=horizon * 0.9, sky_zenith=zenith * 0.8,
        look=torch.tensor([0.0, 0.0, 2 * hh + 0.3]), cam_radius=(3.4, 5.0), cam_height=(1.0, 3.0),
    )  # fmt: skip
    return env, [ground_tex], objs


_FAMILY_BUILDERS = {"room": _room, "outdoor": _outdoor, "object": _object_centric}


def make_scene(seed: int, family: str | None = None) -> Scene:
    """A random scene, a pure function of (seed, family). family=None draws it from the seed."""
    g = torch.Generator().manual_seed(int(seed))
    drawn = _pick(g, FAMILIES)  # always drawn, so the rest of the stream does not depend on `family`
    family = family or drawn
    if family not in _FAMILY_BUILDERS:
        raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
    env, plane_tex, objs = _FAMILY_BUILDERS[family](g)
    object_tex = [_random_texture(g, _OBJECT_TEXTURES, scale=(1.0, 3.0)) for _ in objs]
    return Scene(seed=int(seed), family=family, objects=_stack_objects(objs), textures=_stack_textures(plane_tex + object_tex), **env)


# ----------------------------------------------------------------------------------------------
# Camera paths


@dataclass
class CameraPath:
    """A smooth camera path around scene.look, defined for any time t (seconds).

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
        r = (self.r_mid + self.dolly * _tri(self.dolly_freq * t + self.dolly_phase)).clamp(*self.r_range)
        z = self.height + self.height_amp * torch.sin(2 * math.pi * self.height_freq * t)
        eye = self.look + torch.stack([r * torch.cos(theta), r * torch.sin(theta), z - self.look[2]], -1)
        side = torch.stack([-torch.sin(theta), torch.cos(theta), torch.zeros_like(theta)], -1)
        target = self.look + side * (self.pan_amp * torch.sin(2 * math.pi * self.pan_freq * t + self.pan_phase))[:, None]
        shake = (self.jitter_amp * torch.sin(2 * math.pi * self.jitter_freq * t[:, None, None, None] + self.jitter_phase)).sum(2)
        return look_at_batch(eye + shake[:, 0], target + shake[:, 1])

    def fxfycxcy(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n,4) intrinsics for (height, width) images: fy from fov_y, fx = fy, centred."""
        f = 0.5 * height / math.tan(0.5 * self.fov_y)
        return torch.tensor([f, f, width / 2, height / 2], dtype=torch.float32).repeat(n, 1)


def frame_times(num_frames: int, fps: float = 24.0, start: float = 0.0) -> torch.Tensor:
    """(N,) float64 timestamps in seconds of consecutive frames."""
    return start + torch.arange(num_frames, dtype=torch.float64) / fps


def make_path(scene: Scene, kind: str | None = None, variant: int = 0) -> CameraPath:
    """A camera path for `scene`, a pure function of (scene.seed, kind, variant)."""
    g = torch.Generator().manual_seed(int(scene.seed) * 7919 + 104729 + int(variant))
    drawn = _pick(g, ["orbit", "orbit", "dolly", "pan", "handheld"] if scene.family != "object" else ["orbit", "orbit", "orbit", "handheld", "dolly"])
    kind = kind or drawn
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown camera path kind {kind!r}; expected one of {PATH_KINDS}")
    r0, r1 = scene.cam_radius
    h0, h1 = scene.cam_height
    sign = _pick(g, [-1.0, 1.0])
    p = dict(
        kind=kind, look=scene.look.clone(), theta0=float(_u(g, 0, 2 * math.pi)), omega=0.0,
        r_mid=float(_u(g, r0, r1)), dolly=0.0, dolly_freq=0.1, dolly_phase=float(_u(g, 0, 1)), r_range=(r0, r1),
        height=float(_u(g, h0, h1)), height_amp=float(_u(g, 0.0, 0.2)), height_freq=float(_u(g, 0.05, 0.2)),
        pan_amp=0.0, pan_freq=0.1, pan_phase=float(_u(g, 0, 6.28)), fov_y=math.radians(float(_u(g, 45.0, 70.0))),
    )  # fmt: skip
    shake = 0.01
    if kind == "orbit":
        p.update(omega=sign * float(_u(g, 0.15, 0.4)), pan_amp=float(_u(g, 0.0, 0.3)))
    elif kind == "dolly":  # forward/backward at constant speed, slight drift sideways
        p.update(omega=sign * float(_u(g, 0.0, 0.05)), r_mid=(r0 + r1) / 2, dolly=(r1 - r0) / 2, dolly_freq=float(_u(g, 0.05, 0.15)))
    elif kind == "pan":  # camera nearly still, looking across the scene
        p.update(r_mid=float(_u(g, (r0 + r1) / 2, r1)), omega=sign * float(_u(g, 0.0, 0.05)),
                 pan_amp=float(_u(g, 1.0, 2.5)), pan_freq=float(_u(g, 0.05, 0.15)))  # fmt: skip
    else:  # hand-held: slow walk around the scene with a shaky hand
        p.update(omega=sign * float(_u(g, 0.05, 0.2)), dolly=(r1 - r0) / 4, dolly_freq=float(_u(g, 0.05, 0.1)),
                 r_mid=(r0 + r1) / 2)  # fmt: skip
        shake = 0.06
    K = 3
    p["jitter_amp"] = shake * _u(g, 0.3, 1.0, 2, K, 3) * torch.tensor([1.0, 2.5])[:, None, None]
    p["jitter_freq"] = _u(g, 0.2, 1.5, 2, K, 3)
    p["jitter_phase"] = _u(g, 0, 2 * math.pi, 2, K, 3)
    return CameraPath(**p)


def novel_cameras(scene: Scene, c2w: torch.Tensor, generator: torch.Generator, shift=(0.5, 1.5)) -> torch.Tensor:
    """Cameras displaced off a trajectory: c2w (N,4,4) -> (N,4,4).

    Each eye moves by a random offset of length in `shift` (metres; mostly sideways), is kept in
    the scene's camera region, and looks at what the original camera looked at (the point on
    its optical axis as deep as scene.look), give or take 0.2 m.
    """
    c2w = c2w.cpu()
    N = c2w.shape[0]
    eye, fwd = c2w[:, :3, 3], c2w[:, :3, 2]
    depth = _dot(scene.look - eye, fwd).clamp(min=1.0)
    target = eye + fwd * depth[:, None]
    direction = F.normalize(torch.randn(N, 3, generator=generator) * torch.tensor([1.0, 1.0, 0.4]), dim=-1)
    new_eye = eye + direction * (shift[0] + (shift[1] - shift[0]) * torch.rand(N, 1, generator=generator))
    rel = new_eye[:, :2] - scene.look[:2]
    r = rel.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    new_xy = scene.look[:2] + rel / r * r.clamp(*scene.cam_radius)
    new_z = new_eye[:, 2:].clamp(*scene.cam_height)
    new_target = target + 0.2 * torch.randn(N, 3, generator=generator)
    return look_at_batch(torch.cat([new_xy, new_z], -1), new_target)

"""Exact ray casting against a synthetic scene: which object or plane each ray hits, and where.

A ray (o, d) is mapped into each object's unit frame, where the entry distance is the same as in
the world. Most rays miss most objects, so rays are handled in tiles of TILE neighbouring pixels
(8x8 on screen): a tile's rays start inside a small ball and point inside a narrow cone, and the
exact test runs only for (tile, object) pairs where that bundle can reach the object's bounding
sphere -- typically a few percent of all pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsm.cameras import pixel_rays
from fsm.data.synthetic.scene import BOX, CYLINDER, ELLIPSOID, Scene, object_poses
from fsm.data.synthetic.vec import dot, rot

EPS = 1e-4  # minimum ray distance (metres): keeps shadow rays off their own surface
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
        beta = torch.acos(dot(tiles, axis[:, :, None]).amin(2).clamp(-1, 1))
    return centre, rho, axis, beta


def trace_objects(kinds: list[int], R, p, s, o, d):
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
    angle = torch.acos((dot(to_obj, axis[:, None]) / dist.clamp(min=1e-9)).clamp(-1, 1))
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
        o_local = rot(A_pair, o_pair - p_pair)
        d_local = rot(A_pair, d_pair)
        t[b, j, n] = hit(o_local.unbind(-1), d_local.unbind(-1))
    return t.min(1)


def _trace_planes(normal, offset, o, d):
    """Nearest one-sided plane hit (only from the side the normal points to). -> t, index (B,N)."""
    if normal.shape[0] == 0:
        return torch.full(d.shape[:2], torch.inf, device=d.device), torch.zeros(d.shape[:2], dtype=torch.long, device=d.device)
    denom = dot(d[..., None, :], normal)  # (B,N,P)
    t = (offset - dot(o[..., None, :], normal)) / torch.where(denom < -1e-8, denom, torch.full_like(denom, -1.0))
    t = torch.where((denom < -1e-8) & (t > EPS), t, torch.inf)
    return t.min(-1)


def local_normal(h, kind):
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
# Whole frames: one ray per pixel centre, in tile-major order


def trace(scene: Scene, c2w, fxfycxcy, times, height: int, width: int, device=None):
    """What each pixel sees: distance along its ray (B,H,W) (inf: sky) and object index (B,H,W)
    (-1: the environment or the sky). Same arguments as shading.render()."""
    device = torch.device(device) if device is not None else c2w.device
    scene = scene.to(device)
    c2w, fxfycxcy, times = c2w.to(device, torch.float32), fxfycxcy.to(device, torch.float32), times.to(device, torch.float32)
    o, d, R, p, s = primary_rays(scene, c2w, fxfycxcy, times, height, width)
    t_obj, i_obj, t_env, _ = intersect(scene, scene.objects.kind.tolist(), o, d, R, p, s)
    obj = torch.where(t_obj < t_env, i_obj, -1)
    depth = from_tiles(torch.minimum(t_obj, t_env)[..., None], height, width)[:, 0]
    return depth, from_tiles(obj[..., None], height, width)[:, 0]


def primary_rays(scene, c2w, fxfycxcy, times, H, W):
    """Camera origins (B,1,3), pixel directions (B,N,3) in tile-major order over the image padded
    to whole tiles, and the object poses at the frames' times."""
    B = c2w.shape[0]
    Hp, Wp = -(-H // TILE_SIDE) * TILE_SIDE, -(-W // TILE_SIDE) * TILE_SIDE
    origins, dirs = pixel_rays(c2w, fxfycxcy, Hp, Wp)  # the padding extends right and down
    d = dirs.reshape(B, Hp // TILE_SIDE, TILE_SIDE, Wp // TILE_SIDE, TILE_SIDE, 3).transpose(2, 3).reshape(B, -1, 3)
    R, p, s = object_poses(scene.objects, times)  # (B,O,3,3), (B,O,3), (B,O,3)
    return origins[:, 0, :1], d, R, p, s


def from_tiles(x, H, W):
    """(B,N,C) in tile-major order -> (B,C,H,W), padding cropped."""
    B, N, C = x.shape
    Hp, Wp = -(-H // TILE_SIDE) * TILE_SIDE, -(-W // TILE_SIDE) * TILE_SIDE
    x = x.reshape(B, Hp // TILE_SIDE, Wp // TILE_SIDE, TILE_SIDE, TILE_SIDE, C).transpose(2, 3).reshape(B, Hp, Wp, C)
    return x[:, :H, :W].permute(0, 3, 1, 2)


def intersect(scene, kinds, o, d, R, p, s):
    """Nearest object hit t_obj, i_obj (B,N) and nearest plane hit t_env, i_env (B,N) (t = inf: none)."""
    t_obj, i_obj = trace_objects(kinds, R, p, s, o, d)  # (B,N)
    t_env, i_env = _trace_planes(scene.plane_normal, scene.plane_offset, o, d)
    return t_obj, i_obj, t_env, i_env


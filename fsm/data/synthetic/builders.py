"""Random scenes: make_scene(seed, family) builds a Scene as a pure function of its arguments.

Three families: a closed box room seen from inside ("room"), a ground plane under a sky with
props far out ("outdoor"), a pedestal with objects on and around it ("object"). Each holds static
and moving objects (straight ping-pong paths, curved loops, bounces, spins), often a pulsing
ellipsoid or a two-link pendulum. Everything is drawn from a CPU torch.Generator seeded by the
seed, so the same seed gives bit-identical tensors everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsm.data.synthetic.scene import (
    BLOBS, BOX, CHECKER, CYLINDER, ELLIPSOID, FLAT, GRADIENT, NOISE, STRIPES, Objects, Scene, Textures, new_objects,
)  # fmt: skip
from fsm.data.synthetic.vec import axis_angle

FAMILIES = ("room", "outdoor", "object")

# ----------------------------------------------------------------------------------------------
# Random draws


def uniform(g, lo, hi, *shape):
    """Uniform draws in [lo, hi) of the given shape (a 0-d tensor when none)."""
    return lo + (hi - lo) * torch.rand(shape or (), generator=g)


def pick(g, options):
    """One of `options`, uniformly."""
    return options[int(torch.randint(len(options), (1,), generator=g))]


def _unit(g, *shape):
    """Uniform random unit vectors (*shape, 3)."""
    return F.normalize(torch.randn(*shape, 3, generator=g), dim=-1)


# ----------------------------------------------------------------------------------------------
# Textures and objects (builder dicts: Textures / Objects field names -> values)


def _random_texture(g, kinds, scale=(1.0, 3.0), dark=0.05, bright=0.95) -> dict:
    a = uniform(g, dark, bright, 3)
    b = (a + uniform(g, 0.25, 0.6) * pick(g, [-1.0, 1.0]) * _unit(g)).clamp(0.02, 0.98)  # contrasting partner
    return dict(
        kind=pick(g, kinds), color_a=a, color_b=b, scale=float(uniform(g, *scale)),
        offset=uniform(g, 0.1, 0.9, 3), direction=_unit(g),
        waves=torch.cat([_unit(g, 6) * uniform(g, 2.0, 5.0, 6, 1), uniform(g, 0, 2 * math.pi, 6, 1)], -1),
    )  # fmt: skip


_OBJECT_TEXTURES = [FLAT, CHECKER, STRIPES, NOISE, GRADIENT, BLOBS]


def _random_shape(g) -> tuple[int, torch.Tensor]:
    kind = pick(g, [ELLIPSOID, ELLIPSOID, BOX, BOX, CYLINDER])
    if kind == ELLIPSOID:
        size = uniform(g, 0.2, 0.45).expand(3).clone() if torch.rand((), generator=g) < 0.5 else uniform(g, 0.15, 0.45, 3)
    elif kind == BOX:
        size = uniform(g, 0.15, 0.4, 3)
    else:
        r = uniform(g, 0.15, 0.35)
        size = torch.stack([r, r, uniform(g, 0.2, 0.45)])
    return kind, size


def _moving_object(g, region: float, floor: float, scale: float = 1.0) -> dict:
    """A shape with one random motion (straight ping-pong, curved loop, bounce or spin in place)."""
    kind, size = _random_shape(g)
    size = size * scale
    motion = pick(g, ["linear", "curved", "bounce", "spin"])
    reach = 0.0
    obj = dict(kind=kind, size=size)
    if motion == "linear":
        reach = float(uniform(g, 0.6, 0.5 * region))
        heading = F.normalize(torch.randn(2, generator=g), dim=0)
        obj.update(lin=torch.cat([reach * heading, torch.zeros(1)]), lin_freq=uniform(g, 0.08, 0.25))
    elif motion == "curved":
        reach = float(uniform(g, 0.5, 0.5 * region))
        phi = float(uniform(g, 0, 2 * math.pi))
        obj.update(
            amp=torch.tensor([reach, reach * float(uniform(g, 0.4, 1.0)), float(uniform(g, 0.0, 0.3))]),
            freq=uniform(g, 0.08, 0.3) * pick(g, [-1.0, 1.0]),
            phase=torch.tensor([phi, phi + math.pi / 2, float(uniform(g, 0, 6.28))]),
        )
    elif motion == "bounce":
        obj.update(bounce=uniform(g, 0.3, 1.0), bounce_freq=uniform(g, 0.4, 1.0), bounce_phase=uniform(g, 0, math.pi))
    if motion == "spin" or torch.rand((), generator=g) < 0.5:
        obj.update(spin_axis=_unit(g), spin_rate=uniform(g, 0.5, 2.5) * pick(g, [-1.0, 1.0]))
    if kind == BOX and torch.rand((), generator=g) < 0.5:
        obj["rot0"] = axis_angle(_unit(g), uniform(g, 0, math.pi))
    extent = float(size.max())
    radius = max(0.0, region - reach - extent)
    ang = float(uniform(g, 0, 2 * math.pi))
    rad = float(uniform(g, 0, 1).sqrt()) * radius
    z = floor + extent + (float(uniform(g, 0, 0.8)) if motion != "bounce" and torch.rand((), generator=g) < 0.3 else 0.0)
    obj["pos"] = torch.tensor([rad * math.cos(ang), rad * math.sin(ang), z])
    return obj


def _static_object(g, center_xy, floor: float, scale=1.0) -> dict:
    kind, size = _random_shape(g)
    size = size * scale
    obj = dict(kind=kind, size=size, pos=torch.tensor([center_xy[0], center_xy[1], floor + float(size[2])]))
    if kind == BOX:
        obj["rot0"] = axis_angle(torch.tensor([0.0, 0.0, 1.0]), uniform(g, 0, math.pi))
    return obj


def _pulsing_ellipsoid(g, region: float, floor: float) -> dict:
    a = float(uniform(g, 0.15, 0.3))
    r = uniform(g, 0.3, 0.45, 3)
    ang = float(uniform(g, 0, 2 * math.pi))
    rad = float(uniform(g, 0, 1)) * max(0.0, region - 0.6)
    return dict(
        kind=ELLIPSOID, size=r, pulse=torch.tensor([a, a, -a]),  # squash and stretch
        pulse_freq=uniform(g, 0.4, 1.2), pulse_phase=uniform(g, 0, 6.28), spin_axis=torch.tensor([0.0, 0.0, 1.0]),
        spin_rate=uniform(g, -1.0, 1.0), pos=torch.tensor([rad * math.cos(ang), rad * math.sin(ang), floor + 0.75]),
    )  # fmt: skip


def _pendulum(g, pivot: torch.Tensor, length: float, first: int) -> list[dict]:
    """Two-link pendulum hanging from `pivot`: rod, elbow ball, rod, bob (objects first..first+3)."""
    axis = torch.cat([_unit(g)[:2], torch.zeros(1)])
    axis = F.normalize(axis, dim=0)
    l1, l2 = 0.55 * length, 0.45 * length
    down1, down2 = torch.tensor([0.0, 0.0, -l1 / 2]), torch.tensor([0.0, 0.0, -l2 / 2])
    rod1 = dict(kind=BOX, size=torch.tensor([0.04, 0.04, l1 / 2]), pos=pivot, arm=down1, swing_axis=axis,
                swing_amp=uniform(g, 0.4, 0.8), swing_freq=uniform(g, 0.3, 0.6), swing_phase=uniform(g, 0, 6.28))
    elbow = dict(kind=ELLIPSOID, size=torch.full((3,), 0.08), parent=first, pos=down1)
    rod2 = dict(kind=BOX, size=torch.tensor([0.035, 0.035, l2 / 2]), parent=first, pos=down1, arm=down2,
                swing_axis=axis, swing_amp=uniform(g, 0.5, 1.0), swing_freq=uniform(g, 0.5, 1.1), swing_phase=uniform(g, 0, 6.28))
    bob = dict(kind=ELLIPSOID, size=uniform(g, 0.15, 0.25).expand(3).clone(), parent=first + 2, pos=down2)
    return [rod1, elbow, rod2, bob]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Families


def _room(g):
    hx, hy, hz = float(uniform(g, 3.6, 5.5)), float(uniform(g, 3.6, 5.5)), float(uniform(g, 2.6, 3.4))
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
    objs = []
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):  # furniture
        r, a = float(uniform(g, 0.8, 1.6)), float(uniform(g, 0, 6.28))
        objs.append(_static_object(g, (r * math.cos(a), r * math.sin(a)), 0.0))
    objs += [_moving_object(g, region, 0.0) for _ in range(int(torch.randint(2, 5, (1,), generator=g)))]
    if torch.rand((), generator=g) < 0.7:
        if torch.rand((), generator=g) < 0.5:
            objs.append(_pulsing_ellipsoid(g, region, 0.0))
        else:
            pivot = torch.tensor([float(uniform(g, -1, 1)), float(uniform(g, -1, 1)), hz])
            objs += _pendulum(g, pivot, float(uniform(g, 1.4, hz - 0.6)), len(objs))
    env = dict(
        plane_normal=normals, plane_offset=offsets, plane_u=plane_u, plane_v=plane_v,
        light=torch.tensor([float(uniform(g, -1, 1)), float(uniform(g, -1, 1)), hz - 0.3, 1.0]),
        ambient=float(uniform(g, 0.25, 0.4)), sky_horizon=torch.zeros(3), sky_zenith=torch.zeros(3),
        look=torch.tensor([0.0, 0.0, float(uniform(g, 0.6, 1.0))]),
        cam_radius=(2.8, min(hx, hy) - 0.6), cam_height=(1.0, 2.0),
    )  # fmt: skip
    return env, [floor_tex, ceil_tex, *wall_tex], objs


def _sky(g):
    horizon = uniform(g, 0.7, 0.95, 3)
    zenith = torch.stack([uniform(g, 0.15, 0.45), uniform(g, 0.35, 0.6), uniform(g, 0.7, 0.95)])
    return horizon, zenith


def _sun(g):
    elev, azim = float(uniform(g, 0.45, 1.15)), float(uniform(g, 0, 2 * math.pi))
    return torch.tensor([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev), 0.0])


def _ground():
    ex, ey, ez = torch.eye(3)
    return dict(plane_normal=ez[None], plane_offset=torch.zeros(1), plane_u=ex[None], plane_v=ey[None])


def _outdoor(g):
    ground_tex = _random_texture(g, [CHECKER, NOISE, BLOBS, STRIPES], scale=(0.3, 1.0))
    region = 2.5
    objs = []
    for _ in range(int(torch.randint(3, 7, (1,), generator=g))):  # props beyond the camera ring
        r, a = float(uniform(g, 8.0, 12.0)), float(uniform(g, 0, 2 * math.pi))
        objs.append(_static_object(g, (r * math.cos(a), r * math.sin(a)), 0.0, scale=float(uniform(g, 2.0, 4.0))))
    objs += [_moving_object(g, region, 0.0, scale=1.6) for _ in range(int(torch.randint(2, 6, (1,), generator=g)))]
    if torch.rand((), generator=g) < 0.6:
        if torch.rand((), generator=g) < 0.5:
            objs.append(_pulsing_ellipsoid(g, region, 0.0))
        else:  # pendulum from a static gantry beam
            pivot = torch.tensor([float(uniform(g, -1.5, 1.5)), float(uniform(g, -1.5, 1.5)), float(uniform(g, 2.2, 2.8))])
            objs.append(dict(kind=BOX, size=torch.tensor([0.6, 0.06, 0.06]), pos=pivot + torch.tensor([0.0, 0.0, 0.06])))
            objs += _pendulum(g, pivot, float(pivot[2]) - 0.5, len(objs))
    horizon, zenith = _sky(g)
    env = dict(
        **_ground(), light=_sun(g), ambient=float(uniform(g, 0.3, 0.45)), sky_horizon=horizon, sky_zenith=zenith,
        look=torch.tensor([0.0, 0.0, float(uniform(g, 0.4, 1.0))]), cam_radius=(4.0, 6.0), cam_height=(0.8, 2.5),
    )  # fmt: skip
    return env, [ground_tex], objs


def _object_centric(g):
    ground_tex = _random_texture(g, [FLAT, CHECKER, NOISE], scale=(0.5, 1.5))
    r, hh = float(uniform(g, 0.7, 1.0)), float(uniform(g, 0.2, 0.4))
    pedestal = dict(kind=CYLINDER, size=torch.tensor([r, r, hh]), pos=torch.tensor([0.0, 0.0, hh]))
    objs = [pedestal]
    for _ in range(int(torch.randint(1, 3, (1,), generator=g))):  # on the pedestal
        o = _moving_object(g, 0.5 * r, 2 * hh)
        o.update(lin=torch.zeros(3), amp=torch.zeros(3))  # stay on top: spin, bounce or rest
        objs.append(o)
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):  # circling around it
        kind, size = _random_shape(g)
        rad, phi = float(uniform(g, r + 0.5, 2.2)), float(uniform(g, 0, 2 * math.pi))
        objs.append(dict(kind=kind, size=size, pos=torch.tensor([0.0, 0.0, float(size[2]) + float(uniform(g, 0, 0.6))]),
                         amp=torch.tensor([rad, rad, 0.0]), freq=uniform(g, 0.1, 0.3) * pick(g, [-1.0, 1.0]),
                         phase=torch.tensor([phi, phi + math.pi / 2, 0.0]), spin_axis=_unit(g), spin_rate=uniform(g, -2, 2)))  # fmt: skip
    if torch.rand((), generator=g) < 0.5:
        objs.append(_pulsing_ellipsoid(g, 2.0, 0.0))
    else:
        pivot = torch.tensor([0.0, 0.0, float(uniform(g, 2.6, 3.0))])
        objs += _pendulum(g, pivot, float(pivot[2]) - 2 * hh - 0.9, len(objs))
    horizon, zenith = _sky(g)
    env = dict(
        **_ground(), light=_sun(g), ambient=float(uniform(g, 0.3, 0.45)), sky_horizon=horizon * 0.9, sky_zenith=zenith * 0.8,
        look=torch.tensor([0.0, 0.0, 2 * hh + 0.3]), cam_radius=(3.4, 5.0), cam_height=(1.0, 3.0),
    )  # fmt: skip
    return env, [ground_tex], objs


_FAMILY_BUILDERS = {"room": _room, "outdoor": _outdoor, "object": _object_centric}


def make_scene(seed: int, family: str | None = None) -> Scene:
    """A random scene, a pure function of (seed, family). family=None draws it from the seed."""
    g = torch.Generator().manual_seed(int(seed))
    drawn = pick(g, FAMILIES)  # always drawn, so the rest of the stream does not depend on `family`
    family = family or drawn
    if family not in _FAMILY_BUILDERS:
        raise ValueError(f"unknown scene family {family!r}; expected one of {FAMILIES}")
    env, plane_tex, objs = _FAMILY_BUILDERS[family](g)
    object_tex = [_random_texture(g, _OBJECT_TEXTURES, scale=(1.0, 3.0)) for _ in objs]
    return Scene(seed=int(seed), family=family, objects=_stack_objects(objs), textures=_stack_textures(plane_tex + object_tex), **env)


# ----------------------------------------------------------------------------------------------
# Builder dicts -> tensors


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

"""Procedural solid textures and shading: what colour a traced pixel gets.

Textures (flat, checker, stripes, value noise, gradient, blobs) are evaluated at the hit point,
so any resolution is exact. One light (directional sun or point lamp), Lambert + ambient shading,
hard shadows cast by the objects; rays that hit nothing see a sky gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsm.data.synthetic.scene import BLOBS, CHECKER, GRADIENT, NOISE, STRIPES, Scene, Textures
from fsm.data.synthetic.tracing import from_tiles, intersect, local_normal, primary_rays, trace_objects
from fsm.data.synthetic.vec import dot, rot, rot_t

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
    along = dot(q, tex.direction[idx])
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


def _render_frames(scene: Scene, kinds, c2w, fxfycxcy, times, H, W, shadows, filter_textures):
    """One chunk of render(): trace, texture, light and shadow; (B,3,H,W), not yet clamped."""
    B = c2w.shape[0]
    o, d, R, p, s = primary_rays(scene, c2w, fxfycxcy, times, H, W)
    t_obj, i_obj, t_env, i_env = intersect(scene, kinds, o, d, R, p, s)
    on_object = t_obj < t_env
    t = torch.minimum(t_obj, t_env)
    hit = torch.isfinite(t)
    x = o + torch.where(hit, t, 0.0)[..., None] * d  # (B,N,3) hit point

    # Surface frame: objects in their unit frame, planes by their fixed normal and axes.
    h = n_obj = plane_uv = plane_n = torch.zeros_like(x)
    if kinds:
        rows = torch.arange(B, device=o.device)[:, None]
        R_px, p_px, s_px = R[rows, i_obj], p[rows, i_obj], s[rows, i_obj]  # (B,N,3,3), (B,N,3), (B,N,3)
        h = rot_t(R_px, x - p_px) / s_px  # local unit-shape point
        n_obj = F.normalize(rot(R_px, local_normal(h, scene.objects.kind[i_obj]) / s_px), dim=-1)
    P = scene.plane_normal.shape[0]
    if P:
        plane_uv = torch.stack([dot(x, scene.plane_u[i_env]), dot(x, scene.plane_v[i_env]), torch.zeros_like(t)], -1)
        plane_n = scene.plane_normal[i_env]
    normal = torch.where(on_object[..., None], n_obj, plane_n)
    footprint = None
    if filter_textures:  # only the planes reach far enough for their patterns to alias
        slant = dot(d, normal).abs().clamp(min=0.05)
        footprint = torch.where(on_object, 0.0, t / (fxfycxcy[:, :1] * slant))  # metres per pixel
    albedo = _texture(scene.textures, torch.where(on_object, P + i_obj, i_env), torch.where(on_object[..., None], h, plane_uv), footprint)

    # Lambert + ambient, hard shadows cast by the objects (planes bound the scene, never occlude).
    light = scene.light
    to_light = light[:3] - x * light[3]
    light_dist = torch.where(light[3] > 0, to_light.norm(dim=-1), torch.inf)
    L = F.normalize(to_light, dim=-1)
    lambert = dot(normal, L).clamp(min=0)
    if shadows and kinds:
        sun = light[3] == 0  # parallel shadow rays: one direction per frame
        t_occ, _ = trace_objects(kinds, R, p, s, x + 1e-3 * normal, L[:, :1] if sun else L)
        lambert = torch.where(t_occ < light_dist, 0.0, lambert)
    color = albedo * (scene.ambient + (1 - scene.ambient) * lambert)[..., None]

    # Sky: horizon-to-zenith gradient, plus a sun glow when the light is the sun.
    up = d[..., 2:].clamp(0, 1).sqrt()
    sky = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * up
    sky = sky + (1 - light[3]) * dot(d, F.normalize(light[:3], dim=0)).clamp(min=0)[..., None] ** 256
    img = torch.where(hit[..., None], color, sky)
    return from_tiles(img, H, W)

"""Rasterize 3D Gaussians: gsplat on CUDA tensors, our own tiled rasterizer elsewhere.

Our rasterizer projects in torch (autograd) and composites with a compiled C++ kernel
(fsm/raster_cpu.cpp, built on first use) on CPU float32/float64 tensors; where that kernel
cannot be built, or on other devices and dtypes, it composites in plain torch instead.

Both follow gsplat 1.5.3's classic rules, so a scene renders the same on either device:
  * pixel (u, v) has its centre at (u + 0.5, v + 0.5);
  * Gaussians with camera z outside [near, far] are culled (near 0.01 by default);
  * 2D covariance = J W Sigma W^T J^T + 0.3 I (W the world->camera rotation, J the Jacobian of
    the perspective projection, its x/z and y/z clamped to 30% of the half-FOV beyond the
    image edges as gsplat does); only the upper triangle of Sigma is read, as in gsplat;
  * alpha = min(0.999, opacity * exp(-0.5 d^T Sigma2d^-1 d)), skipped when < 1/255;
  * front-to-back in camera-z order; a pixel stops before the Gaussian that would bring its
    transmittance to <= 1e-4; colour + T * background.

Batch convention: one set of Gaussians (N,...) seen by C cameras. c2w (C,4,4) and fxfycxcy
(C,4) give (C,3,H,W) images; c2w (4,4) and fxfycxcy (4,) give (3,H,W).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from fsm import raster_cpu

# gsplat's constants (classic mode)
EPS_2D = 0.3  # added to the 2D covariance's diagonal: every splat covers about a pixel
ALPHA_MIN = 1.0 / 255.0  # smaller alphas are skipped
ALPHA_MAX = 0.999  # one splat never makes a pixel fully opaque
T_STOP = 1e-4  # transmittance at which a pixel is done
MAX_EXTENT = 3.33  # bounding box half-size in standard deviations
TILE = 16
LOG_ALPHA_FLOOR = math.log(ALPHA_MIN) - 3.0  # exp() of less is below ALPHA_MIN for any opacity <= 1
LOG_T_FLOOR = math.log(T_STOP) - 3.0  # transmittance below T_STOP is never used
BLOCK = 64  # Gaussians composited per step before checking which tiles are done
CPU_KERNEL = True  # composite CPU tensors with the compiled kernel when it builds (False: the pure-torch path)


class Render(NamedTuple):
    rgb: torch.Tensor  # (C?,3,H,W)
    alpha: torch.Tensor  # (C?,1,H,W) accumulated opacity, 1 - final transmittance
    depth: torch.Tensor  # (C?,1,H,W) accumulated camera z, sum_i w_i z_i (divide by alpha for the mean)


def rasterize(
    means: torch.Tensor,
    covars: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    c2w: torch.Tensor,
    fxfycxcy: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor | None = None,
    near: float = 0.01,
    far: float = 1e10,
) -> Render:
    """Render Gaussians means (N,3), covars (N,3,3), colors (N,3), opacities (N,) from cameras
    c2w (C?,4,4) OpenCV, fxfycxcy (C?,4) to images of width x height; background (3,) or
    (C,3), black when None. Differentiable w.r.t. the Gaussians.

    CUDA tensors go to gsplat, anything else to rasterize_torch (gsplat has no CPU path and
    must never see CPU tensors). An empty scene (nothing left after pruning) takes the torch
    path on any device: it just fills in the background.
    """
    if means.is_cuda and len(means) > 0:
        return rasterize_gsplat(means, covars, colors, opacities, c2w, fxfycxcy, width, height, background, near, far)
    return rasterize_torch(means, covars, colors, opacities, c2w, fxfycxcy, width, height, background, near, far)


def _cameras(c2w, fxfycxcy, background, n_channels, like):
    """Batch the cameras: -> w2c (C,4,4), fxfycxcy (C,4), background (C,D), unbatched flag."""
    single = c2w.dim() == 2
    if single != (fxfycxcy.dim() == 1) or c2w.shape[-2:] != (4, 4) or fxfycxcy.shape[-1] != 4:
        raise ValueError(f"rasterize: c2w must be (4,4) or (C,4,4) and fxfycxcy (4,) or (C,4) alike, got {tuple(c2w.shape)} and {tuple(fxfycxcy.shape)}")
    c2w, fxfycxcy = c2w.reshape(-1, 4, 4).to(like), fxfycxcy.reshape(-1, 4).to(like)
    C = c2w.shape[0]
    if background is None:
        background = like.new_zeros(n_channels)
    background = background.to(like).expand(C, n_channels)
    return torch.linalg.inv(c2w), fxfycxcy, background, single


def _check_gaussians(means, covars, colors, opacities):
    N = means.shape[0]
    if means.shape != (N, 3) or covars.shape != (N, 3, 3) or colors.shape[0] != N or colors.dim() != 2 or opacities.shape != (N,):
        raise ValueError(
            "rasterize: expected means (N,3), covars (N,3,3), colors (N,D), opacities (N,), got "
            f"{tuple(means.shape)}, {tuple(covars.shape)}, {tuple(colors.shape)}, {tuple(opacities.shape)}"
        )


def _unbatch(out: Render, single: bool) -> Render:
    return Render(*(x[0] for x in out)) if single else out


# ----------------------------------------------------------------------------------------------
# CUDA: gsplat


def rasterize_gsplat(means, covars, colors, opacities, c2w, fxfycxcy, width, height, background=None, near=0.01, far=1e10) -> Render:
    """Same contract as rasterize(), through gsplat.rasterization (CUDA tensors only)."""
    if not means.is_cuda:
        raise ValueError("rasterize_gsplat: gsplat only runs on CUDA tensors; use rasterize_torch on CPU")
    from gsplat import rasterization  # imported here: importing gsplat is slow and not needed on CPU

    _check_gaussians(means, covars, colors, opacities)
    w2c, fxfycxcy, background, single = _cameras(c2w, fxfycxcy, background, colors.shape[1], means)
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    Ks = torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], -1).reshape(-1, 3, 3)
    out, alpha, _ = rasterization(
        means, None, None, opacities, colors, w2c, Ks, width, height,
        near_plane=near, far_plane=far, eps2d=EPS_2D, packed=False, tile_size=TILE,
        backgrounds=background, render_mode="RGB+D", rasterize_mode="classic", covars=covars,
    )  # (C,H,W,D+1), (C,H,W,1)
    out, alpha = out.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)
    return _unbatch(Render(out[:, :-1], alpha, out[:, -1:]), single)


# ----------------------------------------------------------------------------------------------
# Anywhere: our own tiled rasterizer (projection in torch; compositing in the compiled CPU
# kernel, else in plain torch where autograd gives the backward pass)


def project_gaussians(means, covars, opacities, w2c, fxfycxcy, width, height, near=0.01, far=1e10):
    """EWA projection of N Gaussians into C cameras, as gsplat does it.

    Returns means2d (C,N,2) pixels, conics (C,N,3) = upper triangle of Sigma2d^-1, depths (C,N)
    camera z, radii (C,N,2) integer bounding-box half-sizes in pixels (0 = culled, not
    differentiable).
    """
    # Written out per component on (C,N) planes: with millions of tiny 3x3 matrices, batched
    # matmuls and reductions over size-3 dims cost several times more on the CPU.
    R, t = w2c[:, :3, :3, None], w2c[:, :3, 3, None]  # (C,3,3,1), (C,3,1): R[:, i, j] is (C,1)
    # Read the upper triangle only (gsplat's convention, so gradients land in the same entries).
    cov9 = covars.reshape(-1, 9).unbind(-1)  # one unbind: its backward is one stack, not 9 scatters
    S = [[cov9[3 * min(i, j) + max(i, j)] for j in range(3)] for i in range(3)]  # 3x3 of (N,)
    m = means.unbind(-1)  # 3 x (N,)
    dot = lambda u, v: u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    px, py, pz = (dot([R[:, i, j] for j in range(3)], m) + t[:, i] for i in range(3))  # (C,N) camera space
    in_range = (pz >= near) & (pz <= far)
    z = torch.where(in_range, pz, torch.ones_like(pz))  # culled ones must not put inf/nan into autograd

    fx, fy, cx, cy = (fxfycxcy[:, i, None] for i in range(4))  # (C,1)
    # gsplat clamps x/z and y/z in the Jacobian to 30% of the half-FOV outside the image, which
    # tames the linearisation for splats far off-screen.
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * 0.5 * width / fx, cx / fx + 0.3 * 0.5 * width / fx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * 0.5 * height / fy, cy / fy + 0.3 * 0.5 * height / fy
    x_z = torch.minimum(torch.maximum(px / z, -lim_x_neg), lim_x_pos)  # (C,N)
    y_z = torch.minimum(torch.maximum(py / z, -lim_y_neg), lim_y_pos)
    # Rows of M = J R with J = [[fx/z, 0, -fx x_z/z], [0, fy/z, -fy y_z/z]]; Sigma2d = M Sigma M^T.
    fx_z, fy_z = fx / z, fy / z
    M0 = [fx_z * (R[:, 0, j] - x_z * R[:, 2, j]) for j in range(3)]  # 3 x (C,N)
    M1 = [fy_z * (R[:, 1, j] - y_z * R[:, 2, j]) for j in range(3)]
    M0S = [dot(M0, [S[i][j] for i in range(3)]) for j in range(3)]  # row 0 of M Sigma
    a, b = dot(M0S, M0) + EPS_2D, dot(M0S, M1)  # (C,N) upper triangle of Sigma2d + 0.3 I
    c = dot([dot(M1, [S[i][j] for i in range(3)]) for j in range(3)], M1) + EPS_2D
    det = a * c - b * b
    ok = in_range & (det > 0) & (a > 0)  # Sigma2d positive definite (else gsplat skips every pixel)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)  # (C,N,3)
    means2d = torch.stack([fx_z * px + cx, fy_z * py + cy], -1)  # (C,N,2)

    with torch.no_grad():
        # Opacity-aware box: beyond sqrt(2 ln(255 opacity)) std devs alpha < 1/255 anyway.
        op = opacities.detach()[None].expand_as(z)
        ok = ok & (op >= ALPHA_MIN)
        extent = torch.sqrt(2 * torch.log(op.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=MAX_EXTENT)
        radii = torch.ceil(extent[..., None] * torch.stack([a, c], -1).detach().sqrt())  # (C,N,2)
        m = means2d.detach()
        on_screen = (m + radii > 0).all(-1) & (m[..., 0] - radii[..., 0] < width) & (m[..., 1] - radii[..., 1] < height)
        radii = torch.where((ok & on_screen)[..., None], radii, torch.zeros_like(radii)).long()
    return means2d, conics, pz, radii


def rasterize_torch(
    means, covars, colors, opacities, c2w, fxfycxcy, width, height, background=None, near=0.01, far=1e10,
    chunk_elements: int = 1 << 22,
) -> Render:
    """Same contract as rasterize(), on any device (the CPU path).

    On CPU float32/float64 tensors the compositing runs in the compiled kernel (raster_cpu,
    same rules and tiles, per pixel front to back with an analytic backward pass) unless
    CPU_KERNEL is False or it cannot be built. Otherwise, in torch:

    Tiled like gsplat: each Gaussian is listed in the 16x16 tiles its box touches; one global
    sort by (tile, depth) orders every tile's list front to back. Chunks of tiles then walk
    their lists in blocks of BLOCK Gaussians, composited densely (pixels x Gaussians, padded),
    until every pixel of a tile has stopped. A step handles at most `chunk_elements`
    pixel-Gaussian pairs; under autograd each step is checkpointed (recomputed in the backward
    pass), so memory holds only the per-step inputs, not the (pixels x Gaussians) tensors.
    """
    _check_gaussians(means, covars, colors, opacities)
    w2c, fxfycxcy, background, single = _cameras(c2w, fxfycxcy, background, colors.shape[1], means)
    C, N, D = w2c.shape[0], means.shape[0], colors.shape[1]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_tiles = C * tiles_y * tiles_x

    means2d, conics, depths, radii = project_gaussians(means, covars, opacities, w2c, fxfycxcy, width, height, near, far)

    if CPU_KERNEL and means.device.type == "cpu" and means.dtype in (torch.float32, torch.float64) and raster_cpu.load():
        colors, opacities = colors.to(means.dtype), opacities.to(means.dtype)
        feat, T = raster_cpu.Composite.apply(means2d, conics, depths, colors, opacities, radii, width, height)
        T = T[:, None]  # (C,1,H,W)
        rgb = feat[:, :D] + T * background[:, :, None, None]
        return _unbatch(Render(rgb, 1 - T, feat[:, D:]), single)

    with torch.no_grad():
        # Tile boxes [lo, hi) per Gaussian and camera, as gsplat computes them.
        m = means2d.detach()
        lo = torch.floor((m - radii) / TILE).clamp(min=0)
        hi = torch.ceil((m + radii) / TILE)
        lo = torch.minimum(lo, m.new_tensor([tiles_x, tiles_y])).long()
        hi = torch.minimum(hi.clamp(min=0), m.new_tensor([tiles_x, tiles_y])).long()
        visible = (radii > 0).all(-1)
        size = (hi - lo) * visible[..., None]  # (C,N,2)
        n_isect = (size[..., 0] * size[..., 1]).flatten()  # (C*N,) tiles per (camera, Gaussian)

        # One row per (Gaussian, tile) intersection; key = (global tile id, depth rank).
        gid = torch.repeat_interleave(torch.arange(C * N, device=m.device), n_isect)  # (I,)
        first = torch.cumsum(n_isect, 0) - n_isect
        local = torch.arange(gid.shape[0], device=m.device) - first[gid]
        w = size.flatten(0, 1)[gid, 0]
        lo_flat = lo.flatten(0, 1)[gid]
        tile_x, tile_y = lo_flat[:, 0] + local % w, lo_flat[:, 1] + local // w
        tile = (gid // N) * (tiles_y * tiles_x) + tile_y * tiles_x + tile_x  # (I,)
        depth_rank = torch.empty(C * N, dtype=torch.long, device=m.device)
        depth_rank[torch.argsort(depths.detach().flatten())] = torch.arange(C * N, device=m.device)
        order = torch.argsort(tile * (C * N) + depth_rank[gid])
        sorted_gid, sorted_tile = gid[order], tile[order]
        tile_count = torch.bincount(sorted_tile, minlength=n_tiles)  # (n_tiles,)
        tile_first = torch.cumsum(tile_count, 0) - tile_count

    # Per (camera, Gaussian) attributes, plus one padding row (index C*N) that never contributes.
    log_op = torch.log(opacities.clamp(min=1e-30))[None].expand(C, N).flatten()
    half_conic = conics * conics.new_tensor([0.5, 1.0, 0.5])  # so that sigma = 0.5 d^T conic d costs less
    attrs = torch.cat(
        [means2d.flatten(0, 1), half_conic.flatten(0, 1), log_op[:, None], depths.flatten()[:, None], colors.repeat(C, 1)], 1
    )  # (C*N, 2+3+1+1+D)
    pad = torch.zeros_like(attrs[:1])
    pad[:, 5] = -torch.inf  # log-opacity of the padding: alpha = 0
    attrs = torch.cat([attrs, pad])

    # Render the non-empty tiles, a chunk of tiles at a time (the longest lists last, so tiles
    # in a chunk have similar lengths). Within a chunk, walk the lists front to back in blocks
    # of BLOCK Gaussians carrying each pixel's transmittance, and drop a tile as soon as all its
    # pixels have stopped (as gsplat's thread blocks do): most of a long list lies behind
    # opaque pixels and is never evaluated.
    tiles = torch.nonzero(tile_count).flatten()
    tiles = tiles[torch.argsort(tile_count[tiles])]
    tiles_per_chunk = max(1, chunk_elements // (TILE * TILE * BLOCK))
    use_checkpoint = torch.is_grad_enabled() and attrs.requires_grad
    results, done = [], []
    for start in range(0, len(tiles), tiles_per_chunk):
        chunk = tiles[start : start + tiles_per_chunk]
        pix = _tile_pixels(chunk, tiles_x, tiles_y, attrs.dtype)  # (T,P,2)
        count, first = tile_count[chunk], tile_first[chunk]
        acc = attrs.new_zeros(len(chunk), TILE * TILE, 1 + D)  # depth, colour
        log_T = attrs.new_zeros(len(chunk), TILE * TILE)
        stopped = (pix[..., 0] > width) | (pix[..., 1] > height)  # pixels beyond the image edge never count
        active = torch.arange(len(chunk), device=m.device)
        for k0 in range(0, int(count.max()), BLOCK):
            active = active[(count[active] > k0) & ~stopped[active].all(-1)]
            if len(active) == 0:
                break
            with torch.no_grad():
                slot = k0 + torch.arange(BLOCK, device=m.device)
                idx = first[active, None] + slot  # (A,BLOCK)
                idx = torch.where(slot < count[active, None], sorted_gid[idx.clamp(max=len(sorted_gid) - 1)], C * N)
            args = (attrs[idx], pix[active], log_T[active], stopped[active])
            part, log_T_new, stopped_new = (checkpoint(_composite_block, *args, use_reentrant=False) if use_checkpoint else _composite_block(*args))
            acc = acc.index_add(0, active, part)
            log_T = log_T.index_copy(0, active, log_T_new)
            stopped = stopped.index_copy(0, active, stopped_new)
        results.append(torch.cat([acc[..., 1:], acc[..., :1], log_T.exp()[..., None]], -1))
        done.append(chunk)

    # Empty tiles: nothing drawn, transmittance 1. Layout per tile: [colour D, depth, T].
    empty = attrs.new_zeros(n_tiles, TILE * TILE, D + 2)
    empty[..., -1] = 1
    per_tile = empty.index_copy(0, torch.cat(done), torch.cat(results)) if done else empty
    img = per_tile.reshape(C, tiles_y, tiles_x, TILE, TILE, D + 2).permute(0, 5, 1, 3, 2, 4)
    img = img.reshape(C, D + 2, tiles_y * TILE, tiles_x * TILE)[..., :height, :width]
    T = img[:, -1:]
    rgb = img[:, :D] + T * background[:, :, None, None]
    return _unbatch(Render(rgb, 1 - T, img[:, D : D + 1]), single)


def _tile_pixels(tiles: torch.Tensor, tiles_x: int, tiles_y: int, dtype) -> torch.Tensor:
    """Pixel centres (T,256,2) of global tile ids (T,), row-major inside the tile."""
    local = tiles % (tiles_x * tiles_y)
    ty, tx = local // tiles_x, local % tiles_x
    r = torch.arange(TILE, device=tiles.device)
    v, u = torch.meshgrid(r, r, indexing="ij")
    u = tx[:, None] * TILE + u.flatten() + 0.5
    v = ty[:, None] * TILE + v.flatten() + 0.5
    return torch.stack([u, v], -1).to(dtype)


def _composite_block(g, pix, log_T, stopped):
    """Composite the next block of depth-sorted Gaussians g (A,K,7+D) = [mean2d 2, conic 3
    with its diagonal halved, log opacity, depth, colour D] over pixels pix (A,P,2) whose log transmittance is log_T
    (A,P) and whose stop flag is stopped (A,P).

    Returns this block's [depth, colour] sum (A,P,1+D), the new log_T and stop flags.
    """
    dx = g[:, None, :, 0] - pix[..., 0, None]  # (A,P,K)
    dy = g[:, None, :, 1] - pix[..., 1, None]
    a, b, c = (g[:, None, :, i] for i in (2, 3, 4))
    sigma = dx * (a * dx + b * dy) + c * dy * dy  # 0.5 d^T Sigma2d^-1 d, >= 0 (conic is positive definite)
    # Exponents are clamped where the result is discarded anyway (alpha < 1/255 below
    # LOG_ALPHA_FLOOR, undrawn below LOG_T_FLOOR): exp of very negative numbers produces
    # denormals, which are many times slower on CPUs.
    alpha = torch.exp((g[:, None, :, 5] - sigma).clamp(min=LOG_ALPHA_FLOOR)).clamp(max=ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, 0.0)
    # Transmittance in log space: a cumulative sum instead of a product (stable, cheap backward).
    log_keep = torch.log1p(-alpha)
    log_T_after = log_T[..., None] + torch.cumsum(log_keep, -1)  # log T after each Gaussian
    # The stop rule as a mask: from the first Gaussian with T_after <= T_STOP on, nothing is
    # drawn. T_after only decreases, so the drawn ones are a prefix and keep their T_before.
    drawn = (log_T_after > math.log(T_STOP)) & ~stopped[..., None]
    T_before = torch.exp((log_T_after - log_keep).clamp(min=LOG_T_FLOOR))
    weight = torch.where(drawn, alpha * T_before, 0.0)  # (A,P,K)
    log_T_new = log_T + torch.where(drawn, log_keep, 0.0).sum(-1)
    return weight @ g[..., 6:], log_T_new, stopped | (log_T_after[..., -1] <= math.log(T_STOP))

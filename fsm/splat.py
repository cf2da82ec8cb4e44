"""Render 4D Gaussians: slice at a time, optionally cull, rasterize (one scene, one camera).

The one render path of the 4DGS head, shared by training (fsm.model.render_gaussians, the
batched loop of FSM.forward) and the viewer (fsm.stream.StreamSession). What differs between
them is an argument:

    training:  render_4dgs(g, t, c2w, K, W, H)                      all Gaussians (every one gets
                                                                    a gradient), black background
    viewer:    render_4dgs(g, t, c2w, K, W, H, cull_below=MARGINAL_CULL, background=bg, clamp=True)

The geometry-grounded head (fsm/geohead.py) lays its Gaussians out frame by frame and renders a
time t from the frames nearest t (frame_times=..., front=..., fill=...), the same call in both.
"""

from __future__ import annotations

import torch

from fsm.gaussians import Gaussians3D, Gaussians4D, slice_4dgs
from fsm.raster import ALPHA_MIN, rasterize

# The 4DGS reference culls Gaussians whose temporal marginal is <= 0.05 at render time.
MARGINAL_CULL = 0.05


def slice_visible(g: Gaussians4D, t, cull_below: float | None = None) -> Gaussians3D:
    """The 3D Gaussians of one scene (N,) at normalised time t.

    cull_below: drop Gaussians whose temporal marginal is below it (an approximation: the
    4DGS reference's 0.05) and those whose opacity is below the rasterizer's ALPHA_MIN (they
    can never be drawn: dropping them is exact). None keeps every Gaussian."""
    if cull_below is None:
        return slice_4dgs(g, t)
    g3 = slice_4dgs(g, t, prune_below=cull_below)
    return g3[g3.opacities >= ALPHA_MIN]


def render_4dgs(
    g: Gaussians4D,
    t,
    c2w: torch.Tensor,
    fxfycxcy: torch.Tensor,
    width: int,
    height: int,
    cull_below: float | None = None,
    background: torch.Tensor | None = None,
    clamp: bool = False,
    frame_times: torch.Tensor | None = None,
    front: int = 1,
    fill: int = 0,
) -> torch.Tensor:
    """One scene's Gaussians (N,) seen by one camera (4,4), (4,) at normalised time t -> (3, H, W).

    cull_below: see slice_visible. background (3,): default black. clamp: clip to [0, 1]
    (display; training keeps the raw composite so no gradient is cut).

    frame_times (V,): the Gaussians come frame by frame (N = V * pixels). The `front` frames
    nearest t are composited over the next `fill` nearest ones, which show only through the
    front layer's holes (disocclusions, the border of its view), over the background — by
    default the front frames' mean colour rather than black, which a hole never is."""
    if frame_times is None:
        return _render(g, t, c2w, fxfycxcy, width, height, cull_below, background, clamp)[0]
    order = frame_order(frame_times, t)
    near = select_frames(g, frame_times.shape[0], order[:front])
    if background is None:
        background = near.rgb.detach().mean(0)
    if fill <= 0 or len(order) <= front:
        return _render(near, t, c2w, fxfycxcy, width, height, cull_below, background, clamp)[0]
    rgb, alpha = _render(near, t, c2w, fxfycxcy, width, height, cull_below, None, False)
    behind, _ = _render(select_frames(g, frame_times.shape[0], order[front : front + fill]), t, c2w, fxfycxcy, width, height, cull_below, background, False)
    out = rgb + (1 - alpha) * behind
    return out.clamp(0, 1) if clamp else out


def _render(g, t, c2w, fxfycxcy, width, height, cull_below, background, clamp) -> tuple[torch.Tensor, torch.Tensor]:
    g3 = slice_visible(g, t, cull_below)
    out = rasterize(g3.means, g3.covariances, g3.rgb, g3.opacities, c2w, fxfycxcy, width, height, background)
    return (out.rgb.clamp(0, 1) if clamp else out.rgb), out.alpha


def frame_order(frame_times: torch.Tensor, t) -> torch.Tensor:
    """Frame indices (V,) sorted by distance of their time to t (ties: earlier index first)."""
    return (frame_times - torch.as_tensor(t, dtype=frame_times.dtype, device=frame_times.device)).abs().argsort(stable=True)


def select_frames(g: Gaussians4D, num_frames: int, frames: torch.Tensor) -> Gaussians4D:
    """The Gaussians of the given frames, from Gaussians laid out frame by frame (N = V * pixels)."""
    per_frame = g.mean_t.shape[-1] // num_frames
    idx = (frames[:, None] * per_frame + torch.arange(per_frame, device=frames.device)).reshape(-1)
    return g[idx]


def widen(g: Gaussians4D, c2w: torch.Tensor, fxfycxcy: torch.Tensor, footprint_px: float) -> Gaussians4D:
    """Gaussians laid out frame by frame (N = V * pixels) with their spatial scales widened in
    quadrature by footprint_px pixels of their own frame (cameras c2w (V,4,4), fxfycxcy (V,4)) at
    their distance from its camera."""
    per = g.mean_t.shape[0] // c2w.shape[0]
    centres = c2w[:, :3, 3].repeat_interleave(per, 0)  # (N,3)
    focal = fxfycxcy[:, :2].mean(-1).repeat_interleave(per, 0)  # (N,)
    extra = footprint_px * (g.means_xyz - centres).norm(dim=-1) / focal  # (N,) world std
    return Gaussians4D(**{**vars(g), "scales_xyz": (g.scales_xyz.square() + extra[:, None].square()).sqrt()})

"""Render 4D Gaussians: slice at a time, optionally cull, rasterize (one scene, one camera).

The one render path of the 4DGS head, shared by training (fsm.model.render_gaussians, the
batched loop of FSM.forward) and the viewer (fsm.stream.StreamSession). What differs between
them is an argument:

    training:  render_4dgs(g, t, c2w, K, W, H)                      all Gaussians (every one gets
                                                                    a gradient), black background
    viewer:    render_4dgs(g, t, c2w, K, W, H, cull_below=MARGINAL_CULL, background=bg, clamp=True)
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
) -> torch.Tensor:
    """One scene's Gaussians (N,) seen by one camera (4,4), (4,) at normalised time t -> (3, H, W).

    cull_below: see slice_visible. background (3,): default black. clamp: clip to [0, 1]
    (display; training keeps the raw composite so no gradient is cut)."""
    g3 = slice_visible(g, t, cull_below)
    rgb = rasterize(g3.means, g3.covariances, g3.rgb, g3.opacities, c2w, fxfycxcy, width, height, background).rgb
    return rgb.clamp(0, 1) if clamp else rgb

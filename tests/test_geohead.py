"""The geometry-grounded 4DGS head: plane sweep, the head's rules, frame-wise rendering, streaming."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fsm.cameras import look_at, pixel_rays, project_points
from fsm.data.samples import HELDOUT_SCENES, heldout_samples
from fsm.data.synthetic import make_path, make_scene, render, trace
from fsm.geohead import (FOOTPRINT_PX, RAW_REST, CostRegularizer, EdgePropagation, GeoGaussianHead, depth_size, frame_spacing, oracle_gaussians,
                         plane_abs_rel_risk, shrink_views,
                         plane_cross_entropy, plane_readout, resample_head_planes, resample_planes, risk_min_plane)
from fsm.metrics import psnr
from fsm.patches import unpatchify
from fsm.model import FSM, render_gaussians
from fsm.planesweep import NO_COST, chunk_groups, log_depth_planes, plane_sweep_cost
from fsm.raster import rasterize
from fsm.splat import render_4dgs, select_frames, slice_visible
from fsm.stream import StreamSession

# ----------------------------------------------------------------------------------------------
# Plane sweep


def _bilinear(image, u, v):
    """Reference bilinear lookup of (3,H,W) at continuous pixel coords (centres at +0.5), zeros outside."""
    _, H, W = image.shape
    x, y = u - 0.5, v - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(3, dtype=image.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < W and 0 <= yi < H:
                out += w * image[:, yi, xi]
    return out


def _sweep_reference(images, c2w, K, depths, sources: dict[int, list[int]], keep: float = 1.0) -> torch.Tensor:
    """Per pixel and plane, in float64: each source's 3x3-window cost (its diffs over the window pixels it
    sees / their count); the round(keep * S) sources with the lowest such cost pooled (their window
    sums added, then divided), NO_COST where none sees anything. -> (len(sources), P, H, W)."""
    V, _, H, W = images.shape
    P = depths.shape[0]
    o, d = pixel_rays(c2w, K, H, W)
    box = lambda x: F.avg_pool2d(x.reshape(-1, 1, H, W), 3, 1, 1, count_include_pad=True).reshape(x.shape) * 9
    ref = torch.zeros(len(sources), P, H, W, dtype=torch.float64)
    for r, (i, src) in enumerate(sources.items()):
        diff = torch.zeros(len(src), P, H, W, dtype=torch.float64)
        valid = torch.zeros_like(diff)
        for k in range(P):
            for y in range(H):
                for x in range(W):
                    point = o[i, y, x] + depths[k].double() * d[i, y, x]
                    for s, j in enumerate(src):
                        uv, z = project_points(point[None], c2w[j], K[j])
                        u, v = uv[0].tolist()
                        if z.item() > 1e-6 and 0 <= u <= W and 0 <= v <= H:
                            valid[s, k, y, x] = 1
                            diff[s, k, y, x] = (_bilinear(images[j], u, v) - images[i, :, y, x]).abs().mean()
        num, den = box(diff * valid), box(valid)  # (S,P,H,W) window sums per source
        n = max(1, round(keep * len(src)))
        for k in range(P):
            for y in range(H):
                for x in range(W):
                    own = [num[s, k, y, x] / den[s, k, y, x] if den[s, k, y, x] > 0 else math.inf for s in range(len(src))]
                    best = sorted(range(len(src)), key=lambda s: own[s])[:n]
                    a, b = sum(num[s, k, y, x] for s in best), sum(den[s, k, y, x] for s in best)
                    ref[r, k, y, x] = a / b if b > 0 else NO_COST
    return ref


def _sweep_views(n: int, H: int = 6, W: int = 7):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, H, W, generator=g, dtype=torch.float64)
    xs = torch.linspace(-0.4, 0.5, n).tolist()
    c2w = torch.stack([look_at(torch.tensor([x, 0.1 * x, -3.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                               torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)) for x in xs])  # fmt: skip
    K = torch.tensor([[6.0, 6.5, 3.4, 3.1]] * n, dtype=torch.float64)
    return images, c2w, K, torch.tensor([2.0, 3.0, 4.5])


def test_plane_sweep_matches_a_per_pixel_reference():
    images, c2w, K, depths = _sweep_views(3)
    cost = plane_sweep_cost(images.float(), c2w.float(), K.float(), [[0, 1, 2]], depths)
    ref = _sweep_reference(images, c2w, K, depths, {0: [1, 2], 1: [0, 2], 2: [0, 1]})
    torch.testing.assert_close(cost.double(), ref, rtol=1e-4, atol=1e-4)
    # refs computes a subset, in the order asked for
    torch.testing.assert_close(plane_sweep_cost(images.float(), c2w.float(), K.float(), [[0, 1, 2]], depths, refs=[2, 0]), cost[[2, 0]])


def test_plane_sweep_with_earlier_groups_pools_the_sources_that_agree_best():
    """back = 1: a view's sources are its own group's and the group's before (not after); keep = 0.5 pools
    the best round(S / 2) of them at each pixel and plane, as the per-pixel reference picks them."""
    images, c2w, K, depths = _sweep_views(5)
    groups = [[0, 1], [2, 3], [4]]
    cost = plane_sweep_cost(images.float(), c2w.float(), K.float(), groups, depths, back=1, keep=0.5)
    sources = {0: [1], 1: [0], 2: [0, 1, 3], 3: [0, 1, 2], 4: [2, 3]}
    torch.testing.assert_close(cost.double(), _sweep_reference(images, c2w, K, depths, sources, keep=0.5), rtol=1e-4, atol=1e-4)
    # keep = 1 pools them all, back = 0 is the group alone
    every = plane_sweep_cost(images.float(), c2w.float(), K.float(), groups, depths, back=1)
    torch.testing.assert_close(every.double(), _sweep_reference(images, c2w, K, depths, sources), rtol=1e-4, atol=1e-4)
    alone = plane_sweep_cost(images.float(), c2w.float(), K.float(), groups, depths)
    torch.testing.assert_close(alone[:2], cost[:2])  # the first group has nothing before it
    assert not torch.allclose(alone[2:4], every[2:4])
    assert (alone[4] == NO_COST).all()  # a one-view group sees nothing but itself


def _textured_wall():
    """A room wall seen by 5 cameras on a pan path, spread sideways for enough baseline: (scene, path, times, c2w)."""
    scene = make_scene(3, "room")
    path = make_path(scene, "pan")
    times = torch.linspace(0, 1.5, 5, dtype=torch.float64)
    c2w = path.c2w(times)
    c2w[:, :3, 3] += torch.linspace(-0.3, 0.3, 5)[:, None] * c2w[:, :3, 0]
    return scene, path, times, c2w


def test_plane_sweep_finds_the_depth_of_a_textured_wall():
    """A room wall seen from a sideways-moving camera: the cheapest plane is the true depth."""
    scene, path, times, c2w = _textured_wall()
    K = path.fxfycxcy(5, 48, 48)
    images = render(scene, c2w, K, times, 48, 48, shadows=False)
    truth, obj = trace(scene, c2w, K, times, 48, 48)
    depths = log_depth_planes(0.5, 50.0, 48)
    cost = plane_sweep_cost(images, c2w, K, [[0, 1, 2, 3, 4]], depths)
    best = depths[cost[2].argmin(0)]
    static = (obj[2] < 0) & torch.isfinite(truth[2])
    rel = ((best - truth[2]).abs() / truth[2])[static]
    spacing = math.log(50.0 / 0.5) / 47
    assert (rel < math.exp(spacing) - 1 + 0.05).float().mean() > 0.6  # mostly within one plane


def test_the_sweep_on_shrunk_views_matches_views_rendered_at_that_size():
    """The textured wall above, rendered at 48x48 and area-downsampled to 24x24 with its intrinsics
    scaled (shrink_views): the intrinsics are those of a 24x24 camera, and the cheapest planes hit the
    true depth (traced at 24x24) about as often as on views rendered at 24x24 directly."""
    scene, path, times, c2w = _textured_wall()
    images = render(scene, c2w, path.fxfycxcy(5, 48, 48), times, 48, 48, shadows=False)
    small, K = shrink_views(images, path.fxfycxcy(5, 48, 48), 24, 24)
    torch.testing.assert_close(small, F.avg_pool2d(images, 2))
    torch.testing.assert_close(K, path.fxfycxcy(5, 24, 24).to(K))
    native = render(scene, c2w, path.fxfycxcy(5, 24, 24), times, 24, 24, shadows=False)
    truth, obj = trace(scene, c2w, path.fxfycxcy(5, 24, 24), times, 24, 24)
    depths = log_depth_planes(0.5, 50.0, 48)
    static = (obj[2] < 0) & torch.isfinite(truth[2])

    def within_a_plane(views):
        best = depths[plane_sweep_cost(views, c2w, K, [[0, 1, 2, 3, 4]], depths)[2].argmin(0)]
        rel = ((best - truth[2]).abs() / truth[2])[static]
        return (rel < math.exp(math.log(100.0) / 47) - 1 + 0.05).float().mean().item()

    shrunk, rendered = within_a_plane(small), within_a_plane(native)
    assert rendered > 0.4 and shrunk > rendered - 0.1, (shrunk, rendered)


def test_depth_size_is_the_smallest_integer_downsampling():
    assert depth_size(128, 128, None) == (128, 128)
    assert depth_size(64, 64, 64) == (64, 64)
    assert depth_size(128, 128, 64) == (64, 64)
    assert depth_size(128, 224, 64) == (64, 112)  # the short side decides
    assert depth_size(192, 256, 64) == (64, 85)
    assert depth_size(96, 96, 64) == (48, 48)


def test_chunk_groups():
    assert chunk_groups(5, 2) == [[0, 1], [2, 3], [4]]


# ----------------------------------------------------------------------------------------------
# The head's rules and the oracle


def _heldout(regime="sparse", n_in=6, n_tgt=3, size=32):
    return next(heldout_samples(regime, num_input=n_in, num_target=n_tgt, height=size, width=size, scenes=HELDOUT_SCENES[:1]))


def test_oracle_gaussians_sit_on_their_pixels_at_the_true_depth():
    s = _heldout()
    i = s.inputs
    gap = frame_spacing(i.times, chunk_groups(i.num_views, 2))
    g = oracle_gaussians(s.input_depth, i.images, i.c2w, i.fxfycxcy, i.times, gap, far=1e4)[0]
    H = W = 32
    per = H * W
    v = 3
    means = g.means_xyz[v * per : (v + 1) * per]
    uv, z = project_points(means, i.c2w[0, v], i.fxfycxcy[0, v])
    grid = torch.stack(torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")[::-1], -1).reshape(-1, 2)
    finite = torch.isfinite(s.input_depth[0, v]).reshape(-1)
    torch.testing.assert_close(uv[finite], grid[finite].float(), rtol=0, atol=2e-3)
    o, d = pixel_rays(i.c2w[0, v : v + 1], i.fxfycxcy[0, v : v + 1], H, W)
    dist = (means - o.reshape(-1, 3)).norm(dim=-1)
    torch.testing.assert_close(dist[finite], s.input_depth[0, v].reshape(-1)[finite], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g.rgb[v * per : (v + 1) * per], i.images[0, v].permute(1, 2, 0).reshape(-1, 3))
    # isotropic, FOOTPRINT_PX pixels wide at its depth; at its frame's time
    f = i.fxfycxcy[0, v, :2].mean()
    torch.testing.assert_close(g.scales_xyz[v * per : (v + 1) * per][finite, 0], FOOTPRINT_PX * dist[finite] / f, rtol=1e-4, atol=1e-6)
    assert torch.equal(g.mean_t[v * per : (v + 1) * per], i.times[0, v].expand(per))


def test_oracle_renders_its_own_input_view():
    s = _heldout(size=48)
    i = s.inputs
    gap = frame_spacing(i.times, chunk_groups(i.num_views, 2))
    g = oracle_gaussians(s.input_depth, i.images, i.c2w, i.fxfycxcy, i.times, gap, far=1e4)
    own = render_gaussians(g, i, 48, 48, i.times, front=1, fill=0)[0]
    assert psnr(own.clamp(0, 1), i.images[0]).min() > 24  # the splat footprint blurs a little



def test_oracle_off_path_needs_the_true_depth():
    s = _heldout("novel", n_in=8, n_tgt=4, size=48)
    i, t = s.inputs, s.targets
    gap = frame_spacing(i.times, chunk_groups(i.num_views, 4))
    score = {}
    for scale in (1.0, 1.6):
        g = oracle_gaussians(s.input_depth * scale, i.images, i.c2w, i.fxfycxcy, i.times, gap, far=1e4)
        score[scale] = psnr(render_gaussians(g, t, 48, 48, i.times, front=1, fill=2)[0].clamp(0, 1), t.images[0]).mean()
    assert score[1.0] > score[1.6] + 1.0


def test_front_frames_composite_over_fill_frames():
    torch.manual_seed(0)
    s = _heldout()
    i, t = s.inputs, s.targets
    gap = frame_spacing(i.times, chunk_groups(i.num_views, 2))
    g = oracle_gaussians(s.input_depth, i.images, i.c2w, i.fxfycxcy, i.times, gap, far=1e4)[0]
    time, c2w, K = t.times[0, 0], t.c2w[0, 0], t.fxfycxcy[0, 0]
    order = (i.times[0] - time).abs().argsort()
    out = render_4dgs(g, time, c2w, K, 32, 32, frame_times=i.times[0], front=1, fill=2)
    near, behind = select_frames(g, 6, order[:1]), select_frames(g, 6, order[1:3])
    bg = near.rgb.mean(0)
    a, b = slice_visible(near, time), slice_visible(behind, time)
    ra = rasterize(a.means, a.covariances, a.rgb, a.opacities, c2w, K, 32, 32)
    rb = rasterize(b.means, b.covariances, b.rgb, b.opacities, c2w, K, 32, 32, bg)
    torch.testing.assert_close(out, ra.rgb + (1 - ra.alpha) * rb.rgb)
    # with no fill, holes show the front frame's mean colour, never black
    alone = render_4dgs(g, time, c2w, K, 32, 32, frame_times=i.times[0], front=1, fill=0)
    torch.testing.assert_close(alone, ra.rgb + (1 - ra.alpha) * bg[:, None, None])


def test_frame_spacing_is_per_chunk():
    times = torch.tensor([[0.0, 0.1, 0.2, 0.5, 0.9]])
    gap = frame_spacing(times, [[0, 1, 2], [3, 4]])
    torch.testing.assert_close(gap, torch.tensor([[0.1, 0.1, 0.1, 0.4, 0.4]]))


# ----------------------------------------------------------------------------------------------
# In the model and in a stream


@pytest.fixture(scope="module")
def geo_model():
    torch.manual_seed(0)
    return FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo").eval()


def test_geo_head_starts_from_input_colours_and_the_plane_sweep(geo_model):
    s = _heldout()
    i = s.inputs
    with torch.no_grad():
        states = geo_model.init_states(1)
        g = geo_model.decode_gaussians(states, i, groups=chunk_groups(6, 2))
    torch.testing.assert_close(g.rgb[0], i.images[0].permute(0, 2, 3, 1).reshape(-1, 3))  # zero residual at init
    head = geo_model.gaussian_head
    cost = torch.stack([plane_sweep_cost(i.images[0], i.c2w[0], i.fxfycxcy[0], chunk_groups(6, 2), head.planes)])
    # reference readout by masking: the softmax of the logits over the cheapest plane and its two neighbours
    logits = -head.log_temperature.exp() * cost  # (1,V,P,H,W)
    plane = torch.arange(cost.shape[2])[:, None, None]
    near_best = (plane - cost.argmin(2, keepdim=True)).abs() <= 1
    weights = logits.masked_fill(~near_best, float("-inf")).softmax(2)
    expected = (weights * head.log_planes[:, None, None]).sum(2).exp()  # (1,V,H,W)
    o = i.c2w[0, :, None, :3, 3].expand(-1, 32 * 32, -1).reshape(-1, 3)
    torch.testing.assert_close((g.means_xyz[0] - o).norm(dim=-1), expected.reshape(-1), rtol=1e-4, atol=1e-4)


def test_plane_readout_takes_the_winning_mode_between_planes():
    log_planes = torch.log(log_depth_planes(0.5, 50.0, 8))  # (8,)
    logits = torch.full((3, 8, 1, 1), -30.0)
    logits[0, 5] = 0.0  # one sharp plane -> that plane's depth
    logits[1, 2] = logits[1, 3] = 0.0  # two equal neighbours -> halfway in log depth
    logits[2, 1] = 5.0  # a winning near mode and a weaker far one: the far mode does not pull the depth
    logits[2, 7] = 4.0
    out = plane_readout(logits, log_planes)[:, 0, 0]
    torch.testing.assert_close(out, torch.stack([log_planes[5], (log_planes[2] + log_planes[3]) / 2, log_planes[1]]), atol=1e-5, rtol=0)
    soft_argmin = (logits[2, :, 0, 0].softmax(0) * log_planes).sum()
    assert soft_argmin > log_planes[2]  # what the global expectation would have said


def test_risk_min_plane_minimises_the_expected_relative_error_by_brute_force():
    log_planes = torch.log(log_depth_planes(0.3, 3000.0, 32))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 32, 5, 6, generator=g) * 3  # (N,P,H,W): many split, multi-modal distributions
    logits[0, -1] += 6.0  # a strong far mode beside the others
    d = log_planes.exp()
    p = logits.softmax(1)  # (N,P,H,W)
    cost = ((d[:, None] - d[None, :]).abs() / d[None, :])  # (j,k): reading plane j when the truth is plane k
    risk = torch.einsum("jk,nkhw->njhw", cost, p)  # (N,P_j,H,W) expected relative error per candidate
    best = risk_min_plane(logits, log_planes)  # (N,1,H,W)
    torch.testing.assert_close(risk.gather(1, best), risk.amin(1, keepdim=True))
    # plane_readout("risk") is the local expectation around that plane, "mode" around the argmax
    for centre, c in (("risk", best), ("mode", logits.argmax(1, keepdim=True))):
        window = (torch.arange(32)[:, None, None] - c).abs() <= 1
        expected = (logits.masked_fill(~window, float("-inf")).softmax(1) * log_planes[:, None, None]).sum(1)
        torch.testing.assert_close(plane_readout(logits, log_planes, centre=centre), expected)
    # a surface plane with 40% of the mass and the far plane with 60%: read the surface, not the argmax
    split = torch.full((1, 32, 1, 1), -30.0)
    split[0, 5], split[0, 31] = math.log(0.4), math.log(0.6)
    assert risk_min_plane(split, log_planes).item() == 5 and split.argmax(1).item() == 31


def test_plane_readout_at_the_end_planes_stays_in_range():
    log_planes = torch.log(log_depth_planes(0.5, 50.0, 4))
    logits = torch.tensor([[9.0, 0.0, -9.0, -9.0], [-9.0, -9.0, 0.0, 9.0]])[..., None, None]  # (2,4,1,1)
    out = plane_readout(logits, log_planes)[:, 0, 0]
    w = torch.tensor([9.0, 0.0]).softmax(0)  # only the end plane and its one neighbour
    torch.testing.assert_close(out, torch.stack([w[0] * log_planes[0] + w[1] * log_planes[1], w[0] * log_planes[3] + w[1] * log_planes[2]]))


def test_plane_cross_entropy_is_two_hot_against_the_true_log_depth():
    log_planes = torch.log(log_depth_planes(1.0, 100.0, 5))  # planes 1, 3.16, 10, 31.6, 100
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 1, 2, generator=g)  # (B,P,H,W)
    depth = torch.tensor([[[10.0, math.sqrt(10.0 * 31.6227766)]], [[float("inf"), 0.1]]])  # (B,H,W): on plane 2; halfway 2-3; sky; nearer than near
    target = torch.zeros(2, 5, 1, 2)
    target[0, 2, 0, 0] = 1.0
    target[0, 2, 0, 1] = target[0, 3, 0, 1] = 0.5
    target[1, 4, 0, 0] = 1.0
    target[1, 0, 0, 1] = 1.0
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(plane_cross_entropy(logits, log_planes, depth), expected, atol=1e-5, rtol=1e-5)


def test_plane_abs_rel_risk_is_the_expected_capped_relative_error_on_surface_pixels():
    log_planes = torch.log(log_depth_planes(1.0, 100.0, 5))  # planes 1, 3.16, 10, 31.6, 100
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 1, 2, generator=g)  # (B,P,H,W)
    depth = torch.tensor([[[10.0, 2.0]], [[float("inf"), 0.5]]])  # (B,H,W); one sky pixel
    p = logits.softmax(1)
    terms = []  # a loop over pixels and planes, by hand
    for b, x in [(0, 0), (0, 1), (1, 1)]:
        d = depth[b, 0, x].item()
        terms.append(sum(p[b, k, 0, x] * min(abs(math.exp(log_planes[k].item()) - d) / d, 20.0) for k in range(5)))
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(plane_abs_rel_risk(logits, log_planes, depth), expected, atol=1e-5, rtol=1e-5)
    assert plane_abs_rel_risk(logits, log_planes, torch.full_like(depth, float("inf"))).item() == 0.0  # all sky


def test_plane_abs_rel_risk_moves_mass_off_the_far_plane_and_leaves_the_sky_alone():
    log_planes = torch.log(log_depth_planes(0.3, 3000.0, 32))
    logits = torch.zeros(1, 32, 1, 2)
    logits[0, -1] = 3.0  # both pixels lean to the far plane (the sky's)
    logits[0, 10] = 2.0  # ... with a runner-up near plane
    logits.requires_grad_(True)
    depth = torch.tensor([[[math.exp(log_planes[10].item()), float("inf")]]])  # a surface pixel at plane 10; sky
    plane_abs_rel_risk(logits, log_planes, depth).backward()
    assert logits.grad[0, -1, 0, 0] > 0 and logits.grad[0, 10, 0, 0] < 0  # descent: far down, the true plane up
    assert logits.grad[0, :, 0, 1].abs().max() == 0  # the sky pixel is the cross-entropy's business


def test_plane_cross_entropy_teaches_the_readout_the_true_depth():
    log_planes = torch.log(log_depth_planes(0.3, 3000.0, 32))
    truth = torch.exp(torch.empty(1, 4, 4).uniform_(math.log(0.5), math.log(1000.0), generator=torch.Generator().manual_seed(1)))
    logits = torch.zeros(1, 32, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(200):
        opt.zero_grad()
        plane_cross_entropy(logits, log_planes, truth).backward()
        opt.step()
    depth = plane_readout(logits.detach(), log_planes).exp()
    assert ((depth - truth).abs() / truth).max() < 0.05


def test_the_geo_heads_depth_is_read_with_the_configured_centre():
    s = _heldout(n_in=4, n_tgt=1, size=16)
    for readout in ("mode", "risk"):
        torch.manual_seed(0)
        model = FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_readout=readout).eval()
        with torch.no_grad():
            out = model(s.inputs, s.targets, heads=("depth",))
        log_planes = model.gaussian_head.log_planes
        torch.testing.assert_close(out["depth"], plane_readout(out["depth_logits"], log_planes, centre=readout).exp(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gs_readout"):
        FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_readout="mean")
    with pytest.raises(ValueError, match="only the geo 4DGS head"):
        FSM.from_preset("tiny", heads=("lvsm",)).set_depth_options(gs_readout="risk")
    model.set_depth_options(gs_readout="mode")  # the risk model read as mode: the depth follows
    with torch.no_grad():
        out = model(s.inputs, s.targets, heads=("depth",))
    torch.testing.assert_close(out["depth"], plane_readout(out["depth_logits"], log_planes, centre="mode").exp(), rtol=1e-4, atol=1e-4)
    assert model.config.gs_readout == "mode"


def test_a_depth_size_below_the_views_works_out_depth_there_and_upsamples_the_logits():
    """gs_depth_size 16 on 32x32 views: the logits come back at 32x32, equal to the head's own pieces
    run at 16x16 (the sweep on the shrunk views, the CNN on shrunk RGB and features) and upsampled
    bilinearly, and the depth is read from them; gs_depth_size 32 is the full-size model exactly."""
    s = _heldout(n_in=4, n_tgt=1, size=32)
    torch.manual_seed(0)
    model = FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_readout="risk").eval()
    with torch.no_grad():
        full = model(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))
        model.set_depth_options(gs_depth_size=32)
        same = model(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))
        model.set_depth_options(gs_depth_size=16)
        out = model(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))
    torch.testing.assert_close(same["depth_logits"], full["depth_logits"])
    assert out["depth_logits"].shape == full["depth_logits"].shape and out["depth"].shape == full["depth"].shape

    head, v = model.gaussian_head, s.inputs
    with torch.no_grad():
        images, K = shrink_views(v.images[0], v.fxfycxcy[0], 16, 16)
        cost = plane_sweep_cost(images, v.c2w[0], K, chunk_groups(4, 2), head.planes)  # (V,P,16,16)
        states = model.init_states(1)
        for start in (0, 2):  # the memory the forward decodes from
            states, _ = model.ingest(states, v[start : start + 2])
        feats = unpatchify(head.proj(head.norm(model.query(states, v, 32, 32))), head.patch, 32, 32)[0]  # (V,F,32,32)
        x = torch.cat([cost, images * 2 - 1, F.avg_pool2d(feats, 2)], 1)
        y = F.gelu(head.stem(x))
        u = F.interpolate(F.gelu(head.mid(F.gelu(head.down(y)))), size=(16, 16), mode="bilinear", align_corners=False)
        logits = -head.log_temperature.exp() * cost + head.out(F.gelu(head.up(torch.cat([y, u], 1))))[:, : head.planes.shape[0]]
        want = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["depth_logits"][0], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["depth"], plane_readout(out["depth_logits"], head.log_planes, centre="risk").exp())
    with pytest.raises(ValueError, match="gs_depth_size"):
        model.set_depth_options(gs_depth_size=4)


def test_resample_planes_is_linear_interpolation_in_log_depth():
    """A quantity linear in log depth on 32 planes is the same line on 64 (or 20) planes over the same
    range; a peaked one keeps its peak's log depth; the end planes are kept."""
    old, new = log_depth_planes(0.3, 3000.0, 32).log(), log_depth_planes(0.3, 3000.0, 64).log()
    line = lambda lp: 2.0 - 0.7 * lp
    x = torch.stack([line(old), 3 * line(old)])[:, :, None]  # (2, P, 1): planes on dim 1
    torch.testing.assert_close(resample_planes(x, 64, 1), torch.stack([line(new), 3 * line(new)])[:, :, None])
    few = log_depth_planes(0.3, 3000.0, 20).log()
    torch.testing.assert_close(resample_planes(line(old), 20, 0), line(few))
    peak = torch.zeros(32)
    peak[10] = 1.0
    up = resample_planes(peak, 63, 0)  # 63 planes: every old plane is a new one (old k = new 2k)
    assert up.argmax() == 20 and up[20] == 1.0 and up[19] == up[21] == 0.5
    v = torch.randn(5, 32)
    torch.testing.assert_close(resample_planes(v, 64, -1)[:, [0, -1]], v[:, [0, -1]])


def test_a_head_resampled_to_more_planes_gives_the_same_logits_interpolated():
    """resample_head_planes: with no cost signal the trunk sees the same input, so the new head's plane
    logits are the old ones interpolated in log depth and its other outputs (colour, scale, ...) are
    the same; the stem's cost weights, scaled by the ratio of plane spacings, keep their trapezoid sum."""
    torch.manual_seed(0)
    a = GeoGaussianHead(dim=16, patch=4, planes=12, near=0.5, far=50.0, features=4, width=8)
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b = GeoGaussianHead(dim=16, patch=4, planes=23, near=0.5, far=50.0, features=4, width=8)
    b.load_state_dict(resample_head_planes(a.state_dict(), "", 23))
    B, V, H, W = 1, 2, 8, 8
    tokens, images = torch.randn(B, V, (H // 4) * (W // 4), 16), torch.rand(B, V, 3, H, W)
    c2w = torch.eye(4).expand(B, V, 4, 4).clone()
    K, times, gap = torch.tensor([8.0, 8.0, 4.0, 4.0]).expand(B, V, 4), torch.zeros(B, V), torch.ones(B, V)
    with torch.no_grad():
        ga, _, la = a(tokens, torch.zeros(B, V, 12, H, W), images, c2w, K, times, gap)
        gb, _, lb = b(tokens, torch.zeros(B, V, 23, H, W), images, c2w, K, times, gap)
    # float32 convolutions summing different channel counts: ~1e-5 apart on logits of size ~10 (seen 1.2e-5)
    torch.testing.assert_close(lb, resample_planes(la, 23, 2), atol=1e-4, rtol=1e-5)
    for field in ("rgb", "scales_xyz", "opacity", "rot_left", "scale_t"):
        assert getattr(ga, field).shape == getattr(gb, field).shape
    torch.testing.assert_close(ga.rgb, gb.rgb)
    torch.testing.assert_close(ga.opacity, gb.opacity)
    # the stem's cost weights: 23 interpolated values scaled by 11/22 sum to about the old sum (trapezoid rule)
    wa, wb = a.stem.weight[:, :12].sum(1), b.stem.weight[:, :23].sum(1)
    ends = lambda w, n: (w[:, 0] + w[:, n - 1]) / 2
    torch.testing.assert_close(wb - ends(b.stem.weight, 23), wa - ends(a.stem.weight, 12), rtol=1e-4, atol=1e-4)
    assert b.out.bias.shape[0] == 23 + RAW_REST


def test_geo_training_forward_gives_depth_and_gradients():
    torch.manual_seed(0)
    model = FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo")
    s = _heldout(n_in=4, n_tgt=2, size=16)
    out = model(s.inputs, s.targets, heads=("lvsm", "4dgs", "depth"))
    assert out["depth"].shape == (1, 4, 16, 16) and out["4dgs"].shape == (1, 2, 3, 16, 16)
    # two steps: the zero-initialised output layer first, then everything behind it
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        out = model(s.inputs, s.targets, heads=("4dgs", "depth"))
        loss = F.mse_loss(out["4dgs"], s.targets.images) + (out["depth"].log() - s.input_depth.clamp(max=3000).log()).abs().mean()
        loss.backward()
        opt.step()
    for name, p in model.gaussian_head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert model.blocks[0].fw.w0.grad.abs().sum() > 0  # the backbone learns through the head's features


def test_cost_regularizer_starts_as_the_head_it_is_added_to_and_learns_depth(geo_model):
    """gs_refine adds a zero-output 3D U-Net: the same weights give the same logits and depth;
    trained alone on the planes' cross-entropy it moves probability to the true planes."""
    s = _heldout(n_in=4, size=32)
    torch.manual_seed(0)
    refined = FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_refine=True)
    missing, unexpected = refined.load_state_dict(geo_model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("gaussian_head.refine.") for k in missing)
    with torch.no_grad():
        a = geo_model(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))
        b = refined(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))
    torch.testing.assert_close(b["depth_logits"], a["depth_logits"])
    torch.testing.assert_close(b["depth"], a["depth"])

    params = list(refined.gaussian_head.refine.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    planes = refined.gaussian_head.log_planes
    losses = []
    for _ in range(30):
        opt.zero_grad()
        logits = refined(s.inputs, s.targets, frames_per_chunk=2, heads=("depth",))["depth_logits"]
        loss = plane_cross_entropy(logits, planes, s.input_depth)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_cost_regularizer_handles_odd_sizes_and_keeps_shapes():
    reg = CostRegularizer(width=4)
    torch.nn.init.normal_(reg.out.weight, std=0.1)
    for H, W in ((9, 7), (16, 12)):
        cost, logits, rgb = torch.rand(2, 12, H, W), torch.randn(2, 12, H, W), torch.rand(2, 3, H, W)
        y = reg(cost, logits, rgb)
        assert y.shape == (2, 12, H, W) and torch.isfinite(y).all() and y.abs().sum() > 0


def test_edge_propagation_matches_a_dense_neighbourhood_reference():
    """logp' = logp + g (sum_k w_k logp_k - logp) over the 5x5 neighbourhood (edges replicated),
    w = softmax(learned - beta |rgb - rgb_k|^2): checked against F.unfold with the module's own layers."""
    torch.manual_seed(0)
    edge = EdgePropagation(width=4)
    torch.nn.init.normal_(edge.gate.weight, std=0.3)
    N, P, H, W = 2, 8, 7, 9
    logits, rgb = torch.randn(N, P, H, W) * 3, torch.rand(N, 3, H, W)
    log_planes = torch.linspace(math.log(0.3), math.log(3000.0), P)
    out = edge(logits, log_planes, rgb)

    logp = logits.log_softmax(1)
    depth = (plane_readout(logits, log_planes) - log_planes[0]) / (log_planes[-1] - log_planes[0])
    x = torch.cat([rgb * 2 - 1, depth[:, None] * 2 - 1, logp.amax(1, keepdim=True).exp() * 2 - 1], 1)
    h = F.gelu(edge.conv2(F.gelu(edge.conv1(x))))
    around = lambda x: F.unfold(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5).reshape(N, x.shape[1], 25, H, W)
    colour = (rgb[:, :, None] - around(rgb)).square().sum(1)  # (N,25,H,W)
    w, g = (edge.affinity(h) - edge.log_beta.exp() * colour).softmax(1), edge.gate(h)  # (N,25,H,W), (N,1,H,W)
    neighbours = around(logp)
    expected = logp + g * ((neighbours * w[:, None]).sum(2) - logp)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _bleeding_edges(n: int, seed: int, H: int = 12, W: int = 16, P: int = 16):
    """n images split at a random column into two flat random colours: a near surface (plane 3) and
    the sky (the far plane, inf); plane logits that are right but blurred 2 px across the edge, the
    sky's more confident (as an upsampled correction bleeds) -> rgb, true depth, logits, log planes."""
    g = torch.Generator().manual_seed(seed)
    log_planes = torch.linspace(math.log(0.3), math.log(3000.0), P)
    rgb, depth, logits = torch.zeros(n, 3, H, W), torch.zeros(n, H, W), torch.zeros(n, P, H, W)
    for i in range(n):
        near = torch.arange(W) < int(torch.randint(4, W - 4, (1,), generator=g))  # (W,)
        colours = torch.rand(2, 3, generator=g)
        rgb[i] = torch.where(near, colours[0][:, None], colours[1][:, None])[:, None].expand(3, H, W)
        depth[i] = torch.where(near, log_planes[3].exp(), torch.tensor(math.inf))
        sharp = F.one_hot(torch.where(near, 3, P - 1), P).T.float() * torch.where(near, 6.0, 12.0)  # (P,W)
        logits[i] = F.avg_pool1d(sharp[None], 5, 1, 2, count_include_pad=False)[0][:, None].expand(P, H, W)
    return rgb, depth, logits, log_planes


def test_edge_propagation_starts_as_identity_and_learns_which_side_of_an_edge_a_pixel_is_on():
    torch.manual_seed(0)
    edge = EdgePropagation()
    rgb, depth, logits, log_planes = _bleeding_edges(8, seed=0)
    torch.testing.assert_close(edge(logits, log_planes, rgb), logits.log_softmax(1))  # gate zero at init
    opt = torch.optim.Adam(edge.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        plane_cross_entropy(edge(logits, log_planes, rgb), log_planes, depth).backward()
        opt.step()
    # new images, edges and colours: the surface pixel beside the sky reads out at the surface
    rgb, depth, logits, log_planes = _bleeding_edges(8, seed=1)
    with torch.no_grad():
        before = plane_readout(logits, log_planes).exp()
        after = plane_readout(edge(logits, log_planes, rgb), log_planes).exp()
    surface = torch.isfinite(depth)
    wrong = lambda d: ((d - depth).abs() / depth)[surface].mean().item()
    assert wrong(before) > 10 and wrong(after) < 0.05, (wrong(before), wrong(after))


@pytest.mark.parametrize("back, keep", [(0, 1.0), (1, 0.5), (2, 0.5)])
def test_geo_stream_equals_batched_decode_and_keeps_frames_bounded(geo_model, back, keep):
    """A streamed session's Gaussians are the batched decode's; with gs_sweep_back, each kept chunk
    carries the chunks fed just before it as its plane-sweep sources."""
    geo_model = copy.deepcopy(geo_model)
    geo_model.set_depth_options(gs_sweep_back=back, gs_sweep_keep=keep)
    for bad in ({"gs_sweep_back": -1}, {"gs_sweep_keep": 0.0}, {"gs_sweep_keep": 1.5}):
        with pytest.raises(ValueError, match="gs_sweep_back must be >= 0 and gs_sweep_keep in"):
            geo_model.set_depth_options(**bad)
    s = _heldout(n_in=6)
    i = s.inputs
    session = StreamSession(geo_model, stream=geo_model.stream_config(frames_per_chunk=2, max_kept_frames=6))
    session.feed(i.images[0], i.c2w[0], i.fxfycxcy[0], i.times[0].double())
    with torch.no_grad():
        batched = geo_model(i, s.targets, frames_per_chunk=2, heads=("4dgs",))["4dgs"][0]
        states = geo_model.init_states(1)
        for a in range(0, 6, 2):
            states, _ = geo_model.ingest(states, i[a : a + 2])
        g = geo_model.decode_gaussians(states, i, groups=chunk_groups(6, 2))[0]
    t = i.times[0, 4].item()
    streamed = session.gaussians(t, prune_below=0.0)
    exact = slice_visible(select_frames(g, 6, torch.tensor([4])), t, 0.0)
    torch.testing.assert_close(streamed.means, exact.means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.rgb, exact.rgb)
    # renders agree with the training forward up to the viewer's marginal culling and clamping
    rendered = session.render(s.targets.c2w[0], s.targets.fxfycxcy[0], s.targets.times[0].double(), 32, 32, head="4dgs")
    assert (rendered - batched.clamp(0, 1)).abs().max() < 0.02
    # budget: whole chunks, evenly spread
    long = StreamSession(geo_model, stream=geo_model.stream_config(frames_per_chunk=2, max_kept_frames=6))
    for _ in range(5):
        long.feed(i.images[0], i.c2w[0], i.fxfycxcy[0], i.times[0].double())
    assert sum(c.num_views for c, _ in long._kept) <= 6 and all(c.num_views == 2 for c, _ in long._kept)
    chunk_of = lambda v: [torch.equal(v.times, i.times[:, a : a + 2]) for a in (0, 2, 4)].index(True)  # fed cyclically
    assert long._kept[0][1] == []  # the first chunk fed has none before it
    assert long._kept_stride >= back  # so every later kept chunk has `back` chunks fed before it
    for chunk, before in long._kept[1:]:
        assert [chunk_of(b) for b in before] == [(chunk_of(chunk) - k) % 3 for k in range(back, 0, -1)]  # oldest first


def test_browser_splats_are_widened_by_the_model_pixel_footprint(geo_model):
    """gaussians(t, footprint_px=k): each covariance gains (k * distance / focal)^2 of its own
    frame's camera, in quadrature; the means, colours and opacities are the exact ones."""
    s = _heldout(n_in=6)
    i = s.inputs
    session = StreamSession(geo_model, stream=geo_model.stream_config(frames_per_chunk=2))
    session.feed(i.images[0], i.c2w[0], i.fxfycxcy[0], i.times[0].double())
    t = i.times[0, 2].item()
    exact = session.gaussians(t, prune_below=0.0)
    wide = session.gaussians(t, prune_below=0.0, footprint_px=0.5)
    torch.testing.assert_close(wide.means, exact.means)
    torch.testing.assert_close(wide.opacities, exact.opacities)
    dist = (exact.means - i.c2w[0, 2, :3, 3]).norm(dim=-1)
    extra = (0.5 * dist / i.fxfycxcy[0, 2, :2].mean()) ** 2
    # the trace grows by 3 x extra (isotropic), up to the slicing's conditioning on time
    grow = torch.diagonal(wide.covariances, dim1=-2, dim2=-1).sum(-1) - torch.diagonal(exact.covariances, dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(grow, 3 * extra, rtol=1e-3, atol=1e-7)

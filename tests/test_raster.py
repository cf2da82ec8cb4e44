"""Rasterizer: the tiled torch path vs. a dense per-pixel reference, gradients, projection, gsplat."""

import math
from pathlib import Path

import pytest
import torch

import fsm.raster
from fsm import raster_cpu
from fsm.cameras import look_at, project_points
from fsm.raster import rasterize, rasterize_gsplat, rasterize_torch


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def cpu_path(request, monkeypatch):
    """Every test runs twice: CPU compositing in the compiled kernel, and in the pure-torch fallback."""
    if request.param == "kernel" and raster_cpu.load() is None:
        pytest.skip(f"compiled CPU kernel unavailable: {raster_cpu.unavailable_reason()}")
    monkeypatch.setattr(fsm.raster, "CPU_KERNEL", request.param == "kernel")
    return request.param


def random_scene(n, seed, dtype=torch.float64, spread=1.0, size=(0.02, 0.3), opacity=(0.05, 0.95)):
    """Gaussians around the origin, some behind / beside the cameras, random anisotropic shapes."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    u = lambda *s: torch.rand(*s, generator=gen, dtype=dtype)
    means = r(n, 3) * spread
    Q = torch.linalg.qr(r(n, 3, 3))[0]
    s = size[0] * (size[1] / size[0]) ** u(n, 3)  # log-uniform std devs
    covars = (Q * s[:, None, :] ** 2) @ Q.transpose(-1, -2)
    colors = u(n, 3)
    opacities = opacity[0] + (opacity[1] - opacity[0]) * u(n)
    return means, covars, colors, opacities


def cameras(dtype=torch.float64):
    up = torch.tensor([0.0, -1.0, 0.0], dtype=dtype)
    c2w = torch.stack([
        look_at(torch.tensor([0.3, -0.2, -3.0], dtype=dtype), torch.zeros(3, dtype=dtype), up),
        look_at(torch.tensor([2.5, 0.5, 1.5], dtype=dtype), torch.tensor([0.1, 0.0, 0.0], dtype=dtype), up),
    ])
    fxfycxcy = torch.tensor([[40.0, 42.0, 20.5, 13.0], [30.0, 30.0, 18.0, 15.0]], dtype=dtype)
    return c2w, fxfycxcy


def dense_reference(means, covars, colors, opacities, c2w, fxfycxcy, width, height, background, near=0.01):
    """gsplat's classic rules written the direct way: every Gaussian against every pixel,
    one Gaussian at a time in camera-z order (float64, no tiles, no culling boxes)."""
    w2c = torch.linalg.inv(c2w)
    R, t = w2c[:3, :3], w2c[:3, 3]
    fx, fy, cx, cy = fxfycxcy.tolist()
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    rgb = torch.zeros(3, height, width, dtype=torch.float64)
    depth = torch.zeros(height, width, dtype=torch.float64)
    T = torch.ones(height, width, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    cam = means @ R.T + t
    lim_x = (-(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
    lim_y = (-(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
    n_stopped_gaussians = 0
    for i in torch.argsort(cam[:, 2]).tolist():
        x, y, z = cam[i].tolist()
        if z < near:
            continue
        tx, ty = min(max(x / z, lim_x[0]), lim_x[1]), min(max(y / z, lim_y[0]), lim_y[1])
        J = torch.tensor([[fx / z, 0, -fx * tx / z], [0, fy / z, -fy * ty / z]], dtype=torch.float64)
        cov2d = J @ R @ covars[i] @ R.T @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        conic = torch.linalg.inv(cov2d)
        dx, dy = u - (fx * x / z + cx), v - (fy * y / z + cy)
        power = 0.5 * (conic[0, 0] * dx * dx + 2 * conic[0, 1] * dx * dy + conic[1, 1] * dy * dy)
        alpha = torch.clamp(opacities[i] * torch.exp(-power), max=0.999)
        use = (alpha >= 1 / 255) & ~done
        stop = use & (T * (1 - alpha) <= 1e-4)
        n_stopped_gaussians += int(stop.sum())
        done |= stop
        use &= ~stop
        w = torch.where(use, alpha * T, torch.zeros_like(T))
        rgb += w * colors[i][:, None, None]
        depth += w * z
        T = torch.where(use, T * (1 - alpha), T)
    return rgb + T * background[:, None, None], 1 - T, depth, n_stopped_gaussians


@pytest.mark.parametrize("case", ["sparse", "overlapping", "saturating"])
def test_tiled_rasterizer_matches_dense_reference(case):
    c2w, fxfycxcy = cameras()
    width, height = 41, 27  # not multiples of the 16-pixel tile
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    if case == "sparse":
        scene = random_scene(60, seed=1)
    elif case == "overlapping":
        scene = random_scene(300, seed=2, spread=0.5, size=(0.05, 0.5))
    else:  # many nearly opaque splats: most pixels hit the transmittance stop
        scene = random_scene(400, seed=3, spread=0.3, size=(0.1, 0.6), opacity=(0.6, 0.99))
    # Also some Gaussians right at / behind the near plane of camera 0.
    means, covars, colors, opacities = scene
    means = torch.cat([means, c2w[0, :3, 3] + torch.tensor([[0.0, 0.0, 0.005], [0.01, 0.0, -0.5]], dtype=torch.float64)])
    covars = torch.cat([covars, covars[:2]])
    colors, opacities = torch.cat([colors, colors[:2]]), torch.cat([opacities, opacities[:2]])

    out = rasterize_torch(means, covars, colors, opacities, c2w, fxfycxcy, width, height, background)
    assert out.rgb.shape == (2, 3, height, width) and out.alpha.shape == out.depth.shape == (2, 1, height, width)
    for cam in range(2):
        rgb, alpha, depth, n_stopped = dense_reference(means, covars, colors, opacities, c2w[cam], fxfycxcy[cam], width, height, background)
        torch.testing.assert_close(out.rgb[cam], rgb, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.alpha[cam, 0], alpha, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.depth[cam, 0], depth, atol=1e-9, rtol=1e-10)
        if case == "saturating":
            assert n_stopped > width * height // 4  # the stop rule really is exercised (most of the silhouette)
        assert alpha.max() > 0.5  # something is drawn
    # One camera unbatched gives the same image as the batch's first camera.
    single = rasterize_torch(means, covars, colors, opacities, c2w[0], fxfycxcy[0], width, height, background)
    assert single.rgb.shape == (3, height, width)
    torch.testing.assert_close(single.rgb, out.rgb[0])


def test_float32_matches_float64_reference():
    c2w, fxfycxcy = cameras()
    means, covars, colors, opacities = random_scene(300, seed=4, spread=0.5, size=(0.05, 0.5))
    background = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    out = rasterize_torch(*(x.float() for x in (means, covars, colors, opacities, c2w, fxfycxcy)), 41, 27, background.float())
    ref = dense_reference(means, covars, colors, opacities, c2w[0], fxfycxcy[0], 41, 27, background)[0]
    assert out.rgb.dtype == torch.float32
    torch.testing.assert_close(out.rgb[0].double(), ref, atol=1e-4, rtol=0)


def test_gradients_match_finite_differences():
    c2w, fxfycxcy = cameras()
    c2w, fxfycxcy = c2w[0], torch.tensor([16.0, 17.0, 4.2, 3.9], dtype=torch.float64)  # 8x8 image
    means, covars, colors, opacities = random_scene(4, seed=5, spread=0.3, size=(0.2, 0.5), opacity=(0.3, 0.9))
    background = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def render(m, c, col, op):
        out = rasterize_torch(m, c, col, op, c2w, fxfycxcy, 8, 8, background)
        return out.rgb, out.alpha, out.depth

    inputs = [x.clone().requires_grad_() for x in (means, covars, colors, opacities)]
    assert rasterize_torch(*inputs, c2w, fxfycxcy, 8, 8).alpha.mean() > 0.3  # they cover the image
    assert torch.autograd.gradcheck(render, inputs, fast_mode=True)  # random projections of the Jacobian


def test_gaussian_renders_at_its_projected_pixel():
    c2w = look_at(torch.tensor([1.0, -0.5, -4.0]), torch.tensor([0.2, 0.1, 0.3]), torch.tensor([0.0, -1.0, 0.0]))
    fxfycxcy = torch.tensor([70.0, 75.0, 30.0, 26.0])
    point = torch.tensor([[0.4, -0.3, 0.5]])
    uv, z = project_points(point, c2w, fxfycxcy)
    u, v = uv[0].tolist()
    out = rasterize_torch(point, torch.eye(3)[None] * 1e-4, torch.ones(1, 3), torch.ones(1), c2w, fxfycxcy, 64, 48)
    a = out.alpha[0].double()
    row, col = divmod(int(a.argmax()), 64)
    assert (col, row) == (math.floor(u), math.floor(v))
    # Pixel centres sit at +0.5, so the alpha-weighted centroid of centres is the projection.
    ys, xs = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    torch.testing.assert_close(torch.tensor([(a * xs).sum() / a.sum(), (a * ys).sum() / a.sum()]), torch.tensor([u, v], dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(out.depth[0, row, col] / a[row, col], z[0].double(), rtol=1e-5, atol=0)


def test_cpu_tensors_never_reach_gsplat():
    means, covars, colors, opacities = random_scene(5, seed=6, dtype=torch.float32)
    c2w, fxfycxcy = cameras(torch.float32)
    with pytest.raises(ValueError, match="CUDA"):
        rasterize_gsplat(means, covars, colors, opacities, c2w, fxfycxcy, 16, 16)
    out = rasterize(means, covars, colors, opacities, c2w, fxfycxcy, 16, 16)  # routed to the torch path
    torch.testing.assert_close(out.rgb, rasterize_torch(means, covars, colors, opacities, c2w, fxfycxcy, 16, 16).rgb)


def test_empty_scene_renders_background():
    c2w, fxfycxcy = cameras(torch.float32)
    background = torch.tensor([0.2, 0.4, 0.6])
    out = rasterize(torch.zeros(0, 3), torch.zeros(0, 3, 3), torch.zeros(0, 3), torch.zeros(0), c2w, fxfycxcy, 20, 10, background)
    torch.testing.assert_close(out.rgb, background[None, :, None, None].expand(2, 3, 10, 20))
    assert (out.alpha == 0).all() and (out.depth == 0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for gsplat")
def test_gsplat_matches_torch_rasterizer():
    c2w, fxfycxcy = cameras(torch.float32)
    fxfycxcy = fxfycxcy * 4  # 164 x 108 images
    scene = [x.float().cuda() for x in random_scene(3000, seed=7, spread=0.6, size=(0.01, 0.2))]
    background = torch.tensor([0.3, 0.3, 0.3], device="cuda")
    args = (c2w.cuda(), fxfycxcy.cuda(), 164, 108, background)
    ours = rasterize_torch(*scene, *args)
    theirs = rasterize(*scene, *args)  # CUDA tensors: gsplat
    mse = ((ours.rgb - theirs.rgb) ** 2).mean()
    psnr = -10 * torch.log10(mse)
    assert psnr >= 40, f"PSNR {psnr:.1f} dB"
    torch.testing.assert_close(ours.alpha, theirs.alpha, atol=1e-2, rtol=0)
    # Gradients agree in direction too.
    leaves = [[x.clone().requires_grad_() for x in scene] for _ in range(2)]
    for leaf, fn in zip(leaves, (rasterize_torch, rasterize)):
        (fn(*leaf, *args).rgb * torch.linspace(0, 1, 108, device="cuda")[:, None]).sum().backward()
    for a, b in zip(*leaves):
        cos = torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0)
        assert cos > 0.99


def test_cpu_path_is_the_one_selected(cpu_path, monkeypatch):
    calls = []
    apply = raster_cpu.Composite.apply
    monkeypatch.setattr(raster_cpu.Composite, "apply", lambda *a: calls.append(1) or apply(*a))
    c2w, fxfycxcy = cameras(torch.float32)
    out = rasterize(*random_scene(50, seed=8, dtype=torch.float32), c2w, fxfycxcy, 20, 10)
    assert len(calls) == (1 if cpu_path == "kernel" else 0) and out.alpha.max() > 0


def test_kernel_and_torch_paths_agree_on_gradients(monkeypatch):
    """Both CPU paths, float64, on many nearly opaque overlapping splats (stop rule active):
    same images and same gradients of a loss on rgb, alpha and depth (which all have gradients)."""
    if raster_cpu.load() is None:
        pytest.skip(f"compiled CPU kernel unavailable: {raster_cpu.unavailable_reason()}")
    c2w, fxfycxcy = cameras()
    scene = random_scene(400, seed=9, spread=0.3, size=(0.03, 0.3), opacity=(0.6, 0.99))
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    gen = torch.Generator().manual_seed(10)
    weights = [torch.randn(2, k, 27, 41, generator=gen, dtype=torch.float64) for k in (3, 1, 1)]
    results = []
    for kernel in (True, False):
        monkeypatch.setattr(fsm.raster, "CPU_KERNEL", kernel)
        leaves = [x.clone().requires_grad_() for x in scene]
        out = rasterize_torch(*leaves, c2w, fxfycxcy, 41, 27, background)
        sum(((x * w).sum() for x, w in zip(out, weights))).backward()
        results.append([*out, *(x.grad for x in leaves)])
    assert results[0][1].mean() > 0.3  # much of the image is covered
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_kernel_falls_back_to_torch_when_it_cannot_build(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(raster_cpu, "_lib", None)
    monkeypatch.setattr(raster_cpu, "_error", None)
    monkeypatch.setattr(fsm.raster, "CPU_KERNEL", True)
    c2w, fxfycxcy = cameras()
    scene = random_scene(60, seed=1)
    with pytest.warns(UserWarning, match="no-such-compiler"):
        out = rasterize(*scene, c2w, fxfycxcy, 41, 27)
    assert raster_cpu.load() is None  # said once, then stays on the fallback
    ref = dense_reference(*scene, c2w[0], fxfycxcy[0], 41, 27, torch.zeros(3, dtype=torch.float64))[0]
    torch.testing.assert_close(out.rgb[0], ref, atol=1e-10, rtol=1e-10)


def test_kernel_builds_from_source_into_an_empty_cache(monkeypatch, tmp_path):
    """What a fresh machine does on first use: compile fsm/raster_cpu.cpp into the cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(raster_cpu, "_lib", None)
    monkeypatch.setattr(raster_cpu, "_error", None)
    lib = raster_cpu.load()
    assert lib is not None, raster_cpu.unavailable_reason()
    assert Path(lib._name).parent == tmp_path / "fsm-view" and Path(lib._name).exists()

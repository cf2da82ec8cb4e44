"""The procedural 4D engine: geometry against projections and dense references, motion against
closed forms, determinism, batching, resolution independence."""

import dataclasses
import math

import pytest
import torch

from fsm.cameras import look_at, project_points
from fsm.data import synthetic as syn
from fsm.data.synthetic import (
    BOX, CYLINDER, ELLIPSOID, FAMILIES, FLAT, Textures, builders, frame_times, make_path, make_scene,
    new_objects, novel_cameras, object_poses, render, trace,
)  # fmt: skip


def flat_textures(k: int, color=1.0) -> Textures:
    return Textures(
        kind=torch.full((k,), FLAT), color_a=torch.full((k, 3), color), color_b=torch.full((k, 3), color),
        scale=torch.ones(k), offset=torch.zeros(k, 3), direction=torch.tensor([[1.0, 0, 0]]).repeat(k, 1),
        waves=torch.zeros(k, 6, 4),
    )  # fmt: skip


def bare_scene(objects, ground=False, light=(0.0, 0.0, 50.0, 1.0), ambient=1.0) -> syn.Scene:
    """Only the given objects (flat white) over a black sky, optionally a flat white ground."""
    scene = make_scene(0, "outdoor")
    P = 1 if ground else 0
    return dataclasses.replace(
        scene, plane_normal=scene.plane_normal[:P], plane_offset=scene.plane_offset[:P], plane_u=scene.plane_u[:P],
        plane_v=scene.plane_v[:P], objects=objects, textures=flat_textures(P + len(objects)),
        light=torch.tensor(light), ambient=ambient, sky_horizon=torch.zeros(3), sky_zenith=torch.zeros(3),
    )  # fmt: skip


def camera(eye, target=(0.0, 0.0, 0.0), size=64, f=70.0):
    c2w = look_at(torch.tensor([eye]), torch.tensor([target]), torch.tensor([0.0, 0.0, 1.0]))  # world z up
    return c2w, torch.tensor([[f, f, size / 2, size / 2]])


def contour(centre, radius, eye, n=64):
    """Points of the sphere's silhouette circle seen from `eye` (tangent points of view rays)."""
    v = centre - eye
    dist = v.norm()
    axis = v / dist
    c = centre - axis * radius**2 / dist
    r = radius * math.sqrt(1 - (radius / dist) ** 2)
    a = torch.linalg.svd(axis[None])[2][1:]  # two unit vectors orthogonal to the axis
    ang = torch.linspace(0, 2 * math.pi, n + 1)[:-1, None]
    return c + r * (torch.cos(ang) * a[0] + torch.sin(ang) * a[1])


def assert_silhouette(mask, c2w, K, centre, radius, eye):
    """Pixels 1.5 px inside the projected silhouette are covered, 1.5 px outside are not."""
    rim, _ = project_points(contour(centre, radius, eye)[None], c2w, K)  # (1,n,2)
    mid, _ = project_points(centre[None, None], c2w, K)
    rim, mid = rim[0], mid[0, 0]
    out = (rim - mid) / (rim - mid).norm(dim=-1, keepdim=True)
    H, W = mask.shape
    for sign, want in ((-1.5, True), (1.5, False)):
        uv = (rim + sign * out).floor().long()  # pixel (u, v) has its centre at (u+0.5, v+0.5)
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        assert ok.sum() > 10
        assert (mask[uv[ok, 1], uv[ok, 0]] == want).all()
    assert mask[int(mid[1]), int(mid[0])]


def test_sphere_silhouette_matches_projection():
    centre, radius, eye = torch.tensor([0.3, -0.2, 0.5]), 0.6, torch.tensor([3.0, 1.0, 1.5])
    ob = new_objects([ELLIPSOID])
    ob.pos[0], ob.size[0] = centre, radius
    scene = bare_scene(ob)
    c2w, K = camera(eye.tolist(), (0.0, 0.0, 0.3))
    img = render(scene, c2w, K, torch.zeros(1), 64, 64, shadows=False)[0]
    mask = img[0] > 0.5
    assert_silhouette(mask, c2w[0], K[0], centre, radius, eye)
    # Dense reference: a pixel is covered iff its centre ray passes within `radius` of the centre.
    from fsm.cameras import pixel_rays

    o, d = pixel_rays(c2w, K, 64, 64)
    oc = centre - o[0]
    along = (oc * d[0]).sum(-1)
    miss = (oc.pow(2).sum(-1) - along**2).sqrt()
    assert torch.equal(mask, miss < radius)


def test_moving_sphere_is_where_its_path_says():
    p0, amp, freq, phase = torch.tensor([0.0, 0.0, 0.4]), torch.tensor([0.8, 0.0, 0.3]), 0.25, torch.tensor([0.0, 0.0, 1.0])
    ob = new_objects([ELLIPSOID])
    ob.pos[0], ob.amp[0], ob.freq[0], ob.phase[0], ob.size[0] = p0, amp, freq, phase, 0.35
    scene = bare_scene(ob)
    eye = torch.tensor([0.0, -4.0, 1.0])
    c2w, K = camera(eye.tolist(), (0.0, 0.0, 0.4))
    times = torch.tensor([0.0, 0.6, 1.3, 2.9])
    imgs = render(scene, c2w.expand(4, 4, 4), K.expand(4, 4), times, 64, 64, shadows=False)
    for k, t in enumerate(times):
        centre = p0 + amp * torch.sin(2 * math.pi * freq * t + phase)  # the path, written independently
        assert_silhouette(imgs[k, 0] > 0.5, c2w[0], K[0], centre, 0.35, eye)


def test_linear_bounce_spin_and_pulse_follow_their_formulas():
    ob = new_objects([BOX])
    ob.pos[0] = torch.tensor([1.0, 2.0, 0.5])
    ob.lin[0], ob.lin_freq[0] = torch.tensor([1.0, 0.0, 0.0]), 0.25
    ob.bounce[0], ob.bounce_freq[0] = 0.5, 1.0
    ob.spin_axis[0], ob.spin_rate[0] = torch.tensor([0.0, 0.0, 1.0]), 0.7
    ob.size[0], ob.pulse[0], ob.pulse_freq[0] = torch.tensor([0.2, 0.3, 0.4]), torch.tensor([0.1, 0.0, -0.1]), 0.5
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])
    R, p, s = object_poses(ob, t)
    tri = torch.tensor([1.0, 0.5, 0.0, -1.0, 0.0])  # ping-pong: +1 at t=0, -1 at half the period (2 s)
    hop = 0.5 * torch.sin(math.pi * t).abs()
    torch.testing.assert_close(p[:, 0], torch.stack([1 + tri, torch.full_like(t, 2.0), 0.5 + hop], -1))
    c, s_ = torch.cos(0.7 * t), torch.sin(0.7 * t)
    torch.testing.assert_close(R[:, 0, :2, 0], torch.stack([c, s_], -1))
    torch.testing.assert_close(s[:, 0], torch.tensor([0.2, 0.3, 0.4]) * (1 + torch.tensor([0.1, 0.0, -0.1]) * torch.sin(math.pi * t)[:, None]))


def test_two_link_pendulum_chains_its_rotations():
    g = torch.Generator().manual_seed(3)
    pivot = torch.tensor([0.5, -0.5, 3.0])
    ob = builders._stack_objects(builders._pendulum(g, pivot, 2.0, 0))
    t = torch.linspace(0, 4, 9)
    R, p, _ = object_poses(ob, t)
    l1, l2 = 0.55 * 2.0, 0.45 * 2.0
    a1 = ob.swing_amp[0] * torch.sin(2 * math.pi * ob.swing_freq[0] * t + ob.swing_phase[0])
    a2 = ob.swing_amp[2] * torch.sin(2 * math.pi * ob.swing_freq[2] * t + ob.swing_phase[2])
    R1 = syn.axis_angle(ob.swing_axis[0].expand(9, 3), a1)
    R12 = syn.axis_angle(ob.swing_axis[0].expand(9, 3), a1 + a2)  # same hinge axis: angles add
    down = lambda l: torch.tensor([0.0, 0.0, -l])
    elbow = pivot + R1 @ down(l1)
    bob = elbow + R12 @ down(l2)
    torch.testing.assert_close(p[:, 1], elbow, atol=1e-5, rtol=0)
    torch.testing.assert_close(p[:, 3], bob, atol=1e-5, rtol=0)
    torch.testing.assert_close(p[:, 0], pivot + R1 @ down(l1 / 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(R[:, 2], R12, atol=1e-5, rtol=0)


def implicit(kind, h):
    """<= 0 inside the unit shape."""
    if kind == ELLIPSOID:
        return h.norm(dim=-1) - 1
    if kind == BOX:
        return h.abs().amax(-1) - 1
    return torch.maximum(h[..., :2].norm(dim=-1) - 1, h[..., 2].abs() - 1)


@pytest.mark.parametrize("kind", [ELLIPSOID, BOX, CYLINDER])
def test_ray_hits_against_dense_reference(kind):
    """Every hit lies on the surface, nothing lies on the ray before it, and missed rays stay outside."""
    ob = new_objects([kind])
    ob.size[0] = torch.tensor([0.5, 0.3, 0.7])
    ob.rot0[0] = syn.axis_angle(torch.nn.functional.normalize(torch.tensor([1.0, 2.0, 0.5]), dim=0), torch.tensor(0.9))
    ob.spin_axis[0], ob.spin_rate[0] = torch.tensor([0.0, 1.0, 0.0]), 1.0
    scene = bare_scene(ob)
    eye = torch.tensor([2.0, -2.5, 1.0])
    c2w, K = camera(eye.tolist(), size=32, f=60.0)
    t_time = torch.tensor([0.7])
    depth, obj = trace(scene, c2w, K, t_time, 32, 32)
    from fsm.cameras import pixel_rays

    o, d = pixel_rays(c2w, K, 32, 32)
    R, p, s = object_poses(ob, t_time)
    to_local = lambda x: ((x - p[0, 0]) @ R[0, 0]) / s[0, 0]
    hit = obj[0] == 0
    assert 0.1 < hit.float().mean() < 0.9
    x = o[0] + depth[0].nan_to_num(posinf=0)[..., None] * d[0]
    assert implicit(kind, to_local(x[hit])).abs().max() < 1e-4
    far = torch.where(hit, depth[0], torch.full_like(depth[0], 8.0))
    steps = torch.linspace(0, 1, 400)[:-1]
    samples = o[0][..., None, :] + (far[..., None, None] * steps[:, None]) * d[0][..., None, :]  # (H,W,S,3)
    assert (implicit(kind, to_local(samples)) > -1e-3).all()


def test_flat_ground_shading_and_sun_shadow():
    ob = new_objects([ELLIPSOID])
    ob.pos[0], ob.size[0] = torch.tensor([0.0, 0.0, 1.0]), 0.5
    sun = torch.nn.functional.normalize(torch.tensor([0.3, 0.2, 1.0]), dim=0)
    scene = bare_scene(ob, ground=True, light=(*sun.tolist(), 0.0), ambient=0.3)
    c2w, K = camera([0.0, -5.0, 3.0], (0.0, 0.0, 0.0), size=48, f=45.0)
    img = render(scene, c2w, K, torch.zeros(1), 48, 48)[0, 0]
    depth, obj = trace(scene, c2w, K, torch.zeros(1), 48, 48)
    from fsm.cameras import pixel_rays

    o, d = pixel_rays(c2w, K, 48, 48)
    ground = (obj[0] == -1) & torch.isfinite(depth[0])
    x = o[0] + depth[0].nan_to_num(posinf=0)[..., None] * d[0]
    # Shadowed iff the ray from the ground point to the sun passes within 0.5 of the sphere centre.
    oc = torch.tensor([0.0, 0.0, 1.0]) - x
    along = oc @ sun
    shadowed = ((oc.pow(2).sum(-1) - along**2) < 0.25) & (along > 0)
    want = torch.where(shadowed, torch.tensor(0.3), 0.3 + 0.7 * sun[2])
    assert (ground & shadowed).sum() > 5 and (ground & ~shadowed).sum() > 100
    # Pixels whose shadow test is within a hair of the boundary may go either way.
    clear = ((oc.pow(2).sum(-1) - along**2) - 0.25).abs() > 1e-3
    torch.testing.assert_close(img[ground & clear], want[ground & clear])


def test_same_seed_same_scene_and_renders():
    for family in FAMILIES:
        a, b = make_scene(11, family), make_scene(11, family)
        for f in dataclasses.fields(a.objects):
            assert torch.equal(getattr(a.objects, f.name), getattr(b.objects, f.name))
        pa, pb = make_path(a), make_path(b)
        t = frame_times(3, 24.0, 1.0)
        assert torch.equal(pa.c2w(t), pb.c2w(t))
        ia = render(a, pa.c2w(t), pa.fxfycxcy(3, 32, 32), t, 32, 32)
        ib = render(b, pb.c2w(t), pb.fxfycxcy(3, 32, 32), t, 32, 32)
        assert torch.equal(ia, ib)
    assert not torch.equal(make_scene(11, "room").objects.pos, make_scene(12, "room").objects.pos) or not torch.equal(
        make_scene(11, "room").textures.color_a, make_scene(12, "room").textures.color_a
    )


def test_batch_render_equals_one_by_one():
    scene = make_scene(5, "room")
    path = make_path(scene, "handheld")
    t = frame_times(4, 24.0, 2.0) * 7
    c2w, K = path.c2w(t), path.fxfycxcy(4, 24, 40)
    batch = render(scene, c2w, K, t, 24, 40)
    single = torch.cat([render(scene, c2w[i : i + 1], K[i : i + 1], t[i : i + 1], 24, 40) for i in range(4)])
    assert torch.equal(batch, single)
    chunked = render(scene, c2w, K, t, 24, 40, max_elements=1)  # one frame per chunk
    assert torch.equal(batch, chunked)


def test_renders_are_resolution_exact():
    """Pixel (u, v) at 1x and the centre pixel (3u+1, 3v+1) at 3x see the same ray: same colour
    (textures are evaluated at the hit point, never sampled from a texture map)."""
    scene = make_scene(8, "outdoor")
    path = make_path(scene, "orbit")
    t = torch.tensor([1.5])
    K = path.fxfycxcy(1, 24, 24)
    lo = render(scene, path.c2w(t), K, t, 24, 24, filter_textures=False)[0]
    hi = render(scene, path.c2w(t), K * 3, t, 72, 72, filter_textures=False)[0, :, 1::3, 1::3]
    close = (lo - hi).abs().amax(0) < 1e-3
    assert close.float().mean() > 0.99  # a few pixels on edges may flip with the last float bit


def test_texture_filter_only_fades_patterns_smaller_than_a_pixel():
    scene = make_scene(8, "outdoor")
    path = make_path(scene, "orbit")
    t = torch.tensor([1.5])
    c2w, K = path.c2w(t), path.fxfycxcy(1, 32, 32)
    plain = render(scene, c2w, K, t, 32, 32, filter_textures=False)[0]
    filtered = render(scene, c2w, K, t, 32, 32)[0]
    depth, obj = trace(scene, c2w, K, t, 32, 32)
    assert torch.equal(plain[:, obj[0] >= 0], filtered[:, obj[0] >= 0])  # objects untouched
    from fsm.cameras import pixel_rays

    _, d = pixel_rays(c2w, K, 32, 32)
    ground = (obj[0] < 0) & torch.isfinite(depth[0])
    cells = depth[0] * scene.textures.scale[0] / (K[0, 0] * d[0, ..., 2].abs())  # ground cells per pixel
    near, far = ground & (cells < 0.45), ground & (cells > 1.6)
    assert near.sum() > 20 and far.sum() > 20
    torch.testing.assert_close(plain[:, near], filtered[:, near], atol=1e-6, rtol=0)  # only float rounding
    # Far away the pattern is gone: only shading (sun, shadows) varies, never the texture.
    a, b = scene.textures.color_a[0], scene.textures.color_b[0]
    ratio = filtered[:, far] / ((a + b) / 2)[:, None]  # = shading factor, the same in all channels
    torch.testing.assert_close(ratio[0], ratio[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(ratio[0], ratio[2], atol=1e-4, rtol=0)


def test_supersampling_is_the_mean_of_subpixels():
    scene = make_scene(2, "object")
    path = make_path(scene)
    t = torch.tensor([0.5])
    K = path.fxfycxcy(1, 16, 16)
    ss = render(scene, path.c2w(t), K, t, 16, 16, supersample=2)
    hi = render(scene, path.c2w(t), K * 2, t, 32, 32)
    torch.testing.assert_close(ss, torch.nn.functional.avg_pool2d(hi, 2))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_renders_varied_images_with_motion(family):
    scene = make_scene(21, family)
    assert scene.family == family
    moving = (scene.objects.lin.abs().sum(-1) + scene.objects.amp.abs().sum(-1) + scene.objects.bounce
              + scene.objects.swing_amp + scene.objects.spin_rate.abs() + scene.objects.pulse.abs().sum(-1)) > 0  # fmt: skip
    assert moving.any() and (len(scene.objects) >= 3)
    path = make_path(scene)
    t = torch.tensor([0.0, 2.0])
    imgs = render(scene, path.c2w(t), path.fxfycxcy(2, 32, 32), t, 32, 32)
    assert imgs.shape == (2, 3, 32, 32) and torch.isfinite(imgs).all()
    assert imgs.std() > 0.05 and (imgs[0] - imgs[1]).abs().mean() > 0.01
    _, obj = trace(scene, path.c2w(t), path.fxfycxcy(2, 32, 32), t, 32, 32)
    assert (obj >= 0).any()  # the camera sees at least one object


@pytest.mark.parametrize("kind", syn.PATH_KINDS)
def test_paths_stay_in_the_camera_region_and_face_the_scene(kind):
    for family in FAMILIES:
        scene = make_scene(4, family)
        path = make_path(scene, kind)
        c2w = path.c2w(frame_times(120, 24.0))
        R = c2w[:, :3, :3]
        torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(120, 3, 3), atol=1e-5, rtol=0)
        eye = c2w[:, :3, 3]
        r = (eye[:, :2] - scene.look[:2]).norm(dim=-1)
        slack = 0.4  # hand-held shake may leave the region slightly
        assert (r > scene.cam_radius[0] - slack).all() and (r < scene.cam_radius[1] + slack).all()
        assert ((scene.look - eye) * c2w[:, :3, 2]).sum(-1).min() > 0  # the scene centre is in front
        assert (eye[1:] - eye[:-1]).norm(dim=-1).max() < 0.2  # smooth: small steps at 24 fps
        if kind in ("orbit", "dolly", "handheld"):
            assert (eye - eye[0]).norm(dim=-1).max() > 0.3  # the camera moves


def test_novel_cameras_leave_the_trajectory_and_stay_in_the_region():
    scene = make_scene(9, "room")
    c2w = make_path(scene).c2w(frame_times(16))
    novel = novel_cameras(scene, c2w, torch.Generator().manual_seed(0))
    shift = (novel[:, :3, 3] - c2w[:, :3, 3]).norm(dim=-1)
    assert (shift > 0.1).all()
    r = (novel[:, :2, 3] - scene.look[:2]).norm(dim=-1)
    assert (r >= scene.cam_radius[0] - 1e-5).all() and (r <= scene.cam_radius[1] + 1e-5).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    scene = make_scene(3, "outdoor")
    path = make_path(scene)
    t = frame_times(4, 24.0)
    args = (path.c2w(t), path.fxfycxcy(4, 64, 64), t, 64, 64)
    cpu = render(scene, *args)
    gpu = render(scene, *args, device="cuda").cpu()
    assert ((cpu - gpu).abs().amax(1) > 1e-3).float().mean() < 0.002  # edge pixels may flip

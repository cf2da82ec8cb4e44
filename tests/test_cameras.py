"""Camera geometry: rays, projection, cover-crop intrinsics, normalisation, paths."""

import math

import torch

from fsm.cameras import (
    CoverCrop, interpolate_cameras, look_at, matrix_to_quaternion, normalize_poses,
    normalize_times, pixel_rays, plucker_rays, project_points, quaternion_to_matrix, slerp, smooth_trajectory,
)


def _random_c2w(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, :3, :3] = quaternion_to_matrix(torch.randn(n, 4, generator=g))
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g) * 4 + 2
    return c2w


def test_rays_go_through_pixel_centres():
    c2w = _random_c2w(3)
    K = torch.tensor([[50.0, 60.0, 31.0, 17.0]]).repeat(3, 1)
    o, d = pixel_rays(c2w, K, 24, 40)
    assert torch.allclose(d.norm(dim=-1), torch.ones(()), atol=1e-6)
    uv, z = project_points((o + 2.5 * d).reshape(3, -1, 3), c2w, K)
    v, u = torch.meshgrid(torch.arange(24.0), torch.arange(40.0), indexing="ij")
    expected = torch.stack([u + 0.5, v + 0.5], -1).reshape(-1, 2)
    torch.testing.assert_close(uv, expected.expand_as(uv), atol=2e-3, rtol=0)
    assert (z > 0).all()


def test_plucker_is_direction_and_moment():
    c2w = _random_c2w(2)
    K = torch.tensor([[30.0, 30.0, 8.0, 8.0]]).repeat(2, 1)
    pl = plucker_rays(c2w, K, 16, 16)
    assert pl.shape == (2, 6, 16, 16)
    d, m = pl[:, :3], pl[:, 3:]
    # the moment o x d is orthogonal to d, and the same for any point on the ray (o + s d)
    assert (d * m).sum(1).abs().max() < 1e-5
    o = c2w[:, :3, 3, None, None]
    torch.testing.assert_close(torch.cross((o + 3.0 * d), d, dim=1), m, atol=1e-4, rtol=1e-4)


def test_cover_crop_keeps_projection():
    """A 3D point lands on the same image content after resize-to-cover + centre crop."""
    c2w = _random_c2w(1)
    K = torch.tensor([[400.0, 380.0, 321.0, 235.0]])
    crop = CoverCrop(480, 640, 128, 128)  # scale 128/480, width 171 -> crop 21 px from the left
    assert crop.resized_hw == (128, 171) and crop.offset == (0, 21)
    o, d = pixel_rays(c2w, K, 480, 640)
    point = (o + 5 * d)[0, 240, 400]  # pixel (400, 240) of the source image
    uv, _ = project_points(point[None, None], c2w, crop.intrinsics(K))
    # the resized image is 171 px wide: x scales by exactly 171/640, y by 128/480
    torch.testing.assert_close(uv[0, 0], torch.tensor([400.5 * 171 / 640 - 21, 240.5 * 128 / 480]), atol=1e-3, rtol=0)
    img = torch.rand(2, 3, 480, 640)
    assert crop.images(img).shape == (2, 3, 128, 128)
    # 512 -> 128 is an exact factor 4
    torch.testing.assert_close(CoverCrop(512, 512, 128, 128).intrinsics(torch.tensor([400.0, 400, 256, 256])), torch.tensor([100.0, 100, 64, 64]))


def test_normalize_poses():
    c2w = _random_c2w(10)
    norm_c2w, T = normalize_poses(c2w)
    t = norm_c2w[:, :3, 3]
    assert math.isclose(t.abs().max().item(), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(t.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(T.c2w_to_world(norm_c2w), c2w, atol=1e-5, rtol=1e-5)
    # rigid: rotations stay orthonormal; points map consistently with cameras
    R = norm_c2w[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(10, 3, 3), atol=1e-5, rtol=0)
    p = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(T.points_to_world(T.points_to_normalized(p)), p, atol=1e-5, rtol=1e-5)
    K = torch.tensor([[30.0, 30.0, 8.0, 8.0]]).repeat(10, 1)
    uv_world, z_world = project_points(p.expand(10, 5, 3), c2w, K)
    uv_norm, z_norm = project_points(T.points_to_normalized(p).expand(10, 5, 3), norm_c2w, K)
    # depth scales with the normalisation; pixels agree wherever the point is not grazing the
    # image plane (there the division by z turns float32 rounding into hundreds of pixels)
    torch.testing.assert_close(z_norm * (z_world.abs().amax() / z_norm.abs().amax()), z_world, atol=1e-4, rtol=1e-4)
    away = z_world.abs() > 0.05
    assert away.float().mean() > 0.8
    torch.testing.assert_close(uv_world[away], uv_norm[away], atol=1e-3, rtol=1e-4)


def test_normalize_times():
    t = torch.tensor([2.0, 3.0, 4.0, 5.0])
    torch.testing.assert_close(normalize_times(t, (2.0, 4.0)), torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    assert normalize_times(t, (3.0, 3.0)).abs().max() == 0


def test_quaternions_and_slerp():
    R = quaternion_to_matrix(torch.randn(50, 4, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-5, rtol=0)
    # slerp halfway between identity and a 90 degree turn about z is a 45 degree turn
    qa = torch.tensor([1.0, 0, 0, 0])
    qb = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    half = quaternion_to_matrix(slerp(qa, qb, torch.tensor(0.5)))
    c = math.cos(math.pi / 4)
    torch.testing.assert_close(half, torch.tensor([[c, -c, 0], [c, c, 0], [0, 0, 1.0]]), atol=1e-6, rtol=0)


def test_interpolate_cameras_through_keys():
    keys = _random_c2w(4, seed=5)
    path = interpolate_cameras(keys, torch.tensor([0.0, 1.0, 2.0, 3.0, 1.5]))
    torch.testing.assert_close(path[:4], keys, atol=1e-5, rtol=1e-5)
    R = path[4, :3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-5, rtol=0)
    smooth = smooth_trajectory(keys, window=3)
    assert smooth.shape == keys.shape and torch.isfinite(smooth).all()


def test_look_at_opencv():
    c2w = look_at(torch.tensor([0.0, 0.0, -2.0]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    torch.testing.assert_close(c2w[:3, :3], torch.eye(3))
    uv, z = project_points(torch.zeros(1, 3), c2w, torch.tensor([10.0, 10.0, 5.0, 5.0]))
    torch.testing.assert_close(uv[0], torch.tensor([5.0, 5.0]))
    assert z.item() == 2.0


def test_look_at_batched_equals_one_camera_at_a_time():
    g = torch.Generator().manual_seed(0)
    eye, target = torch.randn(2, 5, 3, generator=g, dtype=torch.float64), torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    per_camera_up = torch.nn.functional.normalize(torch.randn(2, 5, 3, generator=g, dtype=torch.float64), dim=-1)
    for up in (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), per_camera_up):  # shared (3,) or (2,5,3)
        batched = look_at(eye, target, up)
        ups = up.expand(2, 5, 3)
        single = torch.stack([torch.stack([look_at(eye[i, j], target[i, j], ups[i, j]) for j in range(5)]) for i in range(2)])
        assert batched.shape == (2, 5, 4, 4)
        torch.testing.assert_close(batched, single, atol=1e-12, rtol=0)
        # each camera sits at its eye and looks at its target (OpenCV: +z forward)
        torch.testing.assert_close(batched[..., :3, 3], eye, atol=1e-12, rtol=0)
        torch.testing.assert_close(batched[..., :3, 2], torch.nn.functional.normalize(target - eye, dim=-1), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------
# normalize_poses on degenerate layouts (issue 13, part 3)


def _looking_at(eyes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV c2w (N,4,4) at eyes (N,3) looking at target, world up = -y (built here, independent of look_at)."""
    z = torch.nn.functional.normalize(target - eyes, dim=-1)
    x = torch.nn.functional.normalize(torch.cross(z, torch.tensor([0.0, -1.0, 0.0]).expand_as(z), dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    c2w = torch.eye(4).repeat(eyes.shape[0], 1, 1)
    c2w[:, :3, :3] = torch.stack([x, y, z], -1)
    c2w[:, :3, 3] = eyes
    return c2w


def _ring(n, elevation_deg, radius=3.0, center=(1.0, -2.0, 5.0)):
    a = torch.arange(n) * (2 * math.pi / n)
    e = math.radians(elevation_deg)
    c = torch.tensor(center)
    eyes = c + radius * torch.stack([torch.cos(a) * math.cos(e), -math.sin(e) * torch.ones(n), torch.sin(a) * math.cos(e)], -1)
    return _looking_at(eyes, c.expand(n, 3))


def _assert_proper_normalisation(c2w: torch.Tensor):
    norm_c2w, T = normalize_poses(c2w)
    n = c2w.shape[0]
    assert torch.isfinite(norm_c2w).all()
    R = norm_c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand(n, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(n), atol=1e-5, rtol=0)
    torch.testing.assert_close(T.rotation.T @ T.rotation, torch.eye(3), atol=1e-6, rtol=0)
    assert T.scale > 0 and math.isfinite(T.scale)
    # Relative rotations are unchanged (one rotation applied to every camera) ...
    torch.testing.assert_close(R[:1].transpose(1, 2) @ R, c2w[:1, :3, :3].transpose(1, 2) @ c2w[:, :3, :3], atol=1e-5, rtol=0)
    # ... and all distances shrink by the one scale; translations end up in [-1, 1].
    t = norm_c2w[:, :3, 3]
    torch.testing.assert_close(torch.cdist(t, t) * T.scale, torch.cdist(c2w[:, :3, 3], c2w[:, :3, 3]), atol=1e-4, rtol=1e-5)
    assert t.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(T.c2w_to_world(norm_c2w), c2w, atol=1e-4, rtol=1e-5)
    return norm_c2w, T


def test_normalize_poses_full_rings_do_not_collapse():
    """Cameras evenly around an object average to ~no forward direction; the frame must not degenerate."""
    for elevation in (0.0, 20.0, 60.0, -30.0):
        ring = _ring(16, elevation)
        # the layout really is degenerate: the mean forward has no horizontal part (it is zero
        # at elevation 0, else straight up/down, parallel to the mean down axis)
        assert ring[:, [0, 2], 2].mean(0).norm() < 1e-5
        for every in (1, 2, 4):
            norm_c2w, T = _assert_proper_normalisation(ring[::every])
            # distinct cameras stay distinct: nearest neighbours keep their true (scaled) spacing
            t = norm_c2w[:, :3, 3]
            d = torch.cdist(t, t) + torch.eye(t.shape[0]) * 10
            assert d.min() * T.scale > 0.5
            # the frame is a property of the layout, not of rounding noise: jittering every camera
            # by ~1e-4 rad moves it by about as much
            jitter = ring[::every].clone()
            g = torch.Generator().manual_seed(every)
            small = quaternion_to_matrix(torch.cat([torch.ones(jitter.shape[0], 1), 5e-5 * torch.randn(jitter.shape[0], 3, generator=g)], 1))
            jitter[:, :3, :3] = jitter[:, :3, :3] @ small
            _, T_jitter = normalize_poses(jitter)
            assert (T_jitter.rotation - T.rotation).abs().max() < 1e-2

    # four cameras with exactly representable axes: forward axes sum to exactly zero
    quarter = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # 90 degrees about y
    R = torch.stack([torch.linalg.matrix_power(quarter, k) for k in range(4)])
    square = torch.eye(4).repeat(4, 1, 1)
    square[:, :3, :3] = R
    square[:, :3, 3] = -2.0 * R[:, :, 2]  # 2 units behind the origin along each camera's forward
    assert square[:, :3, 2].sum(0).abs().max() == 0
    _assert_proper_normalisation(square)


def test_normalize_poses_degenerate_layouts():
    one = _random_c2w(1)
    norm_c2w, T = _assert_proper_normalisation(one)
    torch.testing.assert_close(norm_c2w[0], torch.eye(4), atol=1e-6, rtol=0)  # the camera is the frame
    assert T.scale == 1.0  # nothing to scale by

    two = _random_c2w(2, seed=3)
    norm_c2w, _ = _assert_proper_normalisation(two)
    assert math.isclose(norm_c2w[:, :3, 3].abs().max().item(), 1.0, rel_tol=1e-5)

    # collinear cameras, all looking the same way along their line
    line = torch.eye(4).repeat(5, 1, 1)
    line[:, :3, 3] = torch.linspace(0, 4, 5)[:, None] * torch.tensor([0.0, 0.0, 1.0])
    _assert_proper_normalisation(line)
    # collinear, looking in opposite directions (forward axes cancel exactly)
    opposite = line.clone()
    opposite[1::2, :3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))
    assert opposite[:4, :3, 2].mean(0).norm() == 0
    _assert_proper_normalisation(opposite[:4])

    # all cameras at one point, turning around (a panorama): only the rotation is defined
    pano = _ring(8, 0.0)
    pano[:, :3, 3] = torch.tensor([3.0, 1.0, -2.0])
    norm_c2w, T = _assert_proper_normalisation(pano)
    assert T.scale == 1.0 and norm_c2w[:, :3, 3].abs().max() < 1e-5

    # down axes that cancel too: cameras rolled 0 and 180 degrees, looking the opposite ways
    rolled = torch.eye(4).repeat(2, 1, 1)
    rolled[1, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    rolled[1, :3, 3] = torch.tensor([0.0, 0.0, 2.0])
    _assert_proper_normalisation(rolled)


def test_normalize_poses_keeps_the_mean_camera_frame_for_ordinary_clips():
    """A forward-facing clip: the normalised frame's z is the mean viewing direction (unchanged behaviour)."""
    c2w = _looking_at(torch.randn(6, 3, generator=torch.Generator().manual_seed(2)) * 0.3, torch.tensor([0.0, 0.0, 10.0]).expand(6, 3))
    _, T = normalize_poses(c2w)
    mean_z = torch.nn.functional.normalize(c2w[:, :3, 2].mean(0), dim=0)
    torch.testing.assert_close(T.rotation[:, 2], mean_z, atol=1e-6, rtol=0)

"""Camera geometry: rays, projection, cover-crop intrinsics, normalisation, paths."""

import math

import torch

from fsm.cameras import (
    CoverCrop, PoseNormalization, interpolate_cameras, look_at, matrix_to_quaternion, normalize_poses,
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

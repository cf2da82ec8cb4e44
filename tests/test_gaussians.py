"""4D Gaussians: activation, 4D rotation, slicing (vs. the textbook formula in float64), PLY."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsm.cameras import quaternion_to_matrix
from fsm.gaussians import (
    LOG_SCALE_XYZ_MAX,
    OPACITY_BIAS,
    SCALE_T_BIAS,
    SCALE_XYZ_BIAS,
    SH_C0,
    Gaussians3D,
    Gaussians4D,
    activate_gaussians,
    covariance_4d,
    export_ply,
    read_ply,
    rotation_4d,
    slice_4dgs,
)


def random_gaussians(n, scales_xyz=None, scale_t=None, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    return Gaussians4D(
        means_xyz=r(n, 3),
        mean_t=r(n) * 0.5,
        rgb=torch.rand(n, 3, generator=gen, dtype=torch.float64),
        scales_xyz=(r(n, 3) * 0.5 - 2).exp() if scales_xyz is None else torch.full((n, 3), scales_xyz, dtype=torch.float64),
        scale_t=(r(n) * 0.5 - 1).exp() if scale_t is None else torch.full((n,), scale_t, dtype=torch.float64),
        rot_left=F.normalize(r(n, 4), dim=-1),
        rot_right=F.normalize(r(n, 4), dim=-1),
        opacity=torch.rand(n, generator=gen, dtype=torch.float64),
    ), dtype


def cast(g, dtype):
    return Gaussians4D(**{k: v.to(dtype) for k, v in vars(g).items()})


def textbook_slice(g, t):
    """Conditional Gaussian via the Schur complement of the dense 4x4 covariance."""
    S = covariance_4d(g)
    s_xt, s_tt = S[..., :3, 3], S[..., 3, 3]
    dt = t - g.mean_t
    means = g.means_xyz + s_xt / s_tt[..., None] * dt[..., None]
    cov = S[..., :3, :3] - s_xt[..., :, None] * s_xt[..., None, :] / s_tt[..., None, None]
    return means, cov, g.opacity * torch.exp(-0.5 * dt**2 / s_tt)


# ----------------------------------------------------------------------------------------------
# 4D rotation


def test_rotation_4d_is_a_rotation_and_conjugate_pair_is_3d_rotation():
    gen = torch.Generator().manual_seed(1)
    p = F.normalize(torch.randn(50, 4, generator=gen, dtype=torch.float64), dim=-1)
    q = F.normalize(torch.randn(50, 4, generator=gen, dtype=torch.float64), dim=-1)
    R = rotation_4d(p, q)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(4, dtype=torch.float64).expand(50, 4, 4))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    # p * v * conj(p) rotates (x,y,z) by p and leaves time alone.
    R3 = rotation_4d(p, p * p.new_tensor([1, -1, -1, -1]))
    torch.testing.assert_close(R3[:, :3, :3], quaternion_to_matrix(p))
    torch.testing.assert_close(R3[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(50, 4))
    # A left-only rotation mixes time into space (it is not a 3D rotation).
    assert (rotation_4d(p, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(50, 4))[:, 3, :3].abs() > 1e-3).any()


# ----------------------------------------------------------------------------------------------
# Activation


def test_activation_ranges_and_zero_input_defaults():
    B, N = 2, 64
    gen = torch.Generator().manual_seed(2)
    ray_o = torch.randn(B, N, 3, generator=gen)
    ray_d = F.normalize(torch.randn(B, N, 3, generator=gen), dim=-1)
    frame_time = torch.rand(B, N, generator=gen) * 2 - 1
    raw = torch.randn(B, N, 20, generator=gen) * 10
    g = activate_gaussians(raw, ray_o, ray_d, frame_time, near=0.5, far=20.0)
    # Pixel-aligned: on the ray, depth inside [near, far].
    depth = ((g.means_xyz - ray_o) * ray_d).sum(-1)
    torch.testing.assert_close(g.means_xyz, ray_o + depth[..., None] * ray_d, atol=1e-4, rtol=1e-4)
    assert (depth >= 0.5 - 1e-4).all() and (depth <= 20.0 + 1e-4).all()
    assert ((g.mean_t - frame_time).abs() <= 0.5 + 1e-6).all()
    assert (g.rgb >= 0).all() and (g.rgb <= 1).all() and (g.opacity >= 0).all() and (g.opacity <= 1).all()
    assert (g.scales_xyz <= math.exp(LOG_SCALE_XYZ_MAX) + 1e-6).all() and (g.scales_xyz > 0).all()
    torch.testing.assert_close(g.rot_left.norm(dim=-1), torch.ones(B, N))
    torch.testing.assert_close(g.rot_right.norm(dim=-1), torch.ones(B, N))

    g0 = activate_gaussians(torch.zeros(B, N, 20), ray_o, ray_d, frame_time, init_depth=3.0)
    torch.testing.assert_close(((g0.means_xyz - ray_o) * ray_d).sum(-1), torch.full((B, N), 3.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(g0.mean_t, frame_time)
    torch.testing.assert_close(g0.scales_xyz, torch.full((B, N, 3), math.exp(SCALE_XYZ_BIAS)))
    torch.testing.assert_close(g0.scale_t, torch.full((B, N), math.exp(SCALE_T_BIAS)))
    torch.testing.assert_close(g0.opacity, torch.full((B, N), 1 / (1 + math.exp(-OPACITY_BIAS))))
    torch.testing.assert_close(rotation_4d(g0.rot_left, g0.rot_right), torch.eye(4).expand(B, N, 4, 4))

    # A bf16 head output (autocast) is activated in fp32: positions need the precision.
    g16 = activate_gaussians(raw.bfloat16(), ray_o, ray_d, frame_time, near=0.5, far=20.0)
    assert g16.means_xyz.dtype == torch.float32
    torch.testing.assert_close(g16.means_xyz, activate_gaussians(raw.bfloat16().float(), ray_o, ray_d, frame_time, near=0.5, far=20.0).means_xyz)

    with pytest.raises(ValueError, match="20 channels"):
        activate_gaussians(torch.zeros(B, N, 19), ray_o, ray_d, frame_time)


# ----------------------------------------------------------------------------------------------
# Slicing


def test_slice_matches_textbook_conditional_in_float64():
    g64, _ = random_gaussians(500, seed=3)
    t = 0.3
    ref_means, ref_cov, ref_op = textbook_slice(g64, t)
    out = slice_4dgs(cast(g64, torch.float32), t)  # the fp32 path under test
    assert out.means.dtype == torch.float32
    torch.testing.assert_close(out.means.double(), ref_means, rtol=1e-5, atol=1e-5)
    scale = ref_cov.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(out.covariances.double() / scale, ref_cov / scale, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.opacities.double(), ref_op, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.rgb.double(), g64.rgb, rtol=1e-6, atol=1e-7)
    # Per-scene times broadcast: (B,1) against (B,N).
    gb = Gaussians4D(**{k: torch.stack([v, v]) for k, v in vars(g64).items()})
    outb = slice_4dgs(gb, torch.tensor([[t], [-0.7]], dtype=torch.float64))
    torch.testing.assert_close(outb.means[0], ref_means)
    torch.testing.assert_close(outb.means[1], textbook_slice(g64, -0.7)[0])


def test_slice_stays_psd_for_thin_long_lived_gaussians_in_fp32():
    g64, _ = random_gaussians(20000, scales_xyz=1e-3, scale_t=10.0, seed=4)
    g32 = cast(g64, torch.float32)
    ref_cov = textbook_slice(g64, 0.2)[1]
    ref_max = torch.linalg.eigvalsh(ref_cov)[:, -1]

    stable = slice_4dgs(g32, 0.2).covariances.double()
    rel_min_eig = torch.linalg.eigvalsh(stable)[:, 0] / ref_max
    assert rel_min_eig.min() >= -1e-6
    rel_err = (stable - ref_cov).flatten(1).norm(dim=1) / ref_cov.flatten(1).norm(dim=1)
    assert rel_err.max() < 1e-2

    # The textbook Schur complement in fp32 is not PSD here (the reason for the stable form).
    naive = textbook_slice(g32, 0.2)[1].double()
    assert (torch.linalg.eigvalsh(naive)[:, 0] / ref_max).min() < -0.1
    assert ((naive - ref_cov).flatten(1).norm(dim=1) / ref_cov.flatten(1).norm(dim=1)).max() > 0.5


def test_slice_gradients_match_finite_differences():
    g64, _ = random_gaussians(4, seed=5)
    names = ["means_xyz", "mean_t", "scales_xyz", "scale_t", "rot_left", "rot_right", "opacity"]

    def f(*tensors):
        g = Gaussians4D(**{**vars(g64), **dict(zip(names, tensors))})
        out = slice_4dgs(g, 0.1)
        return out.means, out.covariances, out.opacities

    inputs = [getattr(g64, k).clone().requires_grad_() for k in names]
    assert torch.autograd.gradcheck(f, inputs)


def test_prune_below_drops_low_marginals():
    g64, _ = random_gaussians(300, seed=6)
    full = slice_4dgs(g64, 0.8)
    pruned = slice_4dgs(g64, 0.8, prune_below=0.05)
    marginal = full.opacities / g64.opacity
    keep = marginal >= 0.05
    assert 0 < keep.sum() < 300
    torch.testing.assert_close(pruned.means, full.means[keep])
    torch.testing.assert_close(pruned.opacities, full.opacities[keep])
    batched = Gaussians4D(**{k: v[None] for k, v in vars(g64).items()})
    with pytest.raises(ValueError, match="unbatched"):
        slice_4dgs(batched, 0.8, prune_below=0.05)


# ----------------------------------------------------------------------------------------------
# PLY


STANDARD_FIELDS = [
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
]


def test_ply_round_trip(tmp_path):
    g64, _ = random_gaussians(200, seed=7)
    g3 = slice_4dgs(cast(g64, torch.float32), 0.0)
    # One flat (rank-2) covariance: its tiny eigenvalue gets clamped, the matrix survives.
    g3.covariances[0] = torch.diag(torch.tensor([0.01, 0.02, 0.0]))
    path = tmp_path / "scene.ply"
    export_ply(path, g3)

    back = read_ply(path)
    torch.testing.assert_close(back.means, g3.means)
    torch.testing.assert_close(back.rgb, g3.rgb, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(back.opacities, g3.opacities, atol=1e-6, rtol=1e-5)
    scale = g3.covariances.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(back.covariances / scale, g3.covariances / scale, atol=1e-5, rtol=0)

    # The file itself is the standard 3DGS layout: check it byte-wise against the definition.
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 200"]
    assert [l.split()[-1] for l in lines if l.startswith("property float")] == STANDARD_FIELDS
    data = np.frombuffer(body, dtype="<f4").reshape(200, 17)
    np.testing.assert_allclose(data[:, 6:9], (g3.rgb.numpy() - 0.5) / SH_C0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-data[:, 9])), g3.opacities.numpy(), rtol=1e-5, atol=1e-6)
    assert (data[:, 3:6] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(data[:, 13:17], axis=1), 1, rtol=1e-6)
    var = np.exp(2 * data[:, 10:13].astype(np.float64))
    np.testing.assert_allclose(np.sort(var, 1), np.linalg.eigvalsh(g3.covariances.double().numpy()).clip(1e-12), rtol=1e-4, atol=1e-9)


def test_read_ply_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"hello\n")
    with pytest.raises(ValueError, match="bad.ply.*not a PLY"):
        read_ply(bad)
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="ascii.ply.*binary_little_endian"):
        read_ply(ascii_ply)
    g3 = Gaussians3D(torch.zeros(3, 3), torch.eye(3).expand(3, 3, 3) * 0.01, torch.rand(3, 3), torch.rand(3))
    good = tmp_path / "cut.ply"
    export_ply(good, g3)
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError, match="cut.ply.*truncated"):
        read_ply(good)

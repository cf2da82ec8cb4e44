"""4D Gaussians: activation of the 4DGS head's raw output, slicing at a time, PLY export.

A 4D Gaussian lives in (x, y, z, t). Its covariance is Sigma = R diag(s)^2 R^T with a 4D
rotation R built from two unit quaternions (Yang et al., "Real-time photorealistic dynamic
scene representation and rendering with 4D Gaussian splatting"). Conditioning on a time t
gives an ordinary 3D Gaussian whose opacity is scaled by the (unnormalised) temporal marginal;
those are what the rasterizer (fsm.raster) draws and what export_ply writes.

Shapes: leading dims are free (written (...,N) below); the head produces (B, N) with
N = V * H * W pixel-aligned Gaussians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsm.cameras import matrix_to_quaternion, quaternion_to_matrix

# ----------------------------------------------------------------------------------------------
# Containers


@dataclass
class Gaussians4D:
    means_xyz: torch.Tensor  # (...,N,3) world position at time mean_t
    mean_t: torch.Tensor  # (...,N)   centre in (normalised) time
    rgb: torch.Tensor  # (...,N,3) colour in [0,1]
    scales_xyz: torch.Tensor  # (...,N,3) standard deviations along the rotated axes 0-2
    scale_t: torch.Tensor  # (...,N)   standard deviation along the rotated axis 3
    rot_left: torch.Tensor  # (...,N,4) unit quaternion (w,x,y,z), left-isoclinic factor
    rot_right: torch.Tensor  # (...,N,4) unit quaternion (w,x,y,z), right-isoclinic factor
    opacity: torch.Tensor  # (...,N)   in (0,1)

    def __getitem__(self, idx) -> "Gaussians4D":
        """Index the leading dims of every field alike: g[0] (one scene), g[mask] (a subset)."""
        return Gaussians4D(**{k: v[idx] for k, v in vars(self).items()})


@dataclass
class Gaussians3D:
    means: torch.Tensor  # (...,N,3)
    covariances: torch.Tensor  # (...,N,3,3) symmetric PSD
    rgb: torch.Tensor  # (...,N,3) in [0,1]
    opacities: torch.Tensor  # (...,N) in [0,1]

    def __len__(self) -> int:
        return self.means.shape[-2]

    def __getitem__(self, idx) -> "Gaussians3D":
        """Index the leading dims of every field alike: g[0] (one scene), g[mask] (a subset)."""
        return Gaussians3D(**{k: v[idx] for k, v in vars(self).items()})


# ----------------------------------------------------------------------------------------------
# Activation of the 20 raw numbers per Gaussian

# Raw channel layout, in the order of the paper (Sec. 3.1): xyz 3, t 1, rgb 3, scale_xyz 3,
# scale_t 1, left quaternion 4, right quaternion 4, opacity 1.
RAW_SPLITS = (3, 1, 3, 3, 1, 4, 4, 1)
RAW_DIM = sum(RAW_SPLITS)  # 20

# Depth starts here (in normalised scene units, where camera positions lie in [-1,1]) when the
# xyz channels are 0; the bias is logit((INIT_DEPTH - near) / (far - near)).
INIT_DEPTH = 2.0
# Time offset from the pixel's frame time is tanh(raw_t) * MAX_TIME_OFFSET, in normalised time
# (the window spans [-1,1]), so a Gaussian may slide a quarter of the window.
MAX_TIME_OFFSET = 0.5
# Spatial std = exp(min(raw + SCALE_XYZ_BIAS, LOG_SCALE_XYZ_MAX)): starts at exp(-2.3) ~ 0.1
# and never exceeds exp(-1.2) ~ 0.3 (the GS-LRM / Long-LRM choice; huge splats cause blur
# and slow rasterization).
SCALE_XYZ_BIAS = -2.3
LOG_SCALE_XYZ_MAX = -1.2
# Temporal std = exp(min(raw + SCALE_T_BIAS, LOG_SCALE_T_MAX)): starts at exp(-1.6) ~ 0.2 of
# normalised time; the cap exp(1) ~ 2.7 lets static content live across the whole window.
SCALE_T_BIAS = -1.6
LOG_SCALE_T_MAX = 1.0
# Opacity = sigmoid(raw + OPACITY_BIAS): starts at sigmoid(-2) ~ 0.12 so early renders are
# not a wall of opaque splats (Long-LRM / tttLRM).
OPACITY_BIAS = -2.0
# Quaternion = normalize(raw + IDENTITY_QUAT): a zero output means "no rotation".
IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


def activate_gaussians(
    raw: torch.Tensor,
    ray_o: torch.Tensor,
    ray_d: torch.Tensor,
    frame_time: torch.Tensor,
    near: float = 0.01,
    far: float = 100.0,
    init_depth: float = INIT_DEPTH,
    max_time_offset: float = MAX_TIME_OFFSET,
) -> Gaussians4D:
    """Map the head's raw output to 4D Gaussian parameters (all differentiable).

    raw (...,N,20), ray_o (...,N,3), ray_d (...,N,3) unit directions of each Gaussian's pixel
    ray, frame_time (...,N) the normalised time of that pixel's frame.

      depth     = near + sigmoid(mean(raw_xyz) + logit((init_depth-near)/(far-near))) * (far-near)
      means_xyz = ray_o + depth * ray_d                (pixel-aligned, depth in [near, far])
      mean_t    = frame_time + tanh(raw_t) * max_time_offset
      rgb       = sigmoid(raw_rgb)
      scales    = exp(min(raw + bias, cap))            (constants SCALE_*_BIAS, LOG_SCALE_*_MAX)
      rot_*     = normalize(raw_q + (1,0,0,0))
      opacity   = sigmoid(raw_opacity + OPACITY_BIAS)
    """
    if raw.shape[-1] != RAW_DIM:
        raise ValueError(f"activate_gaussians: raw must end in {RAW_DIM} channels, got shape {tuple(raw.shape)}")
    if not 0 <= near < init_depth < far:
        raise ValueError(f"activate_gaussians: need 0 <= near < init_depth < far, got {near}, {init_depth}, {far}")
    # Positions need fp32 at least (bf16 has ~3 significant digits: depth 50 +- 0.2).
    dtype = torch.promote_types(raw.dtype, torch.float32)
    raw, ray_o, ray_d, frame_time = (x.to(dtype) for x in (raw, ray_o, ray_d, frame_time))
    xyz, t, rgb, s_xyz, s_t, q_l, q_r, op = raw.split(RAW_SPLITS, dim=-1)

    depth_bias = math.log((init_depth - near) / (far - init_depth))  # logit of the initial fraction
    depth = near + torch.sigmoid(xyz.mean(-1) + depth_bias) * (far - near)  # (...,N)
    identity = raw.new_tensor(IDENTITY_QUAT)
    return Gaussians4D(
        means_xyz=ray_o + depth[..., None] * ray_d,
        mean_t=frame_time + torch.tanh(t[..., 0]) * max_time_offset,
        rgb=torch.sigmoid(rgb),
        scales_xyz=torch.exp((s_xyz + SCALE_XYZ_BIAS).clamp(max=LOG_SCALE_XYZ_MAX)),
        scale_t=torch.exp((s_t[..., 0] + SCALE_T_BIAS).clamp(max=LOG_SCALE_T_MAX)),
        rot_left=F.normalize(q_l + identity, dim=-1),
        rot_right=F.normalize(q_r + identity, dim=-1),
        opacity=torch.sigmoid(op[..., 0] + OPACITY_BIAS),
    )


# ----------------------------------------------------------------------------------------------
# 4D rotation and covariance
#
# Every rotation of R^4 is v -> p * v * q for two unit quaternions p, q (quaternion product,
# v read as a quaternion). v -> p * v is a left-isoclinic rotation, v -> v * q a right-isoclinic
# one, and the two commute. We read the 4D point (x, y, z, t) as the quaternion t + xi + yj + zk
# (time is the real part). Then q = conj(p) gives v -> p v p^-1, the ordinary 3D rotation of
# (x, y, z) by p that leaves t alone, and p = q = identity gives R = I.


def _left_mult_matrix(p: torch.Tensor) -> torch.Tensor:
    """(...,4) quaternion (w,x,y,z) -> (...,4,4) matrix of v -> p * v, in (w,x,y,z) order."""
    w, x, y, z = p.unbind(-1)
    return torch.stack(
        [
            w, -x, -y, -z,
            x, w, -z, y,
            y, z, w, -x,
            z, -y, x, w,
        ],
        -1,
    ).reshape(*p.shape[:-1], 4, 4)


def _right_mult_matrix(q: torch.Tensor) -> torch.Tensor:
    """(...,4) quaternion (w,x,y,z) -> (...,4,4) matrix of v -> v * q, in (w,x,y,z) order."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            w, -x, -y, -z,
            x, w, z, -y,
            y, -z, w, x,
            z, y, -x, w,
        ],
        -1,
    ).reshape(*q.shape[:-1], 4, 4)


_WXYZ_TO_XYZT = [1, 2, 3, 0]  # quaternion component order -> our (x, y, z, t) order


def rotation_4d(rot_left: torch.Tensor, rot_right: torch.Tensor) -> torch.Tensor:
    """Two unit quaternions (...,4) -> 4D rotation (...,4,4) acting on (x, y, z, t) column vectors."""
    R = _left_mult_matrix(rot_left) @ _right_mult_matrix(rot_right)  # (w,x,y,z) order
    return R[..., _WXYZ_TO_XYZT, :][..., :, _WXYZ_TO_XYZT]


def scaled_rotation_4d(g: Gaussians4D) -> torch.Tensor:
    """M = R diag(s) (...,N,4,4), so that Sigma = M M^T."""
    s = torch.cat([g.scales_xyz, g.scale_t[..., None]], -1)  # (...,N,4)
    return rotation_4d(g.rot_left, g.rot_right) * s[..., None, :]


def covariance_4d(g: Gaussians4D) -> torch.Tensor:
    """Sigma = R diag(s)^2 R^T (...,N,4,4) over (x, y, z, t)."""
    M = scaled_rotation_4d(g)
    return M @ M.transpose(-1, -2)


# ----------------------------------------------------------------------------------------------
# Slicing at a time


def slice_4dgs(g: Gaussians4D, t, prune_below: float | None = None) -> Gaussians3D:
    """3D Gaussians seen at time t: the conditional Gaussian of (x,y,z) given t.

    t: float or tensor broadcastable to mean_t (...,N) (e.g. (B,1) for one time per scene).

      mean        = mu_xyz + Sigma_xt / Sigma_tt * (t - mu_t)
      covariance  = Sigma_xx - Sigma_xt Sigma_tx / Sigma_tt
      opacity     = opacity * exp(-0.5 (t - mu_t)^2 / Sigma_tt)   (unnormalised marginal)

    The textbook covariance subtracts two large numbers for thin, long-lived Gaussians and
    loses positive semi-definiteness in fp32. We use the factor M = R diag(s) instead: with
    M_x its rows 0-2 and m_t its row 3, x = M_x z and t = m_t . z for z ~ N(0, I4), so given t,
    z varies only in the plane orthogonal to u = m_t / |m_t| and
      Sigma_tt = |m_t|^2,  Sigma_xt = M_x m_t,  covariance = B B^T with B = M_x (I - u u^T),
    which is PSD by construction. Computed in at least fp32, with autocast off.

    prune_below: drop Gaussians whose temporal marginal is below this (inference only; the
    4DGS reference uses 0.05). Needs unbatched Gaussians (means_xyz (N,3)).
    """
    dtype = torch.promote_types(g.means_xyz.dtype, torch.float32)
    with torch.autocast(g.means_xyz.device.type, enabled=False):
        M = scaled_rotation_4d(_cast(g, dtype))  # (...,N,4,4)
        M_x, m_t = M[..., :3, :], M[..., 3, :]  # (...,N,3,4), (...,N,4)
        var_t = (m_t * m_t).sum(-1)  # (...,N) Sigma_tt
        u = m_t * torch.rsqrt(var_t)[..., None]  # (...,N,4) unit
        cov_xt = (M_x @ m_t[..., None])[..., 0]  # (...,N,3) Sigma_xt
        B = M_x - (M_x @ u[..., None]) * u[..., None, :]  # (...,N,3,4) = M_x (I - u u^T)

        dt = torch.as_tensor(t, dtype=dtype, device=M.device) - g.mean_t.to(dtype)  # (...,N)
        means = g.means_xyz.to(dtype) + cov_xt * (dt / var_t)[..., None]
        marginal = torch.exp(-0.5 * dt * dt / var_t)
        out = Gaussians3D(
            means=means,
            covariances=B @ B.transpose(-1, -2),
            rgb=g.rgb.to(dtype),
            opacities=g.opacity.to(dtype) * marginal,
        )
    if prune_below is None:
        return out
    if out.means.dim() != 2:
        raise ValueError(f"slice_4dgs: prune_below needs unbatched Gaussians (N,3), got means {tuple(out.means.shape)}")
    return out[marginal >= prune_below]


def _cast(g: Gaussians4D, dtype: torch.dtype) -> Gaussians4D:
    return Gaussians4D(**{k: v.to(dtype) for k, v in vars(g).items()})


# ----------------------------------------------------------------------------------------------
# PLY export (the standard 3D Gaussian Splatting layout, readable by common splat viewers)

SH_C0 = 0.28209479177387814  # the constant l=0 spherical harmonic, 1 / (2 sqrt(pi))
# Eigenvalues below this (a variance, in scene units squared) are clamped so that log(scale)
# stays finite for flat or degenerate covariances.
MIN_VARIANCE = 1e-12

_PLY_FIELDS = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


def covariance_to_scale_rotation(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(...,3,3) symmetric PSD -> std devs (...,3) and unit quaternions (...,4) (w,x,y,z).

    The eigendecomposition cov = V diag(lambda) V^T is exact for symmetric PSD matrices, so
    cov == R(q) diag(scale^2) R(q)^T up to rounding; eigenvalues below MIN_VARIANCE (rounding
    noise on flat Gaussians) are clamped. V is made a proper rotation (det +1) by flipping one
    eigenvector, which leaves the product unchanged. Computed in float64.
    """
    lam, V = torch.linalg.eigh(cov.double())
    V = torch.where(torch.linalg.det(V)[..., None, None] < 0, V * V.new_tensor([1.0, 1.0, -1.0]), V)
    scale = lam.clamp(min=MIN_VARIANCE).sqrt()
    return scale.to(cov.dtype), matrix_to_quaternion(V).to(cov.dtype)


def export_ply(path, g3: Gaussians3D) -> None:
    """Write unbatched Gaussians (N,...) as a binary little-endian 3DGS PLY.

    Per vertex, float32: x y z; nx ny nz (zeros); f_dc_0..2 = (rgb - 0.5) / SH_C0 (degree-0
    SH); opacity as a logit; scale_0..2 as log std devs; rot_0..3 a unit quaternion (w x y z).
    """
    path = Path(path)
    if g3.means.dim() != 2:
        raise ValueError(f"export_ply {path}: needs unbatched Gaussians (N,3), got means {tuple(g3.means.shape)}")
    scale, quat = covariance_to_scale_rotation(g3.covariances.detach().double())
    eps = 1e-7  # keeps the logit finite for opacities of exactly 0 or 1
    opacity = g3.opacities.detach().double().clamp(eps, 1 - eps)
    columns = [
        g3.means.detach().double(),
        torch.zeros_like(g3.means, dtype=torch.float64),
        (g3.rgb.detach().double() - 0.5) / SH_C0,
        torch.logit(opacity)[:, None],
        scale.log(),
        quat,
    ]
    data = torch.cat([c.cpu() for c in columns], dim=1).numpy().astype("<f4")  # (N,17)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {data.shape[0]}\n"
        + "".join(f"property float {name}\n" for name in _PLY_FIELDS)
        + "end_header\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())


def read_ply(path) -> Gaussians3D:
    """Read a PLY written by export_ply (or any 3DGS PLY whose vertices hold at least those
    fields as float32; extra SH bands and other properties are ignored). Returns float32 tensors."""
    path = Path(path)
    # The 3DGS layout is a fixed list of float32 properties, so numpy reads it directly; a
    # general PLY library would add a dependency for no gain.
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"read_ply {path}: not a PLY file")
        n, names = None, []
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"read_ply {path}: header has no end_header")
            words = line.decode("ascii", "replace").split()
            if words == ["end_header"]:
                break
            if words[:1] == ["format"] and words[1:2] != ["binary_little_endian"]:
                raise ValueError(f"read_ply {path}: only binary_little_endian is supported, got {' '.join(words[1:])}")
            if words[:2] == ["element", "vertex"]:
                n = int(words[2])
            elif words[:1] == ["element"]:
                raise ValueError(f"read_ply {path}: unexpected element {words[1]!r} (only 'vertex' is supported)")
            elif words[:1] == ["property"]:
                if words[1] != "float":
                    raise ValueError(f"read_ply {path}: property {words[-1]} is {words[1]}, expected float")
                names.append(words[2])
        missing = [k for k in _PLY_FIELDS if k not in names and k not in ("nx", "ny", "nz")]
        if n is None or missing:
            raise ValueError(f"read_ply {path}: not a 3DGS PLY (missing {missing or 'element vertex'})")
        raw = f.read(n * len(names) * 4)
    if len(raw) != n * len(names) * 4:
        raise ValueError(f"read_ply {path}: truncated, expected {n} vertices")
    data = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(n, len(names)).astype(np.float32))
    col = {name: data[:, i] for i, name in enumerate(names)}

    def stack(*keys):
        return torch.stack([col[k] for k in keys], -1)

    scale = stack("scale_0", "scale_1", "scale_2").double().exp()
    R = quaternion_to_matrix(stack("rot_0", "rot_1", "rot_2", "rot_3").double())
    cov = (R * scale[:, None, :] ** 2) @ R.transpose(-1, -2)
    return Gaussians3D(
        means=stack("x", "y", "z"),
        covariances=cov.float(),
        rgb=stack("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
        opacities=torch.sigmoid(col["opacity"]),
    )

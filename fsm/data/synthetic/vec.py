"""3-vector and 3x3 math for the synthetic engine.

Products are written out as sums of three elementwise products (no matmul, no reduction): the
result for one pixel then never depends on how many other pixels or frames share the batch, which
keeps a frame rendered in a batch bit-identical to the same frame rendered alone.
"""

from __future__ import annotations

import torch


def rot(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R v for (...,3,3), (...,3)."""
    return R[..., :, 0] * v[..., 0:1] + R[..., :, 1] * v[..., 1:2] + R[..., :, 2] * v[..., 2:3]


def rot_t(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R^T v for (...,3,3), (...,3)."""
    return R[..., 0, :] * v[..., 0:1] + R[..., 1, :] * v[..., 1:2] + R[..., 2, :] * v[..., 2:3]


def matmul3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A B for (...,3,3), (...,3,3)."""
    return A[..., :, 0:1] * B[..., 0:1, :] + A[..., :, 1:2] * B[..., 1:2, :] + A[..., :, 2:3] * B[..., 2:3, :]


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a . b for (...,3), (...,3) -> (...)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit axis (...,3), angle (...) radians -> rotation (...,3,3)."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    C = 1 - c
    return torch.stack(
        [
            c + x * x * C, x * y * C - z * s, x * z * C + y * s,
            y * x * C + z * s, c + y * y * C, y * z * C - x * s,
            z * x * C - y * s, z * y * C + x * s, c + z * z * C,
        ],
        -1,
    ).reshape(*angle.shape, 3, 3)  # fmt: skip


def tri(x: torch.Tensor) -> torch.Tensor:
    """Triangle wave of period 1 in [-1, 1], tri(0) = 1."""
    return 1 - 4 * (x - torch.floor(x + 0.5)).abs()


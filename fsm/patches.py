"""Patches: images <-> per-patch token vectors (the tokenizer's and the heads' layout)."""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, V, C, H, W) -> (B, V, T, C*p*p), T = (H/p)(W/p) in row-major patch order."""
    B, V, C, H, W = x.shape
    x = x.reshape(B, V, C, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(B, V, (H // p) * (W // p), C * p * p)


def unpatchify(x: torch.Tensor, p: int, height: int, width: int) -> torch.Tensor:
    """(B, V, T, C*p*p) -> (B, V, C, H, W)."""
    B, V, T, D = x.shape
    C = D // (p * p)
    x = x.reshape(B, V, height // p, width // p, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, V, C, height, width)

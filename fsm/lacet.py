"""LaCET: large-chunk elastic test-time training (FSM paper Sec. 2.2-2.3, Eq. 3, 5-7).

The fast-weight network is a bias-free SwiGLU MLP, one head over the model width D:

    f_W(k) = (silu(k @ w0) * (k @ w2)) @ w1,   w0, w2: (D, Dh),  w1: (Dh, D)
    (the paper's theta_1, theta_3, theta_2; matrices are stored (in, out), tokens are rows)

Per chunk of input tokens (k_i, v_i, per-token learning rates eta_i):

    update       W' = W - grad_W sum_i eta_i * L(f_W(k_i), v_i),   L = -f(k)^T v      (Eq. 3, 7)
                 (closed-form gradients; each increment optionally Muon-orthogonalised)
    importance   F <- alpha F + (1 - alpha) phi(S)                                      (Eq. 6)
    pull         W'' = W' - lambda F * (W' - W*)                                        (Eq. 5)
    weight norm  every column of W'' rescaled to its initial L2 norm
    anchor       W* <- W* (global) | W (streaming) | beta W* + (1 - beta) W (streaming-ema)

That order is the official release's. Importance and anchors are detached statistics;
the update itself stays in the autograd graph so training reaches the slow weights.
With lambda = 0 the pull is skipped and this is exactly LaCT.

Under bf16 autocast (fsm.precision) the matmuls of the update, Newton-Schulz and apply run in
bf16 (as the official release's Newton-Schulz); the state (W, column norms, F, W*), the learning
rates and everything after the update's W' = W + dW stay fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

MATRICES = ("w0", "w1", "w2")
# The names of the importance estimators phi and anchor policies (paper defaults first); the
# viewer's dropdowns and the training flags take them from here.
Estimator = Literal["si", "ewc", "mas"]
AnchorPolicy = Literal["streaming-ema", "streaming", "global"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
ANCHOR_POLICIES: tuple[str, ...] = get_args(AnchorPolicy)


@dataclass(frozen=True)
class ElasticConfig:
    """Elastic consolidation settings (paper defaults: lambda = alpha = beta = 0.5, SI, streaming-EMA)."""

    lam: float = 0.5  # strength of the pull toward the anchor; 0 = plain LaCT
    alpha: float = 0.5  # importance EMA decay
    beta: float = 0.5  # anchor EMA decay (streaming-ema only)
    estimator: Estimator = "si"
    anchor: AnchorPolicy = "streaming-ema"
    importance_init: float = 1e-6  # the official release starts F at 1e-6 (raw, not normalised)
    batch_mean_importance: bool = True  # paper: average S over the batch before the EMA

    @staticmethod
    def plain_lact() -> "ElasticConfig":
        return ElasticConfig(lam=0.0)

    @property
    def enabled(self) -> bool:
        return self.lam != 0.0


@dataclass
class ElasticState:
    """One layer's fast-weight memory. Plain tensors, shape (B, in, out) per matrix."""

    weights: dict[str, torch.Tensor]  # current fast weights W (in the autograd graph when training)
    anchors: dict[str, torch.Tensor]  # W* (detached)
    importance: dict[str, torch.Tensor]  # F (detached)
    column_norms: dict[str, torch.Tensor]  # (B, 1, out) target norms for weight normalisation
    chunks: int = 0


@dataclass
class UpdateStats:
    """What one chunk did to one layer (floats, for plots). Drift is taken before re-anchoring."""

    drift: dict[str, float] = field(default_factory=dict)  # |W - W*| / |W*|
    update_norm: dict[str, float] = field(default_factory=dict)  # |dW| / |W| of the LaCT update
    importance_mean: dict[str, float] = field(default_factory=dict)
    importance_max: dict[str, float] = field(default_factory=dict)
    importance_frac_above_mean: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# The math, as plain functions


def swiglu_apply(w: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
    """f_W(q) for tokens q (B, L, D) -> (B, L, D)."""
    return (F.silu(q @ w["w0"]) * (q @ w["w2"])) @ w["w1"]


def swiglu_descent(w: dict[str, torch.Tensor], k: torch.Tensor, v: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Closed-form -grad_W of sum_i lr_i[m] * (-f_W(k_i)^T v_i), for each matrix m.

    k, v: (B, n, D); lr: (B, n, 3), one learning rate per token and matrix (w0, w1, w2).
    With gate = k w0, up = k w2, h = silu(gate) * up, dh = v w1^T:
        -dL/dw1 = h^T (lr1 v)
        -dL/dw0 = (lr0 k)^T (dh * up * silu'(gate))
        -dL/dw2 = (lr2 k)^T (dh * silu(gate))
    The learning rates scale the (n, D) side, not the twice wider (n, Dh) one.
    """
    gate, up = k @ w["w0"], k @ w["w2"]  # (B, n, Dh)
    silu_gate = F.silu(gate)
    dh = v @ w["w1"].transpose(-1, -2)  # (B, n, Dh)
    lr = lr.to(k.dtype)  # bf16 under autocast: the products below feed bf16 matmuls anyway
    lr0, lr1, lr2 = lr[..., 0:1], lr[..., 1:2], lr[..., 2:3]
    return {
        "w0": (lr0 * k).transpose(-1, -2) @ silu_grad(dh * up, gate),  # (B, D, Dh)
        # (B, Dh, D), as ((lr1 v)^T h)^T: the (n, Dh) operand stays untransposed (its gradient is
        # then accumulated contiguously: ~10x faster than a strided add in bf16 on CPU)
        "w1": ((lr1 * v).transpose(-1, -2) @ (silu_gate * up)).transpose(-1, -2),
        "w2": (lr2 * k).transpose(-1, -2) @ (dh * silu_gate),  # (B, D, Dh)
    }


class _SiluGrad(torch.autograd.Function):
    """dy * silu'(x) in one kernel (aten's silu_backward), with the derivative aten lacks:
    d/d(dy) = silu'(x);  d/dx = dy * silu''(x),  silu''(x) = s (1 - s) (2 + x (1 - 2 s)), s = sigmoid(x).
    The update is in the training graph, so this saves ~10 passes over (B, n, Dh) per chunk."""

    @staticmethod
    def forward(ctx, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(dy, x)
        return torch.ops.aten.silu_backward(dy, x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        dy, x = ctx.saved_tensors
        g_dy = torch.ops.aten.silu_backward(g, x) if ctx.needs_input_grad[0] else None
        g_x = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(x)
            # sigmoid_backward(a, s) = a s (1 - s);  2 + x (1 - 2 s) = (x + 2) - 2 x s
            g_x = torch.ops.aten.sigmoid_backward(g * dy, s) * (x + 2).addcmul_(x, s, value=-2)
        return g_dy, g_x


def silu_grad(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy * silu'(x), differentiable in both (see _SiluGrad)."""
    return _SiluGrad.apply(dy, x)


# Muon's quintic Newton-Schulz coefficients (Jordan et al.): fast convergence of singular values to ~1.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise each matrix of g (B, m, n): U V^T of its SVD."""
    a, b, c = _NS_COEFFS
    transpose = g.shape[-2] > g.shape[-1]
    x = g.transpose(-1, -2) if transpose else g
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = x @ x.transpose(-1, -2)
        x = torch.baddbmm(x, torch.baddbmm(A, A, A, beta=b, alpha=c), x, beta=a)  # a x + (b A + c A A) x, fused
    return x.transpose(-1, -2) if transpose else x


def renormalize_columns(w: torch.Tensor, norms: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rescale every column (output unit) of w (B, in, out) to the given norms (B, 1, out)."""
    return w * (norms / (w.norm(dim=-2, keepdim=True) + eps))  # one pass over w, not two


def importance_statistic(cfg: ElasticConfig, update: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """phi(S_c) of Eq. 6 from the update W' - W and the anchor displacement W' - W* (no grad)."""
    if cfg.estimator == "si":
        s = torch.mul(update, displacement).abs_()
    elif cfg.estimator == "mas":
        s = update.abs()
    elif cfg.estimator == "ewc":
        s = update.square()
    else:
        raise ValueError(f"unknown importance estimator {cfg.estimator!r} ({' | '.join(ESTIMATORS)})")
    if cfg.batch_mean_importance and s.shape[0] > 1:
        s = s.mean(0, keepdim=True).expand_as(s)
    return s


class _Pull(torch.autograd.Function):
    """W'' = W' - lambda F (W' - W*) in one pass, from the displacement W' - W* already computed
    for the importance; F and W* are detached, so dW''/dW' = 1 - lambda F (one pass back)."""

    @staticmethod
    def forward(ctx, updated, fisher, displacement, lam: float):
        ctx.save_for_backward(fisher)
        ctx.lam = lam
        return torch.addcmul(updated, fisher, displacement, value=-lam)

    @staticmethod
    def backward(ctx, g):
        (fisher,) = ctx.saved_tensors
        return torch.addcmul(g, g, fisher, value=-ctx.lam), None, None, None


def new_anchor(cfg: ElasticConfig, anchor: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if cfg.anchor == "global":
        return anchor
    if cfg.anchor == "streaming":
        return weights
    if cfg.anchor == "streaming-ema":
        return torch.lerp(weights, anchor, cfg.beta)  # beta W* + (1 - beta) W
    raise ValueError(f"unknown anchor policy {cfg.anchor!r} ({' | '.join(ANCHOR_POLICIES)})")


def lacet_step(
    state: ElasticState, k, v, lr, muon_steps: int, cfg: ElasticConfig, with_stats: bool = False
) -> tuple[ElasticState, UpdateStats | None]:
    """One LaCET chunk: update -> importance EMA -> pull -> weight norm -> anchor (see module doc)."""
    descent = swiglu_descent(state.weights, k, v, lr)
    weights, anchors, importance = {}, {}, {}
    stats = UpdateStats() if with_stats else None
    for n in MATRICES:
        w, anchor = state.weights[n], state.anchors[n]
        d = newton_schulz(descent[n], muon_steps) if muon_steps > 0 else descent[n]
        d = d.to(w.dtype)  # bf16 under autocast; the state (and all that follows) stays fp32
        updated = w + d  # W'_c
        if cfg.enabled:
            # importance, anchors and the displacement are detached statistics; every pass over the
            # D x Dh matrices counts here (they come from memory, not cache, after the chunk's matmuls)
            with torch.no_grad():
                displacement = updated - anchor  # W' - W*
                phi = importance_statistic(cfg, d, displacement)
                fisher = torch.lerp(phi, state.importance[n], cfg.alpha)  # alpha F + (1 - alpha) phi
            updated = _Pull.apply(updated, fisher, displacement, cfg.lam)
        else:
            fisher = state.importance[n]
        w_next = renormalize_columns(updated, state.column_norms[n])
        if stats is not None:
            wd = w_next.detach()
            stats.drift[n] = ((wd - anchor).norm() / anchor.norm().clamp_min(1e-12)).item()
            stats.update_norm[n] = (d.detach().norm() / w.detach().norm().clamp_min(1e-12)).item()
            f0 = fisher[0]  # batch element 0 (the viewer streams one clip)
            mean = f0.mean()
            stats.importance_mean[n] = mean.item()
            stats.importance_max[n] = f0.max().item()
            stats.importance_frac_above_mean[n] = (f0 > mean).float().mean().item()
        weights[n] = w_next
        anchors[n] = new_anchor(cfg, anchor, w_next.detach())
        importance[n] = fisher
    new_state = ElasticState(weights, anchors, importance, state.column_norms, state.chunks + 1)
    return new_state, stats


# ----------------------------------------------------------------------------------------------
# The layer with its slow weights


def _inv_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class FastWeightLayer(nn.Module):
    """LaCT/LaCET fast-weight layer: projections and initial fast weights are slow weights.

    update(): consume a chunk of input tokens, return the new state (and the layer output for
    those tokens, computed with the updated weights). apply(): query tokens read the state only.
    """

    def __init__(self, dim: int, hidden: int, muon_steps: int = 5, base_lr: float = 0.01):
        super().__init__()
        self.dim, self.hidden, self.muon_steps = dim, hidden, muon_steps
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.lr_proj = nn.Linear(dim, 3)  # per-token learning rate for w0, w1, w2
        self.lr_bias = _inv_softplus(base_lr)
        self.out_norm = nn.RMSNorm(dim, eps=1e-5)
        self.out = nn.Linear(dim, dim, bias=False)
        # initial fast weights, (in, out); randn * sqrt(2 / fan_in) as LaCT
        self.w0 = nn.Parameter(torch.randn(dim, hidden) * math.sqrt(2.0 / dim))
        self.w2 = nn.Parameter(torch.randn(dim, hidden) * math.sqrt(2.0 / dim))
        self.w1 = nn.Parameter(torch.randn(hidden, dim) * math.sqrt(2.0 / hidden))

    def init_state(self, batch: int, cfg: ElasticConfig) -> ElasticState:
        weights = {n: getattr(self, n).unsqueeze(0).expand(batch, -1, -1) for n in MATRICES}
        anchors = {n: w.detach().clone() for n, w in weights.items()}
        importance = {n: torch.full_like(w.detach(), cfg.importance_init) for n, w in weights.items()}
        norms = {n: w.detach().norm(dim=-2, keepdim=True) for n, w in weights.items()}
        return ElasticState(weights, anchors, importance, norms)

    def _qkv_lr(self, x: torch.Tensor):
        q, k, v = F.silu(self.qkv(x)).chunk(3, dim=-1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        with torch.autocast(x.device.type, enabled=False):  # learning rates in fp32, as the release
            lr = F.softplus(self.lr_proj(x.float()) + self.lr_bias)  # (B, n, 3)
        return q, k, v, lr

    def _read(self, state: ElasticState, q: torch.Tensor) -> torch.Tensor:
        return self.out(self.out_norm(swiglu_apply(state.weights, q).float()))  # RMSNorm in fp32

    def update(self, x: torch.Tensor, state: ElasticState, cfg: ElasticConfig, with_stats: bool = False):
        """x: (B, n, D) the chunk's input tokens -> (output (B, n, D), new state, stats)."""
        q, k, v, lr = self._qkv_lr(x)
        state, stats = lacet_step(state, k, v, lr, self.muon_steps, cfg, with_stats)
        return self._read(state, q), state, stats

    def apply(self, x: torch.Tensor, state: ElasticState) -> torch.Tensor:
        """x: (B, n, D) query tokens -> (B, n, D). Never changes the state."""
        q = F.normalize(F.silu(F.linear(x, self.qkv.weight[: self.dim])), dim=-1)  # q rows only
        return self._read(state, q)

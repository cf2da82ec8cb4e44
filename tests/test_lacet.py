"""The fast-weight layer: closed-form update vs autograd, Muon, weight norm, elastic consolidation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fsm import lacet
from fsm.lacet import (
    MATRICES, ElasticConfig, ElasticState, FastWeightLayer, lacet_step, newton_schulz, renormalize_columns, swiglu_apply,
    swiglu_descent,
)

D, DH, N = 6, 10, 7


def lact_step(state: ElasticState, k, v, lr, muon_steps: int) -> ElasticState:
    """Reference: plain LaCT on one chunk (update, then weight normalisation), written without
    any elastic code, which lacet_step with lambda = 0 must equal exactly."""
    descent = swiglu_descent(state.weights, k, v, lr)
    weights = {}
    for n in MATRICES:
        d = newton_schulz(descent[n], muon_steps) if muon_steps > 0 else descent[n]
        weights[n] = renormalize_columns(state.weights[n] + d, state.column_norms[n])
    return replace(state, weights=weights, chunks=state.chunks + 1)


def _weights(batch=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "w0": torch.randn(batch, D, DH, generator=g, dtype=dtype),
        "w1": torch.randn(batch, DH, D, generator=g, dtype=dtype),
        "w2": torch.randn(batch, D, DH, generator=g, dtype=dtype),
    }


@pytest.mark.parametrize("per_token_lr", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, dict(rtol=1e-10, atol=1e-12)), (torch.float32, dict(rtol=1e-5, atol=1e-5))])
def test_closed_form_update_equals_autograd(per_token_lr, dtype, tol):
    g = torch.Generator().manual_seed(1)
    w = {n: x.requires_grad_() for n, x in _weights(dtype=dtype).items()}
    k = torch.randn(2, N, D, generator=g, dtype=dtype)
    v = torch.randn(2, N, D, generator=g, dtype=dtype)
    lr = torch.rand(2, N, 3, generator=g, dtype=dtype) if per_token_lr else torch.ones(2, N, 3, dtype=dtype)
    # the fast-weight loss, token i weighted by its learning rate for each matrix: sum_i lr_i * (-f(k_i)^T v_i)
    descent = swiglu_descent({n: x.detach() for n, x in w.items()}, k, v, lr)
    per_token = -(swiglu_apply(w, k) * v).sum(-1)  # (B, N)
    for m, name in enumerate(lacet.MATRICES):
        (grad,) = torch.autograd.grad((lr[..., m] * per_token).sum(), w[name], retain_graph=True)
        torch.testing.assert_close(descent[name], -grad, **tol)


def test_silu_grad_and_its_derivatives():
    """The fused dy * silu'(x) against autograd's own silu derivative, then gradcheck (first and
    second order) of its hand-written backward, in float64."""
    g = torch.Generator().manual_seed(4)
    dy, x = (torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    (ref,) = torch.autograd.grad(torch.nn.functional.silu(x), x, dy, create_graph=True)
    torch.testing.assert_close(lacet.silu_grad(dy, x), ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lacet.silu_grad, (dy, x))


def test_newton_schulz_orthogonalises():
    g = torch.randn(3, 16, 40, generator=torch.Generator().manual_seed(2))
    for x in (g, g.transpose(-1, -2)):
        sv = torch.linalg.svdvals(newton_schulz(x, steps=5))
        # Muon's quintic maps singular values into roughly [0.7, 1.2], not exactly to 1
        assert sv.min() > 0.5 and sv.max() < 1.3
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        cos = torch.nn.functional.cosine_similarity(newton_schulz(x, 5).flatten(1), (u @ vh).flatten(1))
        assert (cos > 0.95).all()


def test_weight_norm_preserves_column_norms():
    torch.manual_seed(0)
    layer = FastWeightLayer(16, 32, muon_steps=5)
    state = layer.init_state(2, ElasticConfig())
    x = torch.randn(2, 24, 16)
    for _ in range(3):
        _, state, _ = layer.update(x, state, ElasticConfig())
    for n in lacet.MATRICES:
        init = getattr(layer, n).detach().norm(dim=0)
        torch.testing.assert_close(state.weights[n].detach().norm(dim=-2), init.expand(2, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("muon_steps", [0, 5])
def test_lambda_zero_is_plain_lact(muon_steps):
    torch.manual_seed(0)
    layer = FastWeightLayer(16, 32, muon_steps=muon_steps)
    plain = ElasticConfig.plain_lact()
    s_elastic = layer.init_state(2, plain)
    s_lact = layer.init_state(2, plain)
    for c in range(4):
        x = torch.randn(2, 12, 16)
        q, k, v, lr = layer._qkv_lr(x)
        s_elastic, _ = lacet_step(s_elastic, k, v, lr, muon_steps, plain)
        s_lact = lact_step(s_lact, k, v, lr, muon_steps)
        for n in lacet.MATRICES:
            assert torch.equal(s_elastic.weights[n], s_lact.weights[n]), (c, n)


def test_one_chunk_anchor_policy_is_irrelevant():
    torch.manual_seed(0)
    layer = FastWeightLayer(16, 32)
    x, q = torch.randn(2, 12, 16), torch.randn(2, 5, 16)
    outs = []
    for policy in ("global", "streaming", "streaming-ema"):
        cfg = ElasticConfig(anchor=policy)
        _, state, _ = layer.update(x, layer.init_state(2, cfg), cfg)
        outs.append(layer.apply(q, state))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


# -- a two-chunk example with known updates, against an independent NumPy transcription of Eq. 5-6


def _reference_two_chunks(w_init, updates, cfg):
    """Straight from the paper + the release's order, one matrix, plain NumPy float64."""
    w = w_init.copy()
    anchor = w_init.copy()
    fisher = np.full_like(w, cfg.importance_init)
    norms = np.linalg.norm(w_init, axis=0, keepdims=True)
    for d in updates:
        w_prime = w + d  # LaCT update (Muon off)
        S = d if cfg.estimator in ("mas", "ewc") else d * (w_prime - anchor)
        phi = S**2 if cfg.estimator == "ewc" else np.abs(S)
        fisher = cfg.alpha * fisher + (1 - cfg.alpha) * phi
        w_pulled = w_prime - cfg.lam * fisher * (w_prime - anchor)
        w = w_pulled / (np.linalg.norm(w_pulled, axis=0, keepdims=True) + 1e-6) * norms
        if cfg.anchor == "streaming":
            anchor = w.copy()
        elif cfg.anchor == "streaming-ema":
            anchor = cfg.beta * anchor + (1 - cfg.beta) * w
    return w, anchor, fisher


@pytest.mark.parametrize("estimator", ["ewc", "mas", "si"])
@pytest.mark.parametrize("anchor", ["global", "streaming", "streaming-ema"])
def test_two_chunks_match_reference(estimator, anchor, monkeypatch):
    # large lambda and updates so the pull and the importance actually matter
    cfg = ElasticConfig(lam=0.9, alpha=0.3, beta=0.6, estimator=estimator, anchor=anchor, importance_init=0.2)
    w_init = np.array([[0.5, -1.0], [2.0, 0.25]])
    updates = [np.array([[0.3, 0.1], [-0.4, 0.6]]), np.array([[-0.2, 0.5], [0.7, -0.1]])]
    chunk = iter(updates)
    # inject the known LaCT updates: the elastic step is what is under test here
    monkeypatch.setattr(lacet, "swiglu_descent", lambda w, k, v, lr: {n: torch.tensor(next(chunk))[None] if n == "w0" else torch.zeros_like(w[n]) for n in lacet.MATRICES})
    t = torch.tensor(w_init)[None]
    state = lacet.ElasticState(
        weights={n: t.clone() for n in lacet.MATRICES},
        anchors={n: t.clone() for n in lacet.MATRICES},
        importance={n: torch.full_like(t, cfg.importance_init) for n in lacet.MATRICES},
        column_norms={n: t.norm(dim=-2, keepdim=True) for n in lacet.MATRICES},
    )
    for _ in range(2):
        state, _ = lacet_step(state, None, None, None, 0, cfg)
    w_ref, anchor_ref, fisher_ref = _reference_two_chunks(w_init, updates, cfg)
    np.testing.assert_allclose(state.weights["w0"][0].numpy(), w_ref, rtol=1e-12)
    np.testing.assert_allclose(state.anchors["w0"][0].numpy(), anchor_ref, rtol=1e-12)
    np.testing.assert_allclose(state.importance["w0"][0].numpy(), fisher_ref, rtol=1e-12)
    assert state.chunks == 2


def test_two_chunks_hand_computed_si_streaming_ema(monkeypatch):
    """A single 2x1 column, every number worked out by hand (paper defaults, SI, streaming-EMA)."""
    cfg = ElasticConfig(lam=0.5, alpha=0.5, beta=0.5, estimator="si", anchor="streaming-ema", importance_init=1e-6)
    w0 = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)  # column norm 1
    d1 = torch.tensor([[[0.0], [1.0]]], dtype=torch.float64)
    chunk = iter([d1])
    monkeypatch.setattr(lacet, "swiglu_descent", lambda w, k, v, lr: {n: next(chunk) if n == "w0" else torch.zeros_like(w[n]) for n in lacet.MATRICES})
    state = lacet.ElasticState({n: w0 for n in lacet.MATRICES}, {n: w0 for n in lacet.MATRICES},
                               {n: torch.full_like(w0, 1e-6) for n in lacet.MATRICES}, {n: w0.norm(dim=-2, keepdim=True) for n in lacet.MATRICES})
    state, _ = lacet_step(state, None, None, None, 0, cfg)
    # W' = (1, 1); S_si = dW * (W' - W*) = (0, 1) * (0, 1) = (0, 1); F = 0.5e-6 + 0.5 * (0, 1) = (5e-7, 0.5000005)
    # pull: W'' = W' - 0.5 F (W' - W*) = (1, 1 - 0.25000025); normalise to norm 1; anchor = (W* + W)/2
    F = np.array([5e-7, 0.5000005])
    pulled = np.array([1.0, 1 - 0.25000025])
    w = pulled / (np.linalg.norm(pulled) + 1e-6)
    np.testing.assert_allclose(state.importance["w0"][0, :, 0].numpy(), F, rtol=1e-12)
    np.testing.assert_allclose(state.weights["w0"][0, :, 0].numpy(), w, rtol=1e-12)
    np.testing.assert_allclose(state.anchors["w0"][0, :, 0].numpy(), (np.array([1.0, 0.0]) + w) / 2, rtol=1e-12)


def test_importance_and_anchors_are_detached_but_weights_are_not():
    torch.manual_seed(0)
    layer = FastWeightLayer(16, 32)
    cfg = ElasticConfig()
    state = layer.init_state(2, cfg)
    for _ in range(2):
        _, state, _ = layer.update(torch.randn(2, 12, 16), state, cfg)
    for n in lacet.MATRICES:
        assert state.weights[n].requires_grad
        assert not state.anchors[n].requires_grad and not state.importance[n].requires_grad


def test_batch_mean_importance_option():
    torch.manual_seed(0)
    layer = FastWeightLayer(16, 32)
    x = torch.randn(2, 12, 16)
    for shared in (True, False):
        cfg = ElasticConfig(batch_mean_importance=shared)
        _, state, _ = layer.update(x, layer.init_state(2, cfg), cfg)
        same = torch.equal(state.importance["w0"][0], state.importance["w0"][1])
        assert same == shared

"""bf16 compute: who decides, and how far the bf16 paths are from fp32.

Tolerances are stated per test. They come from bf16's 8-bit mantissa (relative rounding
2^-9 ~ 0.2% per matmul) compounded by Muon: the Newton-Schulz output has unit-scale singular
values whatever the learning rate, so its bf16 rounding lands on the fast weights at ~1-10%
relative after a few chunks of an untrained layer (the official LaCT runs Newton-Schulz in bf16
too). fp32 is untouched: with compute dtype fp32 no autocast region is entered at all, and the
exactness tests (tests/test_lacet.py) run in fp32 / float64.
"""

from pathlib import Path

import pytest
import torch

import fsm
from fsm import precision
from fsm.lacet import MATRICES, ElasticConfig, FastWeightLayer
from fsm.stream import StreamSession
from fsm.precision import autocast, resolve_dtype
from tests.test_model import H, W, _cameras, _clip, _views


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_resolve_dtype(monkeypatch):
    assert resolve_dtype("fp32", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "meta") == torch.float32  # neither CUDA nor CPU: no native bf16 assumed
    with pytest.raises(ValueError, match="--dtype"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        resolve_dtype(torch.float16, "cpu")


def test_cpu_detection_follows_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert precision.cpu_has_bf16() == expected


def test_fp32_autocast_is_a_no_op():
    torch.manual_seed(0)
    layer, x = FastWeightLayer(16, 32), torch.randn(2, 24, 16)
    cfg = ElasticConfig()
    y0, s0, _ = layer.update(x, layer.init_state(2, cfg), cfg)
    with autocast("cpu", torch.float32):
        y1, s1, _ = layer.update(x, layer.init_state(2, cfg), cfg)
    assert torch.equal(y0, y1) and all(torch.equal(s0.weights[n], s1.weights[n]) for n in MATRICES)


def _stream_layer(layer, x, dtype, chunks=4):
    cfg = ElasticConfig()
    state, ys = layer.init_state(x.shape[0], cfg), []
    n = x.shape[1] // chunks
    with autocast("cpu", dtype):
        for c in range(chunks):
            y, state, _ = layer.update(x[:, c * n : (c + 1) * n], state, cfg)
            ys.append(y)
    return torch.cat(ys, 1), state


@pytest.mark.parametrize("muon_steps, tol", [(0, 0.02), (5, 0.15)])
def test_layer_bf16_close_to_fp32(muon_steps, tol):
    """4 chunks of LaCET: outputs and fast weights within `tol` relative (Frobenius) of fp32;
    the state itself (weights, importance, anchors) stays fp32 under bf16 autocast."""
    torch.manual_seed(0)
    layer, x = FastWeightLayer(64, 128, muon_steps=muon_steps), torch.randn(2, 4 * 48, 64)
    y32, s32 = _stream_layer(layer, x, torch.float32)
    y16, s16 = _stream_layer(layer, x, torch.bfloat16)
    assert _rel(y16, y32) < tol
    for n in MATRICES:
        assert s16.weights[n].dtype == s16.anchors[n].dtype == s16.importance[n].dtype == torch.float32
        assert _rel(s16.weights[n], s32.weights[n]) < tol
        assert _rel(s16.anchors[n], s32.anchors[n]) < tol
        # weight norm keeps every column at its initial norm in bf16 too (it runs in fp32)
        torch.testing.assert_close(s16.weights[n].norm(dim=-2), s32.weights[n].norm(dim=-2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("muon_steps, min_cos, norm_tol", [(0, 0.999, 0.1), (5, 0.9, 0.15)])
def test_layer_bf16_gradients_close_to_fp32(muon_steps, min_cos, norm_tol):
    """Training through 4 chunks of updates in bf16: every slow weight's gradient points the same
    way as fp32's (cosine > min_cos) with a norm within norm_tol relative. One exception with Muon: Newton-Schulz normalises away a
    common scale of the learning rates, so lr_proj.bias's exact gradient is a near-cancellation
    (~100x smaller than the others) that bf16 cannot resolve; it must stay within bf16 noise of
    the layer's gradients (max entry < 0.2 x the largest entry of any gradient)."""
    torch.manual_seed(0)
    layer, x = FastWeightLayer(64, 128, muon_steps=muon_steps), torch.randn(1, 4 * 48, 64)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        layer.zero_grad()
        y, _ = _stream_layer(layer, x, dtype)
        y.float().square().mean().backward()
        grads[dtype] = {n: p.grad.clone() for n, p in layer.named_parameters()}
    largest = max(g.abs().max() for g in grads[torch.float32].values())
    for n, g32 in grads[torch.float32].items():
        g16 = grads[torch.bfloat16][n]
        assert g16.dtype == torch.float32
        if muon_steps and n == "lr_proj.bias":
            assert g32.abs().max() < 0.01 * largest  # the cancellation is real in fp32
            assert g16.abs().max() < 0.2 * largest
            continue
        assert torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > min_cos, n
        assert abs(g16.norm() / g32.norm() - 1) < norm_tol, n


def test_model_forward_bf16_close_to_fp32():
    """Tiny model, both heads, 4 chunks: images within 0.1 (max) and 0.02 (mean) of fp32 in [0, 1]."""
    torch.manual_seed(0)
    model = fsm.FSM.from_preset("tiny", heads=("lvsm", "4dgs")).eval()
    images, c2w, K, times = _clip(8)
    tc, tk = _cameras(3, seed=5)
    targets = _views(None, tc, tk, torch.tensor([-0.5, 0.1, 0.9]))
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.compute_dtype = dtype
        with torch.no_grad():
            out[dtype] = model(_views(images, c2w, K, times), targets, frames_per_chunk=2)
    for head, ref in out[torch.float32].items():
        got = out[torch.bfloat16][head]
        assert got.dtype == torch.float32  # heads (and the rasterizer) run in fp32
        d = (got - ref).abs()
        assert d.max() < 0.1 and d.mean() < 0.02, (head, d.max().item(), d.mean().item())


SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "fsm-small.pt"


@pytest.mark.parametrize("source, min_psnr", [("tiny", 35.0), ("shipped", 45.0)])
def test_streamed_session_bf16_close_to_fp32(source, min_psnr):
    """A streamed clip rendered by a session, bf16 vs fp32: PSNR of one against the other above
    min_psnr (an untrained tiny model; the shipped checkpoint, whose trained weights are smoother)."""
    torch.manual_seed(0)
    model = fsm.FSM.from_preset("tiny").eval() if source == "tiny" else fsm.load_checkpoint(SHIPPED, device="cpu")
    images, c2w, K, times = _clip(16)
    tc, tk = _cameras(2, seed=7)
    renders = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.compute_dtype = dtype
        session = StreamSession(model, stream=model.stream_config(frames_per_chunk=8))
        session.feed(images, c2w, K, times)
        renders[dtype] = session.render(tc, tk, torch.tensor([0.0, 0.5]), H, W)
    mse = (renders[torch.bfloat16] - renders[torch.float32]).square().mean()
    assert 10 * torch.log10(1 / mse) > min_psnr

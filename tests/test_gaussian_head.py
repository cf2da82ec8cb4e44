"""The 4DGS head inside the model: training forward, streaming, world-frame Gaussians."""

import pytest
import torch

from fsm.cameras import ClipNormalization, normalize_poses
from fsm.gaussians import slice_4dgs
from fsm.model import FSM, render_gaussians
from fsm.raster import ALPHA_MIN
from fsm.stream import StreamSession

from tests.test_model import _cameras, _clip, _views

H = W = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FSM.from_preset("tiny", heads=("lvsm", "4dgs")).eval()


def _small_clip(n, seed=0):
    images, c2w, K, times = _clip(n, seed)
    return torch.nn.functional.avg_pool2d(images, 2), c2w, K / 2, times


def test_training_forward_reaches_every_head_parameter():
    torch.manual_seed(0)
    model = FSM.from_preset("tiny", heads=("lvsm", "4dgs"))
    images, c2w, K, times = _small_clip(4)
    tgt_images, tgt_c2w, tgt_K, tgt_t = _small_clip(2, seed=4)
    out = model(_views(images, c2w, K, times), _views(None, tgt_c2w, tgt_K, tgt_t), frames_per_chunk=2)
    assert set(out) == {"lvsm", "4dgs"} and out["4dgs"].shape == (1, 2, 3, H, W)
    torch.nn.functional.mse_loss(out["4dgs"], tgt_images[None]).backward()
    for name, p in model.gaussian_head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # the Gaussians depend on the fast weights, so the backbone learns through this head too
    assert model.blocks[0].fw.w0.grad.abs().sum() > 0
    assert model.lvsm_head.proj.weight.grad is None  # that head was not in this loss


def test_stream_gaussians_equal_batched_decode(model):
    images, c2w, K, times = _small_clip(6)
    inputs = _views(images, c2w, K, times)
    session = StreamSession(model, stream=model.stream_config(frames_per_chunk=2, max_virtual_views=6))
    session.feed(images, c2w, K, times)
    with torch.no_grad():
        states = model.init_states(1)
        for a in range(0, 6, 2):
            states, _ = model.ingest(states, inputs[a : a + 2])
        g4 = model.decode_gaussians(states, inputs)
        g3 = slice_4dgs(type(g4)(**{k: v[0] for k, v in vars(g4).items()}), 0.25)
    keep = g3.opacities >= ALPHA_MIN
    streamed = session.gaussians(0.25, prune_below=0.0)
    torch.testing.assert_close(streamed.means, g3.means[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.covariances, g3.covariances[keep], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(streamed.opacities, g3.opacities[keep], rtol=1e-5, atol=1e-7)
    # and a 4DGS render through the session equals the training path's render (no pruning there)
    tgt_c2w, tgt_K = _cameras(1, seed=3)
    tgt_K = tgt_K / 2
    with torch.no_grad():
        batched = render_gaussians(g4, _views(None, tgt_c2w, tgt_K, torch.tensor([0.25])), H, W)[0, 0]
    rendered = session.render(tgt_c2w[0], tgt_K[0], 0.25, H, W, head="4dgs")
    # the session culls Gaussians whose temporal marginal is < 0.05 (the 4DGS reference does)
    assert rendered.shape == (3, H, W) and (rendered - batched).abs().max() < 0.05


def test_gaussians_are_reported_in_the_clip_world_frame(model):
    images, c2w, K, times = _small_clip(4)
    world = c2w.clone()
    world[:, :3, 3] = world[:, :3, 3] * 5 + torch.tensor([3.0, -2.0, 1.0])
    norm_c2w, norm = normalize_poses(world)
    a = StreamSession(model, ClipNormalization(norm))
    a.feed(images, world, K, times)
    b = StreamSession(model)
    b.feed(images, norm_c2w, K, times)
    ga, gb = a.gaussians(0.0), b.gaussians(0.0)
    torch.testing.assert_close(ga.means, norm.points_to_world(gb.means), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ga.covariances, norm.covariances_to_world(gb.covariances), rtol=1e-4, atol=1e-6)


def test_virtual_views_stay_bounded_and_spread(model):
    session = StreamSession(model, ClipNormalization(time_span=(0.0, 39.0)), model.stream_config(frames_per_chunk=4, max_virtual_views=8))
    images, c2w, K, _ = _small_clip(40)
    session.feed(images, c2w, K, torch.arange(40.0))
    kept = [round((v.times.item() + 1) / 2 * 39) for v in session._virtual]
    assert len(kept) <= 8 and kept == list(range(0, 40, kept[1] - kept[0]))
    assert kept[-1] >= 32  # spread over the whole clip, not just its start


def test_head_errors(model):
    lvsm_only = FSM.from_preset("tiny").eval()
    s = StreamSession(lvsm_only, ClipNormalization(time_span=(0.0, 1.0)))
    with pytest.raises(ValueError, match="unknown head '4dgs'"):
        s.render(torch.eye(4), torch.tensor([10.0, 10, 8, 8]), 0.0, H, W, head="4dgs")
    fresh = StreamSession(model, ClipNormalization(time_span=(0.0, 1.0)))
    with pytest.raises(ValueError, match="needs at least one ingested chunk"):
        fresh.gaussians(0.5)

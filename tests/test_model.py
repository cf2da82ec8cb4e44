"""The FSM model, streaming exactness and checkpoints."""


import pytest
import torch

import fsm
from fsm.cameras import ClipNormalization, look_at, normalize_poses
from fsm.model import FSM, Views, patchify, preset, unpatchify
from fsm.stream import StreamSession

H = W = 32


def _cameras(n, seed=0, radius=2.0):
    """n cameras on an arc looking at the origin, with their intrinsics."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.linspace(-0.6, 0.6, n) + 0.05 * torch.randn(n, generator=g)
    c2w = torch.stack([look_at(torch.tensor([radius * a.sin().item(), -0.3, -radius * a.cos().item()]), torch.zeros(3), torch.tensor([0.0, -1.0, 0.0])) for a in angles])
    K = torch.tensor([28.0, 28.0, W / 2, H / 2]).repeat(n, 1)
    return c2w, K


def _clip(n, seed=0):
    c2w, K = _cameras(n, seed)
    images = torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed + 1))
    times = torch.linspace(-1, 1, n)
    return images, c2w, K, times


def _views(images, c2w, K, times):
    return Views(c2w[None], K[None], times[None], None if images is None else images[None])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FSM.from_preset("tiny").eval()


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 5, 16, 24)
    torch.testing.assert_close(unpatchify(patchify(x, 8), 8, 16, 24), x, rtol=0, atol=0)


def test_streaming_equals_batched_forward(model):
    images, c2w, K, times = _clip(9)
    tgt_c2w, tgt_K = _cameras(3, seed=5)
    tgt_t = torch.tensor([-0.5, 0.1, 0.9])
    with torch.no_grad():
        batched = model(_views(images, c2w, K, times), _views(None, tgt_c2w, tgt_K, tgt_t), frames_per_chunk=2)["lvsm"][0]
    # identity normalisation and a [-1, 1] span: the session's frame equals the model's
    session = StreamSession(model, stream=model.stream_config(frames_per_chunk=2))
    for a, b in [(0, 3), (3, 4), (4, 9)]:  # uneven feeds: chunks fill across calls
        session.feed(images[a:b], c2w[a:b], K[a:b], times[a:b])
    assert session.pending_frames == 1
    session.flush()
    assert [r.frames for r in session.history] == [2, 2, 2, 2, 1]
    streamed = session.render(tgt_c2w, tgt_K, tgt_t, H, W)
    torch.testing.assert_close(streamed, batched, rtol=1e-5, atol=1e-6)


def test_targets_render_independently(model):
    images, c2w, K, times = _clip(4)
    session = StreamSession(model)
    session.feed(images, c2w, K, times)
    tgt_c2w, tgt_K = _cameras(2, seed=7)
    both = session.render(tgt_c2w, tgt_K, torch.tensor([0.3, -0.2]), H, W)
    for i, t in enumerate([0.3, -0.2]):
        torch.testing.assert_close(session.render(tgt_c2w[i], tgt_K[i], t, H, W), both[i], rtol=1e-5, atol=1e-6)


def test_lambda_zero_model_equals_plain_lact_model(model):
    """The whole model with lambda = 0 equals the same model where every layer runs lact_step."""
    from fsm import lacet
    from tests.test_lacet import lact_step

    images, c2w, K, times = _clip(6)
    inputs, targets = _views(images, c2w, K, times), _views(None, *_cameras(2, seed=3), torch.tensor([0.0, 0.5]))
    with torch.no_grad():
        elastic = model(inputs, targets, frames_per_chunk=2, elastic=fsm.ElasticConfig.plain_lact())["lvsm"]
        original = lacet.lacet_step
        try:
            lacet.lacet_step = lambda s, k, v, lr, steps, cfg, with_stats=False: (lact_step(s, k, v, lr, steps), None)
            plain = model(inputs, targets, frames_per_chunk=2, elastic=fsm.ElasticConfig.plain_lact())["lvsm"]
        finally:
            lacet.lacet_step = original
    assert torch.equal(elastic, plain)


def test_elastic_changes_the_result_with_several_chunks(model):
    images, c2w, K, times = _clip(6)
    inputs, targets = _views(images, c2w, K, times), _views(None, *_cameras(1, seed=3), torch.tensor([0.0]))
    with torch.no_grad():
        a = model(inputs, targets, frames_per_chunk=2, elastic=fsm.ElasticConfig(lam=0.0))["lvsm"]
        b = model(inputs, targets, frames_per_chunk=2, elastic=fsm.ElasticConfig(lam=0.5, estimator="mas", importance_init=1.0))["lvsm"]
    assert (a - b).abs().max() > 1e-4


def test_slow_weights_get_gradients_through_updates():
    torch.manual_seed(0)
    model = FSM.from_preset("tiny")
    images, c2w, K, times = _clip(6)
    tgt = _clip(2, seed=9)
    pred = model(_views(images, c2w, K, times), _views(None, *tgt[1:]), frames_per_chunk=2)["lvsm"]
    torch.nn.functional.mse_loss(pred, tgt[0][None]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # the initial fast weights only reach the loss through the chain of chunk updates
    assert model.blocks[0].fw.w0.grad.abs().sum() > 0


def test_session_history_and_state(model):
    images, c2w, K, times = _clip(5)
    session = StreamSession(model, ClipNormalization(time_span=(0.0, 4.0)), model.stream_config(frames_per_chunk=2))
    records = session.feed(images, c2w, K, torch.arange(5.0))
    assert len(records) == 2 and session.pending_frames == 1
    rec = session.history[-1]
    assert rec.index == 1 and rec.frames_total == 4 and rec.time_range == (2.0, 3.0)
    assert len(rec.layers) == model.config.depth
    for layer in rec.layers:
        assert set(layer.drift) == {"w0", "w1", "w2"} and all(v > 0 for v in layer.drift.values())
        assert all(0 < f < 1 for f in layer.importance_frac_above_mean.values())
    st = session.state(0)
    assert st.chunks == 2 and st.weights["w0"].shape == (1, 64, 128)
    # rendering is possible at any moment, and again after more chunks
    before = session.render(c2w[0], K[0], 1.0, H, W)
    session.flush()
    after = session.render(c2w[0], K[0], 1.0, H, W)
    assert before.shape == (3, H, W) and not torch.equal(before, after)
    assert 0 <= after.min() and after.max() <= 1


def test_session_pose_normalisation_is_applied(model):
    """Feeding world-frame cameras with their normalisation equals feeding normalised ones."""
    images, c2w, K, times = _clip(4)
    shift = torch.eye(4)
    shift[:3, 3] = torch.tensor([10.0, -3.0, 5.0])
    world = shift @ c2w
    world[:, :3, 3] *= 7.0
    norm_c2w, norm = normalize_poses(world)
    a = StreamSession(model, ClipNormalization(norm))
    a.feed(images, world, K, times)
    b = StreamSession(model)
    b.feed(images, norm_c2w, K, times)
    torch.testing.assert_close(a.render(world[1], K[1], 0.0, H, W), b.render(norm_c2w[1], K[1], 0.0, H, W), rtol=1e-4, atol=1e-5)


def test_session_rejects_bad_frames(model):
    session = StreamSession(model, ClipNormalization(time_span=(0.0, 1.0)))
    images, c2w, K, times = _clip(3)
    with pytest.raises(ValueError, match="3 frames but cameras"):
        session.feed(images, c2w[:2], K, times)
    bad = c2w.clone()
    bad[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="c2w contain NaN"):
        session.feed(images, bad, K, times)
    session.feed(images, c2w, K, times)
    with pytest.raises(ValueError, match="size"):
        session.feed(torch.rand(1, 3, 16, 16), c2w[:1], K[:1], times[:1])


# -- checkpoints


def test_checkpoint_roundtrip_bit_exact(tmp_path, model):
    path = tmp_path / "m.pt"
    fsm.save_checkpoint(path, model, metadata={"steps": 3})
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == "fsm-view-checkpoint"
    loaded = fsm.load_checkpoint(path)
    assert loaded.config == model.config and loaded.metadata == {"steps": 3}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_fp16_restores_float32(tmp_path, model):
    path = tmp_path / "half.pt"
    fsm.save_checkpoint(path, model, dtype=torch.float16)
    loaded = fsm.load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded.blocks[0].fw.w0, model.blocks[0].fw.w0, rtol=1e-3, atol=1e-3)


def test_checkpoint_mismatches_are_refused(tmp_path, model):
    path = tmp_path / "m.pt"
    fsm.save_checkpoint(path, model)
    with pytest.raises(fsm.CheckpointError, match=r"preset: checkpoint 'tiny' vs expected 'small'.*dim: checkpoint 64 vs expected 256"):
        fsm.load_checkpoint(path, expect=preset("small"))
    with pytest.raises(fsm.CheckpointError, match="needs \\['4dgs'\\]"):
        fsm.load_checkpoint(path, expect_heads=("4dgs",))
    # weights that don't fit the config
    raw = torch.load(path, weights_only=True)
    raw["config"]["fw_hidden"] = 96
    torch.save(raw, tmp_path / "shapes.pt")
    with pytest.raises(fsm.CheckpointError, match=r"shapes.pt: weights do not match.*blocks.0.fw.w0: shape \(64, 128\) vs model \(64, 96\)"):
        fsm.load_checkpoint(tmp_path / "shapes.pt")
    raw["version"] = 99
    torch.save(raw, tmp_path / "version.pt")
    with pytest.raises(fsm.CheckpointError, match="version 99 is not supported"):
        fsm.load_checkpoint(tmp_path / "version.pt")
    torch.save({"model": model.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(fsm.CheckpointError, match="not an fsm-view checkpoint"):
        fsm.load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(fsm.CheckpointError, match="trunc.pt: not a readable"):
        fsm.load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(fsm.CheckpointError, match="no such checkpoint"):
        fsm.load_checkpoint(tmp_path / "absent.pt")


def test_version_1_checkpoints_load_with_their_run_settings(tmp_path):
    """Version 1 kept frames_per_chunk and elastic inside "config"; they become model.stream."""
    stream = fsm.StreamConfig(frames_per_chunk=3, elastic=fsm.ElasticConfig(estimator="mas", anchor="global"))
    model = FSM.from_preset("tiny", stream=stream)
    fsm.save_checkpoint(tmp_path / "v2.pt", model)
    raw = torch.load(tmp_path / "v2.pt", weights_only=True)
    run = raw.pop("stream")
    v1 = {**raw, "version": 1, "config": {**raw["config"], "frames_per_chunk": run["frames_per_chunk"], "elastic": run["elastic"]}}
    torch.save(v1, tmp_path / "v1.pt")
    loaded = fsm.load_checkpoint(tmp_path / "v1.pt")
    assert loaded.config == model.config and loaded.stream == stream
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # version 1 spelled out the paper head's depth range; it loads as that head's default
    spelled = {**v1, "config": {**v1["config"], "gs_near": 0.01, "gs_far": 100.0}}
    torch.save(spelled, tmp_path / "v1_range.pt")
    assert fsm.load_checkpoint(tmp_path / "v1_range.pt").config == model.config


def test_atomic_save_keeps_old_file_on_crash(tmp_path, model, monkeypatch):
    path = tmp_path / "m.pt"
    fsm.save_checkpoint(path, model, metadata={"v": 1})

    def crash(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        fsm.save_checkpoint(path, model, metadata={"v": 2})
    monkeypatch.undo()
    assert fsm.load_checkpoint(path).metadata == {"v": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_presets():
    base = preset("base")
    assert (base.depth, base.dim, base.fw_hidden, base.attn_heads) == (24, 768, 1536, 12)
    assert fsm.StreamConfig().elastic == fsm.ElasticConfig(lam=0.5, alpha=0.5, beta=0.5, estimator="si", anchor="streaming-ema")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")

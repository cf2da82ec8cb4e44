"""Training samples and the held-out set: shapes, time and pose normalisation checked by
re-rendering from the recorded scene, novel targets, seed spaces, regimes, the real-clip source."""

import pytest
import torch

from fsm.data.samples import (
    HELDOUT_SCENES, TRAIN_SEEDS, ClipSource, SampleConfig, SyntheticSource, draw_training_scene, heldout_samples,
    heldout_views,
)  # fmt: skip
from fsm.data.synthetic import frame_times, make_path, make_scene, render

CFG = SampleConfig(num_input=4, num_target=4, window=12, height=24, width=24, novel_share=0.25)


@pytest.fixture(scope="module")
def batch():
    return SyntheticSource(CFG).sample(3, torch.Generator().manual_seed(0))


def world_times(times_norm, span):
    return span[0] + (times_norm.double() + 1) / 2 * (span[1] - span[0])


def test_shapes_and_normalised_times(batch):
    B, Vi, Vt, H, W = 3, CFG.num_input, CFG.num_target, CFG.height, CFG.width
    assert batch.inputs.images.shape == (B, Vi, 3, H, W) and batch.targets.images.shape == (B, Vt, 3, H, W)
    assert batch.inputs.c2w.shape == (B, Vi, 4, 4) and batch.targets.fxfycxcy.shape == (B, Vt, 4)
    assert batch.inputs.times.shape == (B, Vi) and batch.novel.shape == (B, Vt) and batch.time_span.shape == (B, 2)
    for v in (batch.inputs, batch.targets):
        assert v.images.dtype == torch.float32 and 0 <= v.images.min() and v.images.max() <= 1
        assert (v.times >= -1).all() and (v.times <= 1).all()
        assert (v.times[:, 1:] >= v.times[:, :-1]).all()  # sorted by time
    for b, meta in enumerate(batch.meta):
        # The window's first/last frame map to -1/+1: recorded times come back exactly.
        window = frame_times(CFG.window, CFG.fps, meta["start"])
        assert batch.time_span[b].tolist() == [float(window[0]), float(window[-1])]
        frames = torch.tensor(meta["frames"])
        expect = torch.sort(window[frames[: CFG.num_input]]).values
        torch.testing.assert_close(world_times(batch.inputs.times[b], window[[0, -1]]), expect, atol=1e-5, rtol=0)


def test_inputs_and_on_trajectory_targets_are_disjoint_frames(batch):
    n_on = CFG.num_target - CFG.num_novel
    for meta in batch.meta:
        frames = meta["frames"][: CFG.num_input + n_on]
        assert len(set(frames)) == len(frames)
        assert all(0 <= f < CFG.window for f in frames)


def test_pose_normalisation_is_shared_and_images_match_their_cameras(batch):
    """Undo the normalisation with the recorded transform, re-render the scene at those world
    cameras and times, and get the sample's images back (inputs and targets alike)."""
    for b, meta in enumerate(batch.meta):
        norm = batch.normalization[b]
        pos = batch.inputs.c2w[b, :, :3, 3]
        torch.testing.assert_close(pos.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        assert abs(pos.abs().max().item() - 1) < 1e-5
        scene = make_scene(meta["seed"], meta["family"])
        path = make_path(scene, meta["path"], meta["path_variant"])
        span = batch.time_span[b].tolist()
        for views, novel in ((batch.inputs, torch.zeros(CFG.num_input, dtype=torch.bool)), (batch.targets, batch.novel[b])):
            c2w_world = norm.c2w_to_world(views.c2w[b])
            t = world_times(views.times[b], span)
            on = ~novel
            torch.testing.assert_close(c2w_world[on], path.c2w(t[on]), atol=1e-4, rtol=0)
            again = render(scene, c2w_world, views.fxfycxcy[b], t, CFG.height, CFG.width)
            diff = (again - views.images[b]).abs().amax(1)
            assert (diff > 1e-3).float().mean() < 0.01  # world<->model round trip may flip an edge pixel


def test_novel_targets_are_off_trajectory_at_input_times(batch):
    assert CFG.num_novel == 1
    assert (batch.novel.sum(1) == CFG.num_novel).all()
    for b, meta in enumerate(batch.meta):
        t_in = batch.inputs.times[b]
        novel = batch.novel[b]
        for t in batch.targets.times[b][novel]:
            assert (t_in - t).abs().min() < 1e-6  # at an input's time
        scene = make_scene(meta["seed"], meta["family"])
        path = make_path(scene, meta["path"], meta["path_variant"])
        t = world_times(batch.targets.times[b][novel], batch.time_span[b].tolist())
        eye = batch.normalization[b].c2w_to_world(batch.targets.c2w[b][novel])[:, :3, 3]
        assert ((eye - path.c2w(t)[:, :3, 3]).norm(dim=-1) > 0.1).all()


def test_novel_share_is_configurable():
    cfg = SampleConfig(num_input=2, num_target=4, window=6, height=8, width=8, novel_share=0.5, shadows=False)
    s = SyntheticSource(cfg).sample(2, torch.Generator().manual_seed(1))
    assert (s.novel.sum(1) == 2).all()
    cfg = SampleConfig(num_input=2, num_target=4, window=6, height=8, width=8, novel_share=0.0, shadows=False)
    assert not SyntheticSource(cfg).sample(1, torch.Generator().manual_seed(1)).novel.any()


def test_sampler_is_deterministic_given_the_generator():
    cfg = SampleConfig(num_input=2, num_target=2, window=6, height=8, width=8)
    a = SyntheticSource(cfg).sample(2, torch.Generator().manual_seed(5))
    b = SyntheticSource(cfg).sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(a.inputs.images, b.inputs.images) and torch.equal(a.targets.c2w, b.targets.c2w)


def test_training_and_heldout_seed_spaces_are_disjoint(batch):
    heldout = {s.seed for s in HELDOUT_SCENES}
    assert max(heldout) < TRAIN_SEEDS[0]
    g = torch.Generator().manual_seed(0)
    seeds = [draw_training_scene(g)[0] for _ in range(5000)]
    assert all(TRAIN_SEEDS[0] <= s < TRAIN_SEEDS[1] for s in seeds)
    assert not heldout & set(seeds)
    assert all(TRAIN_SEEDS[0] <= m["seed"] < TRAIN_SEEDS[1] for m in batch.meta)  # what the sampler really used


def test_heldout_set_is_fixed_and_covers_families_and_paths():
    assert len({(s.family, s.path) for s in HELDOUT_SCENES}) == len(HELDOUT_SCENES)
    kw = dict(num_input=3, num_target=2, height=8, width=8, scenes=HELDOUT_SCENES[:2])
    a, b = list(heldout_views("sparse", **kw)), list(heldout_views("sparse", **kw))
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia.images, ib.images) and torch.equal(ta.c2w, tb.c2w) and torch.equal(ta.times, tb.times)


def test_sparse_regime_spreads_inputs_and_puts_targets_between():
    for s in heldout_samples("sparse", num_input=4, num_target=3, height=8, width=8, scenes=HELDOUT_SCENES[:3]):
        assert s.inputs.times[0, 0] == -1 and s.inputs.times[0, -1] == 1
        assert ((s.targets.times > -1) & (s.targets.times < 1)).all()
        frames = s.meta[0]["frames"]
        assert len(set(frames)) == 7 and max(frames) == 4 * 7 - 1


def test_continuous_regime_masks_frames_inside_a_contiguous_run():
    for s in heldout_samples("continuous", num_input=5, num_target=3, height=8, width=8, scenes=HELDOUT_SCENES[:3]):
        frames = s.meta[0]["frames"]
        assert sorted(frames) == list(range(8))  # contiguous run
        assert 0 in frames[:5] and 7 in frames[:5]  # ends are inputs
        assert ((s.targets.times > -1) & (s.targets.times < 1)).all()
        steps = torch.cat([s.inputs.times, s.targets.times], 1).sort().values.diff()
        torch.testing.assert_close(steps, torch.full_like(steps, 2 / 7))  # evenly spaced frames


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="window"):
        SampleConfig(num_input=8, num_target=8, window=8)
    with pytest.raises(ValueError, match="regime"):
        next(heldout_views("dense"))
    with pytest.raises(ValueError, match="window of 8 frames cannot hold 4 inputs \\+ 6 targets"):
        ClipSource([], SampleConfig(num_input=4, num_target=6, window=8, novel_share=0.5))


def test_clip_source_reads_written_clips(tmp_path):
    from fsm.io import load_clip, write_clip
    from fsm.io.clip import Cameras

    scene = make_scene(3, "object")
    path = make_path(scene, "orbit")
    t = frame_times(10, 12.0)
    c2w, K = path.c2w(t), path.fxfycxcy(10, 32, 32)
    write_clip(tmp_path / "a.mp4", render(scene, c2w, K, t, 32, 32), Cameras(c2w, K, t, 32, 32), 12.0)
    cfg = SampleConfig(num_input=3, num_target=3, window=8, height=16, width=16)
    source = ClipSource([tmp_path], cfg)
    assert source.paths == [tmp_path / "a.mp4"]
    s = source.sample(2, torch.Generator().manual_seed(0))
    assert s.inputs.images.shape == (2, 3, 3, 16, 16) and s.targets.images.shape == (2, 3, 3, 16, 16)
    assert not s.novel.any()
    clip = load_clip(tmp_path / "a.mp4", size=(16, 16))
    for b, meta in enumerate(s.meta):
        frames = torch.tensor(meta["frames"])
        i_in = frames[:3].sort().values
        torch.testing.assert_close(s.inputs.images[b], clip.frames[i_in])
        torch.testing.assert_close(s.normalization[b].c2w_to_world(s.inputs.c2w[b]), clip.c2w[i_in], atol=1e-5, rtol=0)
        torch.testing.assert_close(s.inputs.fxfycxcy[b], clip.fxfycxcy[i_in])
        assert (s.inputs.times[b] >= -1).all() and (s.inputs.times[b] <= 1).all()


def test_clip_source_rejects_short_clips(tmp_path):
    from fsm.io import write_clip
    from fsm.io.clip import Cameras

    scene = make_scene(3, "object")
    path = make_path(scene)
    t = frame_times(4, 12.0)
    c2w, K = path.c2w(t), path.fxfycxcy(4, 16, 16)
    write_clip(tmp_path / "short.mp4", render(scene, c2w, K, t, 16, 16), Cameras(c2w, K, t, 16, 16), 12.0)
    source = ClipSource(tmp_path / "short.mp4", SampleConfig(num_input=3, num_target=3, window=8, height=16, width=16))
    with pytest.raises(ValueError, match="short.mp4: 4 frames"):
        source.sample(1, torch.Generator())


def test_sample_clip_regenerates_from_its_script():
    """The shipped clip's cameras are exactly what the script computes, its frames decode to what
    the script renders, and rendering is deterministic."""
    import importlib.util
    from pathlib import Path

    from fsm.io import load_clip

    folder = Path(__file__).resolve().parents[1] / "assets" / "sample"
    spec = importlib.util.spec_from_file_location("make_sample_clip", folder / "make_sample_clip.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    clip = load_clip(folder / "sample.mp4")
    cams = script.sample_cameras()
    assert len(clip) == script.NUM_FRAMES and clip.frames.shape[-2:] == (script.SIZE, script.SIZE)
    assert torch.equal(clip.c2w, cams.c2w) and torch.equal(clip.fxfycxcy, cams.fxfycxcy)
    assert torch.equal(clip.times, cams.times) and clip.fps == script.FPS
    frames = script.sample_frames([0, 95])
    assert torch.equal(frames, script.sample_frames([0, 95]))
    psnr = -10 * torch.log10((frames - clip.frames[[0, 95]]).pow(2).mean())
    assert psnr > 30  # H.264 at crf 18 with 4:2:0 chroma; another frame of the clip scores far lower
    assert -10 * torch.log10((frames[0] - clip.frames[48]).pow(2).mean()) < 25

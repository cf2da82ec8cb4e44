"""Training scripts on the tiny preset (CPU): checkpoints, exact resume, crash safety, learning,
DDP (2 gloo processes), and eval / ablate / finetune end to end."""

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

import fsm
from fsm.checkpoint import read_checkpoint
from fsm.data.samples import HELDOUT_SCENES, heldout_views
from fsm.metrics import psnr
from train import ablate, eval as evaluate, export_checkpoint, finetune, lib
from train.lib import DataConfig, state_digest

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(height=32, width=32, num_input=4, num_target=2, window=8)
REAL_LOSS = lib.photometric_loss


def tiny(out: Path, **kw) -> lib.TrainConfig:
    base = dict(out=out, model=lib.ModelOptions(preset="tiny"), data=DATA, batch_size=1, steps=4, lr=1e-3,
                warmup=2, lpips_start=2, eval_scenes=0, ckpt_every=0, log_every=1, device="cpu")  # fmt: skip
    return lib.TrainConfig(**{**base, **kw})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    lib.pretrain(tiny(out, steps=3))
    return out / "ckpt.pt"


def test_smoke_run_writes_a_checkpoint_the_viewer_loads(smoke_ckpt):
    model = fsm.load_checkpoint(smoke_ckpt)
    assert model.config.preset == "tiny" and model.metadata["steps"] == 3
    summary = json.loads((smoke_ckpt.parent / "summary.json").read_text())
    assert summary["ranks"][0]["weights_sha256"] == state_digest(model.state_dict())
    # training moved the weights away from the seed-0 initialisation
    torch.manual_seed(0)
    init = fsm.FSM(model.config)
    assert not torch.equal(init.lvsm_head.proj.weight, model.lvsm_head.proj.weight)
    lines = [json.loads(s) for s in (smoke_ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in lines)
    assert "lpips" not in lines[0] and "lpips" in lines[2]  # LPIPS switched on at --lpips-start 2


def test_export_for_shipping(smoke_ckpt, tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"rows": [{"psnr": 12.5}]}))
    out = export_checkpoint.main(export_checkpoint.ExportConfig(smoke_ckpt, tmp_path / "ship.pt", eval=tmp_path / "eval.json", notice="a test"))
    shipped, trained = fsm.load_checkpoint(out), fsm.load_checkpoint(smoke_ckpt)
    assert shipped.metadata["notice"] == "a test" and shipped.metadata["eval"]["rows"][0]["psnr"] == 12.5
    assert shipped.metadata["steps"] == 3 and shipped.metadata["train_config"]["steps"] == 3
    raw = torch.load(out, weights_only=True)
    assert "optimizer" not in raw and all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    for (k, a), b in zip(trained.state_dict().items(), shipped.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3, msg=k)


def test_eval_plain_lact_baseline(tmp_path, smoke_ckpt):
    """--plain-lact adds each head streamed with lambda = 0, equal to a plain-LaCT session's renders."""
    from fsm.data.synthetic import frame_times, make_path, make_scene, render
    from fsm.io import Cameras, load_clip, write_clip

    scene = make_scene(6, "object")
    t = frame_times(9, 8.0)
    c2w, K = make_path(scene, "orbit").c2w(t).float(), make_path(scene, "orbit").fxfycxcy(9, 32, 32).float()
    write_clip(tmp_path / "c.mp4", render(scene, c2w, K, t, 32, 32), Cameras(c2w, K, t.double(), 32, 32), 8.0)
    cfg = evaluate.EvalConfig(ckpt=smoke_ckpt, out=tmp_path / "eval", data=DATA, scenes=0, clip=(tmp_path / "c.mp4",),
                              clip_size=32, holdout_every=3, strips=0, device="cpu", dtype="fp32", plain_lact=True)  # fmt: skip
    rows = {r["method"]: r for r in evaluate.main(cfg)["rows"]}
    assert set(rows) == {"lvsm", "lvsm (plain LaCT)", "nearest-input"}
    model = fsm.load_checkpoint(smoke_ckpt)
    inputs, targets, clip_norm = lib.split_clip(load_clip(tmp_path / "c.mp4", size=32), 3)
    pred, _ = lib.stream_and_render(model, inputs, targets, clip_norm, model.stream_config(elastic=fsm.ElasticConfig.plain_lact()))
    expected = psnr(pred.clamp(0, 1), targets.images[0]).mean().item()
    assert rows["lvsm (plain LaCT)"]["psnr"] == pytest.approx(expected, abs=1e-4)


def test_both_heads_train_and_evaluate(tmp_path):
    """--model.heads lvsm 4dgs: both losses are trained and the checkpoint renders with both."""
    data = DataConfig(height=16, width=16, num_input=2, num_target=1, window=4)
    lib.pretrain(tiny(tmp_path, data=data, steps=2, lpips_start=10, model=lib.ModelOptions(preset="tiny", heads=("lvsm", "4dgs"))))
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["lvsm_mse"]) and math.isfinite(r["4dgs_mse"]) for r in lines)
    model = fsm.load_checkpoint(tmp_path / "ckpt.pt", expect_heads=("lvsm", "4dgs"))
    torch.manual_seed(0)
    init = fsm.FSM(model.config)
    assert not torch.equal(init.gaussian_head.proj.weight, model.gaussian_head.proj.weight)


def test_kill_and_resume_is_bit_exact(tmp_path, monkeypatch):
    lib.pretrain(tiny(tmp_path / "straight", steps=6))
    straight = weights(tmp_path / "straight" / "ckpt.pt")

    # the second run crashes during step 5, after the checkpoint of step 3
    calls = {"n": 0}
    real_loss = lib.photometric_loss

    def crashing_loss(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_loss(*args)

    monkeypatch.setattr(lib, "photometric_loss", crashing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        lib.pretrain(tiny(tmp_path / "split", steps=6, ckpt_every=3))
    monkeypatch.setattr(lib, "photometric_loss", real_loss)
    ckpt = tmp_path / "split" / "ckpt.pt"
    assert read_checkpoint(ckpt)["step"] == 3

    summary = lib.pretrain(tiny(tmp_path / "split", steps=6, resume=ckpt))
    assert summary["steps"] == 6
    resumed = weights(ckpt)
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 checkpoint: write some bytes, then die
            f.write(b"PK\x03\x04 partial checkpoint")
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        lib.pretrain(tiny(tmp_path, steps=6, ckpt_every=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert fsm.load_checkpoint(tmp_path / "ckpt.pt").metadata["steps"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def signalling_loss(monkeypatch, at_call: int, signals: int = 1):
    """photometric_loss that sends this process SIGTERM `signals` times on its `at_call`-th call."""
    real_loss, calls = REAL_LOSS, {"n": 0}

    def loss(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*args)

    monkeypatch.setattr(lib, "photometric_loss", loss)


def test_sigterm_finishes_the_step_and_checkpoints_a_second_one_aborts(tmp_path, monkeypatch):
    handler = signal.getsignal(signal.SIGTERM)
    signalling_loss(monkeypatch, at_call=2)
    summary = lib.pretrain(tiny(tmp_path / "once", steps=6))
    assert summary["stopped_by_signal"] and not summary["finished"] and summary["steps"] == 2
    assert fsm.load_checkpoint(tmp_path / "once" / "ckpt.pt").metadata["steps"] == 2
    assert signal.getsignal(signal.SIGTERM) is handler  # restored on the way out

    signalling_loss(monkeypatch, at_call=2, signals=2)
    with pytest.raises(KeyboardInterrupt, match="second SIGTERM"):
        lib.pretrain(tiny(tmp_path / "twice", steps=6))
    assert signal.getsignal(signal.SIGTERM) is handler


def test_loss_goes_down_when_overfitting_one_sample(tmp_path, monkeypatch):
    from train.lib import make_source, training_batch

    fixed = training_batch(make_source(DATA), 1, seed=7)
    monkeypatch.setattr(lib, "training_batch", lambda source, batch, seed, scale_jitter=1.0: fixed)
    lib.pretrain(tiny(tmp_path, steps=100, warmup=10, lr=2e-3, lpips_weight=0.0))
    mse = [json.loads(s)["mse"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(mse[:5]) / 5, sum(mse[-5:]) / 5
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("threshold, warns", [(1e-9, True), (1e9, False)])
def test_a_run_that_skipped_many_steps_says_so(tmp_path, capsys, threshold, warns):
    summary = lib.pretrain(tiny(tmp_path, steps=4, warmup=1, skip_grad_norm=threshold))
    assert summary["skipped_steps"] == (3 if warns else 0)  # every step after warmup's one, or none
    assert ("warning: 3 of 4 steps were skipped" in capsys.readouterr().err) == warns


def test_ddp_two_gloo_processes_end_with_identical_weights(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(REPO / "train" / "pretrain.py"), "--model.preset", "tiny", "--device", "cpu", "--steps", "3",
           "--batch-size", "1", "--data.height", "32", "--data.width", "32", "--data.num-input", "4", "--data.num-target", "2",
           "--data.window", "8", "--warmup", "1", "--lpips-start", "100", "--eval-scenes", "0", "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = json.loads((tmp_path / "summary.json").read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP kept the replicas in sync
    assert ranks[0]["first_batch_sha256"] != ranks[1]["first_batch_sha256"]  # each rank its own data
    assert ranks[0]["weights_sha256"] == state_digest(weights(tmp_path / "ckpt.pt"))


@pytest.mark.parametrize("flags, message", [
    (["--model.gs-head", "paper", "--depth-risk", "1"], "error: --depth-risk 1.0:"),  # a combination train.lib refuses
    (["--model.gs-planes", "2"], "error: --model: gs_planes must be >= 3"),  # a value FSMConfig refuses
])  # fmt: skip
def test_a_refused_flag_is_one_line_not_a_traceback(tmp_path, flags, message):
    cmd = [sys.executable, str(REPO / "train" / "pretrain.py"), "--model.preset", "tiny", "--model.heads", "lvsm", "4dgs",
           *flags, "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and run.stderr.startswith(message)


def test_eval_end_to_end_on_synthetic_and_a_clip(tmp_path, smoke_ckpt):
    from fsm.data.synthetic import frame_times, make_path, make_scene, render
    from fsm.io import Cameras, write_clip

    scene = make_scene(5, "room")
    path = make_path(scene, "orbit")
    t = frame_times(12, 8.0)
    c2w, K = path.c2w(t).float(), path.fxfycxcy(12, 32, 32).float()
    write_clip(tmp_path / "clip.mp4", render(scene, c2w, K, t, 32, 32), Cameras(c2w, K, t.double(), 32, 32), 8.0)

    cfg = evaluate.EvalConfig(ckpt=smoke_ckpt, out=tmp_path / "eval", data=DATA, scenes=2, clip=(tmp_path / "clip.mp4",),
                              clip_size=32, holdout_every=3, strips=2, device="cpu")  # fmt: skip
    result = evaluate.main(cfg)
    rows = {(r["set"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {(s, m) for s in ("synthetic-sparse", "synthetic-continuous", "synthetic-novel", "clip-clip") for m in ("lvsm", "nearest-input")}
    fpc = fsm.load_checkpoint(smoke_ckpt).stream.frames_per_chunk
    assert rows[("synthetic-sparse", "lvsm")]["chunks"] == [math.ceil(DATA.num_input / fpc)]
    # 12 frames, every 3rd from frame 1 held out: targets 1, 4, 7, 10, the other 8 frames are inputs
    assert rows[("clip-clip", "lvsm")]["views"] == 4
    assert rows[("clip-clip", "lvsm")]["chunks"] == [math.ceil(8 / fpc)]

    # the nearest-input baseline, recomputed by hand on the held-out scenes
    values = []
    for inputs, targets in heldout_views("sparse", num_input=4, num_target=2, height=32, width=32, scenes=HELDOUT_SCENES[:2]):
        for v in range(targets.num_views):
            j = (inputs.times[0] - targets.times[0, v]).abs().argmin()
            values.append(psnr(inputs.images[0, j], targets.images[0, v]).item())
    assert rows[("synthetic-sparse", "nearest-input")]["psnr"] == pytest.approx(sum(values) / len(values), rel=1e-5)

    strip = iio.imread(result["strips"][0])
    assert strip.shape == (32, 3 * 32, 3)  # lvsm | nearest input | truth
    assert "| synthetic-sparse | lvsm |" in (tmp_path / "eval" / "eval.md").read_text()


def test_ablate_end_to_end(tmp_path):
    cfg = ablate.AblateConfig(out=tmp_path, preset="tiny", data=DATA, steps=2, batch_size=1, warmup=1, lpips_start=1,
                              eval_scenes=1, eval_targets=2, curve_inputs=(2, 4), device="cpu")  # fmt: skip
    report = ablate.main(cfg)
    results = report["results"]
    assert list(results) == list(ablate.VARIANTS)
    for name, r in results.items():
        assert math.isfinite(r["train_mse_ema"]) and all(math.isfinite(r["heldout"][g]["psnr"]) for g in ("sparse", "continuous"))
        chunks = [p["chunks"] for p in r["curve"]["sparse"]]
        # LaCT 1-chunk reads every input in one update; the others keep 1 frame per chunk (4 inputs / 4 chunks)
        assert chunks == ([[1], [1]] if name == "lact-1chunk" else [[2], [4]]), name
    cfg_1 = fsm.load_checkpoint(tmp_path / "lact-1chunk" / "ckpt.pt").stream
    cfg_si = fsm.load_checkpoint(tmp_path / "lacet-si" / "ckpt.pt").stream
    assert cfg_1.elastic.lam == 0 and cfg_1.frames_per_chunk == 4
    assert cfg_si.elastic.estimator == "si" and cfg_si.elastic.anchor == "streaming-ema" and cfg_si.frames_per_chunk == 1
    assert "lacet-mas-global" in (tmp_path / "ablate.md").read_text()


def test_ablate_stops_after_a_signalled_variant_and_keeps_its_results(tmp_path, monkeypatch):
    cfg = ablate.AblateConfig(out=tmp_path, preset="tiny", data=DATA, steps=3, batch_size=1, warmup=1, lpips_start=1,
                              eval_scenes=1, eval_targets=2, curve_inputs=(4,), device="cpu",
                              variants=("lact-1chunk", "lacet-si", "lacet-ewc"))  # fmt: skip
    signalling_loss(monkeypatch, at_call=4)  # the first step of the second variant
    report = ablate.main(cfg)
    assert list(report["results"]) == ["lact-1chunk", "lacet-si"]
    assert [r["steps"] for r in report["results"].values()] == [3, 1]
    on_disk = json.loads((tmp_path / "ablate.json").read_text())["results"]
    assert list(on_disk) == ["lact-1chunk", "lacet-si"] and not (tmp_path / "lacet-ewc").exists()


def test_finetune_excludes_heldout_frames_and_writes_a_loadable_checkpoint(tmp_path, smoke_ckpt, monkeypatch):
    from fsm.data.synthetic import frame_times, make_path, make_scene, render
    from fsm.io import Cameras, write_clip

    scene = make_scene(6, "outdoor")
    path = make_path(scene, "dolly")
    t = frame_times(12, 8.0)
    c2w, K = path.c2w(t).float(), path.fxfycxcy(12, 32, 32).float()
    times = t.double()
    write_clip(tmp_path / "clip.mp4", render(scene, c2w, K, t, 32, 32), Cameras(c2w, K, times, 32, 32), 8.0)

    seen_times = set()
    real_batch = finetune.clip_batch

    def spy(frames, kwargs, *args):
        inputs, targets = real_batch(frames, kwargs, *args)
        for views in (inputs, targets):
            seen_times.update(round(x, 4) for x in views.times.flatten().tolist())
        return inputs, targets

    monkeypatch.setattr(finetune, "clip_batch", spy)
    cfg = finetune.FinetuneConfig(ckpt=smoke_ckpt, clip=tmp_path / "clip.mp4", out=tmp_path / "ft", size=32, holdout_every=4,
                                  input_views=4, target_views=2, steps=6, lr=1e-3, warmup=1, device="cpu")  # fmt: skip
    report = finetune.main(cfg)
    # held-out frames 2, 6, 10 never reach training (times normalised over the clip span, as the viewer does)
    held_norm = {round(((times[i] - times[0]) / (times[-1] - times[0]) * 2 - 1).item(), 4) for i in (2, 6, 10)}
    assert seen_times and not (seen_times & held_norm)
    assert report["heldout_frames"] == 3 and report["train_frames"] == 9
    model = fsm.load_checkpoint(tmp_path / "ft" / "finetuned.pt")
    assert model.metadata["finetuned"]["steps"] == 6
    assert not torch.equal(model.lvsm_head.proj.weight, fsm.load_checkpoint(smoke_ckpt).lvsm_head.proj.weight)
    assert {r["method"] for r in report["after"]} == {"lvsm", "nearest-input"}


def test_depth_loss_is_mean_absolute_log_ratio_with_the_sky_at_far():
    depth = torch.tensor([[[[2.0, 1.0], [10.0, 100.0]]]])
    truth = torch.tensor([[[[1.0, 1.0], [20.0, float("inf")]]]])
    expected = (math.log(2.0) + 0.0 + math.log(2.0) + math.log(1000.0 / 100.0)) / 4
    assert abs(lib.depth_loss(depth, truth, far=1000.0).item() - expected) < 1e-6


def test_rescaled_world_looks_the_same_at_scaled_depth():
    """rescale_world: every pixel sees the same thing, at `factor` times the depth — the plane
    sweep at scaled depths gives the same costs, and the true depth lands on the same pixels."""
    from fsm.cameras import pixel_rays, project_points
    from fsm.planesweep import chunk_groups, log_depth_planes, plane_sweep_cost

    s = next(iter(fsm.data.samples.heldout_samples("novel", num_input=4, num_target=2, height=16, width=16, scenes=HELDOUT_SCENES[:1])))
    big = lib.rescale_world(s, torch.tensor([3.0], dtype=torch.float64))
    torch.testing.assert_close(big.inputs.images, s.inputs.images)
    torch.testing.assert_close(big.input_depth, s.input_depth * 3)
    torch.testing.assert_close(big.inputs.c2w[..., :3, :3], s.inputs.c2w[..., :3, :3])
    planes = log_depth_planes(0.3, 30.0, 8)
    groups = chunk_groups(4, 4)
    before = plane_sweep_cost(s.inputs.images[0], s.inputs.c2w[0], s.inputs.fxfycxcy[0], groups, planes)
    after = plane_sweep_cost(big.inputs.images[0], big.inputs.c2w[0], big.inputs.fxfycxcy[0], groups, planes * 3)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    # view 0's surface points seen from view 1, before and after: the same pixels
    def seen(sample):
        o, d = pixel_rays(sample.inputs.c2w[0, :1].float(), sample.inputs.fxfycxcy[0, :1].float(), 16, 16)
        depth = sample.input_depth[0, 0].float()
        keep = torch.isfinite(depth)
        points = (o[0] + depth[..., None] * d[0])[keep]
        return project_points(points, sample.inputs.c2w[0, 1].float(), sample.inputs.fxfycxcy[0, 1].float())[0]
    torch.testing.assert_close(seen(big), seen(s), atol=1e-3, rtol=1e-4)


def test_scale_jitter_is_seeded_and_log_uniform():
    class Fixed:  # a source that always gives the same sample
        def sample(self, batch, g):
            return next(iter(fsm.data.samples.heldout_samples("sparse", num_input=2, num_target=1, height=8, width=8, scenes=HELDOUT_SCENES[:1])))

    plain = lib.training_batch(Fixed(), 1, seed=5)
    ratios = []
    for seed in range(40):
        a, b = lib.training_batch(Fixed(), 1, seed, scale_jitter=4.0), lib.training_batch(Fixed(), 1, seed, scale_jitter=4.0)
        torch.testing.assert_close(a.input_depth, b.input_depth)  # a pure function of the seed
        finite = torch.isfinite(plain.input_depth)
        r = (a.input_depth[finite] / plain.input_depth[finite])
        assert torch.allclose(r, r[0], rtol=1e-5)  # one factor per sample
        ratios.append(r[0].log().item())
    assert all(abs(x) <= math.log(4.0) + 1e-6 for x in ratios)
    assert min(ratios) < -0.5 and max(ratios) > 0.5  # spread over the range, both ways


def test_depth_supervision_adds_the_plane_cross_entropy_and_risk_for_the_geo_head():
    from fsm.geohead import plane_abs_rel_risk, plane_cross_entropy

    torch.manual_seed(0)
    geo = fsm.FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo")
    paper = fsm.FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="paper")
    depth = torch.rand(1, 2, 4, 4) * 10 + 0.5
    truth = torch.rand(1, 2, 4, 4) * 10 + 0.5
    logits = torch.randn(1, 2, geo.config.gs_planes, 4, 4)
    loss, parts = lib.depth_supervision({"depth": depth, "depth_logits": logits}, truth, geo, 0.0)
    ce = plane_cross_entropy(logits, geo.gaussian_head.log_planes, truth)
    log_l1 = (depth.log() - truth.log()).abs().mean()
    torch.testing.assert_close(loss, log_l1 + ce)
    assert parts == pytest.approx({"depth_logl1": log_l1.item(), "depth_plane_ce": ce.item()})
    loss, parts = lib.depth_supervision({"depth": depth, "depth_logits": logits}, truth, geo, 0.5)  # --depth-risk 0.5
    risk = plane_abs_rel_risk(logits, geo.gaussian_head.log_planes, truth)
    torch.testing.assert_close(loss, log_l1 + ce + 0.5 * risk)
    assert parts["depth_risk"] == pytest.approx(risk.item())
    loss, parts = lib.depth_supervision({"depth": depth}, truth, paper, 0.5)  # the paper head has no planes
    torch.testing.assert_close(loss, log_l1)
    assert set(parts) == {"depth_logl1"}


def test_geo_head_trains_on_true_depth_and_eval_reports_oracle_and_depth_error(tmp_path):
    cfg = tiny(tmp_path, steps=3, model=lib.ModelOptions(preset="tiny", heads=("lvsm", "4dgs"), gs_head="geo"), lpips_start=100)
    lib.pretrain(cfg)
    logged = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["depth_logl1"]) and r["depth_logl1"] > 0 for r in logged if "loss" in r)
    model = fsm.load_checkpoint(tmp_path / "ckpt.pt")
    assert model.config.gs_head == "geo"
    pairs = lib.synthetic_pairs(replace(DATA, num_input=6, num_target=3), "novel", 1)
    rows = {r["method"]: r for r in lib.evaluate_pairs(model, pairs)[0]}
    assert set(rows) == {"lvsm", "4dgs", lib.ORACLE, "nearest-input"}
    assert rows["4dgs"]["abs_rel"] > 0 and rows[lib.ORACLE]["abs_rel"] == 0.0
    # the depth error, recomputed from the model's Gaussians by hand
    inputs, targets, _, depth = pairs[0]
    with torch.no_grad():
        pred = model(inputs, targets, heads=("depth",))["depth"]
    finite = torch.isfinite(depth)
    assert abs(((pred - depth).abs() / depth)[finite].mean().item() - rows["4dgs"]["abs_rel"]) < 1e-5
    # eval.py --gs-readout risk: the same weights read around the risk-minimising plane, by hand
    from fsm.geohead import plane_readout

    data = replace(DATA, num_input=6, num_target=3)
    out = evaluate.main(evaluate.EvalConfig(ckpt=tmp_path / "ckpt.pt", out=tmp_path / "eval", data=data, scenes=1, regimes=("novel",),
                                            depth=lib.DepthOptions(gs_readout="risk"), strips=0, device="cpu"))  # fmt: skip
    got = next(r for r in out["rows"] if r["method"] == "4dgs")["abs_rel"]
    with torch.no_grad():
        o = model(inputs, targets, heads=("depth",))
    risk = plane_readout(o["depth_logits"], model.gaussian_head.log_planes, centre="risk").exp()
    assert out["model"]["gs_readout"] == "risk" and got != pytest.approx(rows["4dgs"]["abs_rel"], rel=1e-3)
    assert got == pytest.approx(((risk - depth).abs() / depth)[finite].mean().item(), rel=1e-4)


def test_init_from_a_shipped_checkpoint_starts_from_its_weights(tmp_path, smoke_ckpt):
    from train.export_checkpoint import ExportConfig
    from train.export_checkpoint import main as export

    shipped = export(ExportConfig(smoke_ckpt, tmp_path / "shipped.pt", fp16=False))
    cfg = tiny(tmp_path / "warm", steps=1, init_from=shipped, lr=0.0, warmup=1)
    lib.pretrain(cfg)
    before, after = weights(shipped), weights(tmp_path / "warm" / "ckpt.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)  # lr 0: the run kept the shipped weights
    assert fsm.load_checkpoint(tmp_path / "warm" / "ckpt.pt").metadata["init_from"]["path"] == str(shipped)
    other = tiny(tmp_path / "bad", steps=1, init_from=shipped, model=lib.ModelOptions(preset="small"))
    with pytest.raises(ValueError, match="architecture differs"):
        lib.pretrain(other)


def test_depth_only_stage_adds_and_trains_just_the_depth_modules(tmp_path, smoke_ckpt, capsys):
    """--init-from a geo checkpoint without them + --model.gs-refine --model.gs-edge --depth-only
    --depth-risk 1 --model.gs-readout risk --model.gs-depth-size 16 --model.gs-sweep-back 1 --model.gs-sweep-keep 0.5: every
    weight it had stays bit-equal, the weight-free depth options (readout, depth size, sweep sources) are stored, the regulariser's and the edge propagation's change, the depth losses (the risk among them)
    are logged; --depth-risk without depth planes is refused; export_checkpoint --gs-depth-size / --gs-readout store
    other depth options with the same weights."""
    geo = lib.ModelOptions(preset="tiny", heads=("lvsm", "4dgs"), gs_head="geo")
    lib.pretrain(tiny(tmp_path / "geo", steps=1, model=geo, lpips_start=100))
    src = tmp_path / "geo" / "ckpt.pt"
    refine = replace(geo, gs_refine=True, gs_edge=True, gs_readout="risk", gs_depth_size=16, gs_sweep_back=1, gs_sweep_keep=0.5)
    cfg = tiny(tmp_path / "refine", steps=3, model=refine, init_from=src, depth_only=True, depth_risk=1.0, lpips_start=0)
    lib.pretrain(cfg)
    assert fsm.load_checkpoint(src).config.gs_readout == "mode"
    said = capsys.readouterr().err
    for change in ("gs_readout mode -> risk", "gs_depth_size None -> 16", "gs_sweep_back 0 -> 1", "gs_sweep_keep 1.0 -> 0.5"):
        assert change in said  # weight-free changes are announced
    trained = fsm.load_checkpoint(tmp_path / "refine" / "ckpt.pt")
    c = trained.config
    assert (c.gs_readout, c.gs_depth_size, c.gs_sweep_back, c.gs_sweep_keep) == ("risk", 16, 1, 0.5)
    from train.export_checkpoint import ExportConfig
    from train.export_checkpoint import main as export

    assert tuple(f.name for f in fields(lib.DepthOptions)) == fsm.model.DEPTH_OPTIONS  # every option has its flag
    depth = lib.DepthOptions("mode", 0, gs_sweep_back=0)
    shipped = export(ExportConfig(tmp_path / "refine" / "ckpt.pt", tmp_path / "ship.pt", depth=depth, fp16=False))
    c = fsm.load_checkpoint(shipped).config
    assert (c.gs_readout, c.gs_depth_size, c.gs_sweep_back, c.gs_sweep_keep) == ("mode", None, 0, 0.5)  # unset: kept
    reread = fsm.load_checkpoint(shipped)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in reread.state_dict().items())
    with pytest.raises(ValueError, match="only the geo 4DGS head"):  # the LVSM-only smoke checkpoint
        export(ExportConfig(smoke_ckpt, tmp_path / "x.pt", depth=lib.DepthOptions(gs_depth_size=64)))
    before, after = weights(src), weights(tmp_path / "refine" / "ckpt.pt")
    added = {k.split(".")[1] for k in after if k not in before}
    assert added == {"refine", "edge"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    for zero_at_init in ("gaussian_head.refine.out.weight", "gaussian_head.edge.gate.weight"):
        assert after[zero_at_init].abs().sum() > 0, zero_at_init
    logged = [json.loads(s) for s in (tmp_path / "refine" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["depth_plane_ce"]) and r["depth_risk"] > 0 and "psnr" in r for r in logged if "loss" in r)
    with pytest.raises(ValueError, match="--depth-only"):
        lib.pretrain(tiny(tmp_path / "bad", steps=1, model=geo, depth_only=True))
    paper = replace(geo, gs_head="paper")  # no depth planes to weigh
    with pytest.raises(ValueError, match="--depth-risk"):
        lib.pretrain(tiny(tmp_path / "bad", steps=1, model=paper, depth_risk=1.0))
    from train.calibrate_sweep import CalibrateConfig
    from train.calibrate_sweep import main as calibrate

    with pytest.raises(lib.UsageError, match="depth modules"):
        calibrate(CalibrateConfig(tmp_path / "refine" / "ckpt.pt", tmp_path / "x.pt", scenes=1, size=32, num_input=4))


def test_init_from_with_another_plane_count_resamples_the_plane_weights(tmp_path):
    """--init-from a 32-plane geo checkpoint with --model.gs-planes 20 (lr 0): the run's weights are the
    source's with the plane weights resampled (fsm.geohead.resample_head_planes), every other one equal;
    the stored config has 20 planes and the model loads and decodes."""
    from fsm.geohead import resample_head_planes

    geo = lib.ModelOptions(preset="tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_refine=True)
    lib.pretrain(tiny(tmp_path / "geo", steps=1, model=geo, lpips_start=100))
    src = tmp_path / "geo" / "ckpt.pt"
    lib.pretrain(tiny(tmp_path / "fine", steps=1, model=replace(geo, gs_planes=20), init_from=src, lr=0.0, warmup=1, lpips_start=100))
    before, after = weights(src), weights(tmp_path / "fine" / "ckpt.pt")
    expected = resample_head_planes(before, "gaussian_head.", 20)
    assert after.keys() == expected.keys()
    assert all(torch.equal(after[k], expected[k]) for k in after)
    assert after["gaussian_head.out.bias"].shape[0] == before["gaussian_head.out.bias"].shape[0] - 12
    model = fsm.load_checkpoint(tmp_path / "fine" / "ckpt.pt")
    assert model.config.gs_planes == 20 and model.gaussian_head.planes.shape == (20,)
    assert model.metadata["init_from"]["planes"] == 32  # the record says where the weights came from


def test_validation_scenes_are_neither_held_out_nor_training_scenes():
    from fsm.data import TRAIN_SEEDS, VALIDATION_SCENES

    seeds = {s.seed for s in VALIDATION_SCENES}
    assert not seeds & {s.seed for s in HELDOUT_SCENES} and max(seeds) < TRAIN_SEEDS[0]
    assert len(seeds) == len(VALIDATION_SCENES)


@pytest.mark.parametrize("depth_size", [None, 16])
def test_calibrate_sweep_picks_the_temperature_whose_depth_is_best(tmp_path, depth_size):
    """Each candidate temperature's error equals a direct forward with that temperature set (the
    Gaussians' own distances, not the script's shortcut through the logits), also with the depth
    worked out at half size; the minimum is written; everything else in the file is kept, fp16 included."""
    from fsm.data import VALIDATION_SCENES, heldout_samples
    from train.calibrate_sweep import KEY, CalibrateConfig
    from train.calibrate_sweep import main as calibrate

    torch.manual_seed(0)
    geo = fsm.FSM.from_preset("tiny", heads=("lvsm", "4dgs"), gs_head="geo", gs_depth_size=depth_size).eval()
    with torch.no_grad():  # a CNN correction that competes with the sweep, so the temperature matters
        geo.gaussian_head.out.weight.normal_(0, 0.05)
    src, dst = tmp_path / "geo.pt", tmp_path / "calibrated.pt"
    fsm.save_checkpoint(src, geo, metadata={"steps": 7}, dtype=torch.float16)
    cfg = CalibrateConfig(src, dst, temperatures=(2.0, 200.0, 2000.0), scenes=1, size=32, num_input=4)
    record = calibrate(cfg)

    model = fsm.load_checkpoint(src)
    samples = [s for r in ("sparse", "continuous")
               for s in heldout_samples(r, num_input=4, num_target=1, height=32, width=32, scenes=VALIDATION_SCENES[:1])]  # fmt: skip
    direct = []
    for t in record["candidates"]:
        model.gaussian_head.log_temperature.data.fill_(math.log(t))
        err, n = 0.0, 0
        for s in samples:
            with torch.no_grad():
                d = model(s.inputs, s.targets[:1], heads=("depth",))["depth"]
            ground = torch.isfinite(s.input_depth)
            err += (d.log() - s.input_depth.log())[ground].abs().sum().item()
            n += int(ground.sum())
        direct.append(err / n)
    assert len(record["candidates"]) == 4  # the three asked for and the checkpoint's own (20)
    torch.testing.assert_close(torch.tensor(record["errors"]), torch.tensor(direct), rtol=1e-4, atol=1e-6)
    assert max(direct) - min(direct) > 1e-3  # the candidates do differ
    assert record["to"] == record["candidates"][direct.index(min(direct))]

    before, after = read_checkpoint(src), read_checkpoint(dst)
    assert after["state_dict"][KEY].dtype == torch.float16
    assert math.isclose(after["state_dict"][KEY].float().exp().item(), record["to"], rel_tol=2e-3)
    assert all(torch.equal(v, after["state_dict"][k]) for k, v in before["state_dict"].items() if k != KEY)
    assert after["metadata"]["steps"] == 7 and after["metadata"]["sweep_calibration"]["to"] == record["to"]

    paper = tmp_path / "paper.pt"
    fsm.save_checkpoint(paper, fsm.FSM.from_preset("tiny", heads=("4dgs",), gs_head="paper"))
    with pytest.raises(lib.UsageError, match="needs a geo 4DGS head"):
        calibrate(CalibrateConfig(paper, tmp_path / "x.pt", scenes=1, size=32, num_input=4))


@pytest.mark.parametrize(
    "module, main, config, argv",
    [
        ("train.lib", "pretrain", "TrainConfig", ["--init-from", "{missing}", "--out", "{tmp}/run"]),
        ("train.eval", "main", "EvalConfig", ["--ckpt", "{missing}", "--out", "{tmp}/eval"]),
        ("train.finetune", "main", "FinetuneConfig", ["--ckpt", "{missing}", "--clip", "{tmp}/clip.mp4", "--out", "{tmp}/ft"]),
        ("train.finetune", "main", "FinetuneConfig", ["--ckpt", "{ckpt}", "--clip", "{tmp}/missing.mp4", "--out", "{tmp}/ft"]),
        ("train.export_checkpoint", "main", "ExportConfig", ["{missing}", "{tmp}/out.pt"]),
        ("train.calibrate_sweep", "main", "CalibrateConfig", ["{missing}", "{tmp}/out.pt"]),
    ],
)
def test_scripts_refuse_an_unreadable_file_with_one_line_naming_it(tmp_path, monkeypatch, module, main, config, argv):
    """A missing checkpoint or clip is the user's mistake: the script's entry point (run_cli) exits with
    one line that names the file, not a traceback from deep in the loader."""
    import importlib

    ckpt = tmp_path / "tiny.pt"
    fsm.save_checkpoint(ckpt, fsm.FSM.from_preset("tiny"))
    args = [a.format(tmp=tmp_path, missing=tmp_path / "missing.pt", ckpt=ckpt) for a in argv]
    script = importlib.import_module(module)
    monkeypatch.setattr(sys, "argv", ["script.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        lib.run_cli(getattr(script, main), getattr(script, config))
    message = str(exit_info.value.code)
    missing = next(a for a in args if "missing" in a)
    assert message.startswith("error: ") and missing in message and "\n" not in message
    assert not any(p.name in ("run", "eval", "ft", "out.pt") for p in tmp_path.iterdir())

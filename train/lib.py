"""The training library: everything the scripts in train/ share, each script being a short main.

    entry point       run_cli (the user's mistake — a UsageError, an unreadable checkpoint or clip — exits with one line)
    option groups     DataConfig, ElasticOptions, ModelOptions, TrainConfig (tyro CLIs)
    devices and RNG   pick_device, dist_info, seeds, rng_state / set_rng_state, state_digest
    data              make_source, training_batch, heldout_batches
    optimisation      build_model, make_optimizer, learning_rate, photometric_loss, depth_supervision
    checkpoints       save_training_checkpoint / load_training_checkpoint (fsm.save_checkpoint + extra)
    evaluation        evaluate_pairs (held-out views streamed as the viewer streams them), reports
    the loop          pretrain(cfg): train/pretrain.py's loop, also run by train/ablate.py

Import it as `train.lib` (the scripts put the repository root on sys.path when run by path).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import imageio.v3 as iio
import numpy as np
import torch
import torch.distributed as dist
import tyro
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from fsm.cameras import ClipNormalization
from fsm.checkpoint import CheckpointError, checkpoint_configs, differences, read_checkpoint, save_checkpoint
from fsm.data.samples import HELDOUT_SCENES, REGIMES, ClipSource, Sample, SampleConfig, SampleSource, SyntheticSource, heldout_samples
from fsm.lacet import ElasticConfig
from fsm.metrics import lpips, psnr, ssim
from fsm.io.clip import ClipError
from fsm.geohead import frame_spacing, oracle_gaussians, plane_abs_rel_risk, plane_cross_entropy, resample_head_planes
from fsm.model import DEPTH_MODULES, DEPTH_OPTIONS, FSM, GS_RANGES, FSMConfig, StreamConfig, Views, render_gaussians
from fsm.planesweep import chunk_groups
from fsm.precision import DtypeChoice, resolve_dtype
from fsm.stream import StreamSession

# ----------------------------------------------------------------------------------------------
# Refusals and the scripts' entry point


class UsageError(ValueError):
    """A refusal of the user's flags or files, not a bug: the scripts (run_cli) print its message alone."""


def run_cli(main, config_type):
    """A script's entry point: main(its tyro-parsed config). A refusal of the user's flags or files
    (UsageError, or a checkpoint or clip that cannot be read: their messages name the file) exits with
    one line, no traceback."""
    try:
        return main(tyro.cli(config_type))
    except (UsageError, CheckpointError, ClipError) as e:
        raise SystemExit(f"error: {e}") from None


# ----------------------------------------------------------------------------------------------
# CLI option groups (tyro): fsm's own config dataclasses, plus what only training needs


@dataclass
class DataConfig(SampleConfig):
    """Training samples: fsm.data.SampleConfig (what a sample looks like: --data.num-input,
    --data.num-target, --data.window, --data.height, --data.width, --data.novel-share, ...)
    plus where samples come from."""

    source: Literal["synthetic", "clips"] = "synthetic"
    """synthetic: the procedural 4D engine (fsm.data); clips: real posed clips listed in --data.clips."""
    clips: tuple[Path, ...] = ()
    """Clips or folders of clips (anything fsm.io.load_clip reads) for --data.source clips."""


@dataclass(frozen=True)
class ElasticOptions:
    """Fast-weight consolidation (paper Eq. 5-6): fsm.lacet.ElasticConfig's fields (--elastic.lam,
    --elastic.estimator, ...; defaults are the paper's) or --elastic.plain-lact."""

    plain_lact: bool = False
    """Turn consolidation off (lambda = 0): exactly LaCT."""
    settings: Annotated[ElasticConfig, tyro.conf.arg(name="")] = ElasticConfig()

    def to_config(self) -> ElasticConfig:
        return ElasticConfig.plain_lact() if self.plain_lact else self.settings


@dataclass(frozen=True)
class DepthOptions:
    """The geo 4DGS head's weight-free depth options, to read a checkpoint's weights another way
    (train/eval.py) or to store that way (train/export_checkpoint.py); unset = the checkpoint's."""

    gs_readout: Literal["mode", "risk"] | None = None
    """Read depth around this plane (mode: the most likely; risk: the one minimising the expected
    relative error; fsm.geohead.plane_readout)."""
    gs_depth_size: int | None = None
    """Work out depth on the views downsampled to at most this short side, in pixels (0 = at full
    resolution; fsm.geohead.depth_size)."""
    gs_sweep_back: int | None = None
    """Plane-sweep sources: also every frame of this many chunks before the view's own (fsm.planesweep)."""
    gs_sweep_keep: float | None = None
    """Plane-sweep sources: pool this fraction of them, those that agree best at each pixel and plane."""

    def apply(self, model: FSM, path: Path) -> None:
        options = asdict(self)
        if all(v is None for v in options.values()):
            return
        try:
            model.set_depth_options(**options)
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None


@dataclass
class ModelOptions:
    preset: Literal["tiny", "small", "base"] = "small"
    """Architecture preset (fsm.model.PRESETS): tiny for tests, small ships, base is the paper's."""
    heads: tuple[Literal["lvsm", "4dgs"], ...] = ("lvsm",)
    """Decoding heads to build and train: lvsm (direct RGB), 4dgs (4D Gaussians, rasterized); both = summed losses."""
    frames_per_chunk: int | None = None
    """Input frames per fast-weight update (default: the preset's; 8 frames = 2048 tokens at 128^2)."""
    gs_head: Literal["paper", "geo"] = "geo"
    """4DGS head design: geo (input colour + residual, plane-sweep depth, renders from the frames
    nearest each time; fsm/geohead.py) or paper (all 20 numbers regressed, the baseline)."""
    gs_sweep: bool = True
    """Geo head: feed it the plane-sweep costs (--model.no-gs-sweep: the ablation without them)."""
    gs_refine: bool = False
    """Geo head: add a 3D U-Net over the cost volume that corrects the depth-plane logits
    (fsm.geohead.CostRegularizer; zero at init, so --init-from a checkpoint without it starts there)."""
    gs_edge: bool = False
    """Geo head: re-mix each pixel's depth-plane logits from its 5x5 neighbours by a learned colour
    affinity, after the regulariser (fsm.geohead.EdgePropagation; gated by zero at init, like gs-refine)."""
    gs_depth_size: int | None = None
    """Geo head: work out depth (the sweep, the head's CNN, the depth modules) on the views downsampled
    by the smallest integer factor that brings their short side to at most this many pixels, then
    upsample its plane logits (fsm.geohead.depth_size); unset = at full resolution. A weight-free
    choice: --init-from may change it."""
    gs_sweep_back: int = FSMConfig.gs_sweep_back
    """Geo head: the plane sweep's sources are the frames of the view's own chunk and of this many chunks
    before it (seen already, so streaming stays exact; fsm.planesweep). Weight-free: --init-from may change it."""
    gs_sweep_keep: float = FSMConfig.gs_sweep_keep
    """Geo head: at each pixel and depth plane the sweep pools this fraction of its sources, those that
    agree best (1 = all; fsm.planesweep). Weight-free: --init-from may change it."""
    gs_planes: int = FSMConfig.gs_planes
    """Geo head: depth planes of the plane sweep, log-spaced over its depth range. --init-from a checkpoint
    with another count resamples its plane weights in log depth (fsm.geohead.resample_head_planes)."""
    gs_readout: Literal["mode", "risk"] = "mode"
    """Geo head: read each pixel's depth around its most likely plane (mode, the plane sweep's winner
    at init) or around the plane that minimises the expected relative depth error (risk: for a head
    whose depth is trained; fsm.geohead.plane_readout). Stored in the checkpoint."""


@dataclass
class TrainConfig:
    out: Path = Path("runs/pretrain")
    """Output folder (checkpoint, logs)."""
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=lambda: DataConfig(num_input=32, num_target=32, window=128))
    elastic: ElasticOptions = field(default_factory=ElasticOptions)
    batch_size: int = 4
    """Samples per step on each process."""
    steps: int = 20000
    """Total optimizer steps (the schedule's length)."""
    max_minutes: float | None = None
    """Stop cleanly (checkpoint included) after this much wall-clock time in this invocation."""
    lr: float = 1e-4
    """Peak learning rate."""
    warmup: int = 2500
    """Linear warmup steps; cosine decay to zero after."""
    weight_decay: float = 0.05
    """AdamW weight decay, on parameters with >= 2 dimensions only."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    skip_grad_norm: float = 4.0
    """After warmup, skip steps whose gradient norm (before clipping) exceeds this. The threshold is absolute:
    heavier loss weights raise every norm (the run warns when over 10% of its steps were skipped)."""
    lpips_weight: float = 0.5
    """Weight mu of the LPIPS term (AlexNet LPIPS, shipped weights)."""
    lpips_start: int = 2500
    """Step from which the LPIPS term is on (L2 only before)."""
    depth_weight: float = 0.1
    """Weight of the 4DGS head's depth losses where samples carry true depth (the synthetic engine;
    0 = off): mean |log depth - log true depth| over input pixels (sky at the far bound) plus, for
    the geo head, the cross-entropy of its depth planes (depth_supervision)."""
    depth_risk: float = 0.0
    """Geo head: weight, inside the depth losses, of the relative depth error its plane distribution
    expects on surface pixels (fsm.geohead.plane_abs_rel_risk): charges the far planes' mass on
    surface pixels, what the mean depth abs-rel punishes. 0 = off."""
    depth_only: bool = False
    """Train only the geo head's depth modules (--model.gs-refine, --model.gs-edge) on the depth losses
    alone, everything else frozen and no render loss: the cheap stage that adds them to trained
    weights (--init-from). Needs samples with true depth (the synthetic engine)."""
    scale_jitter: float = 1.0
    """Rescale each synthetic sample's world (camera positions and depth) by a log-uniform factor
    in [1/x, x] (train.lib.rescale_world), so the 4DGS depth must come from parallax rather than
    a typical scale; 1 = off. Only where samples carry true depth."""
    dtype: DtypeChoice = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~30% slower)."""
    compile: bool = False
    """torch.compile the model."""
    log_every: int = 10
    """Steps between metrics.jsonl lines."""
    eval_every: int = 1000
    """Steps between held-out evaluations (0 = only at the end)."""
    eval_scenes: int = 4
    """Held-out synthetic scenes per regime in each evaluation (0 = no evaluation)."""
    ckpt_every: int = 500
    """Steps between checkpoints (one is always written at exit)."""
    resume: Path | None = None
    """Continue from this training checkpoint (same flags otherwise); exact continuation."""
    init_from: Path | None = None
    """Start from the weights of this checkpoint (e.g. a shipped one: same architecture, except that
    --model.gs-refine / --model.gs-edge may add depth modules and --model.gs-readout / --model.gs-planes
    may differ) with a fresh optimizer and schedule: a warm restart when the training checkpoint is gone."""
    seed: int = 0
    """Seeds the weights and every data stream (process r draws its samples from seed, r, step)."""
    device: str = "auto"
    """auto | cpu | cuda (under torchrun each process uses cuda:LOCAL_RANK)."""


# ----------------------------------------------------------------------------------------------
# Devices and seeds


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. run seed, rank, step): independent streams, no state."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """All global RNG states as tensors (so the checkpoint stays weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([version], dtype=torch.int64),
        "python_gauss": torch.tensor(float("nan") if py_gauss is None else py_gauss, dtype=torch.float64),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    pos, has_gauss = state["numpy_meta"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, state["numpy_gauss"].item()))
    gauss = state["python_gauss"].item()
    random.setstate((int(state["python_meta"][0]), tuple(state["python"].tolist()), None if gauss != gauss else gauss))


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the exact bytes of every tensor, in key order (bit-exact weight comparison)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def views_to(views: Views, device: torch.device) -> Views:
    move = lambda x: None if x is None else x.to(device, non_blocking=True)
    return Views(move(views.c2w), move(views.fxfycxcy), move(views.times), move(views.images))


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


# ----------------------------------------------------------------------------------------------
# Data (the one place the scripts touch fsm.data)


def make_source(data: DataConfig, device: torch.device | str = "cpu") -> SampleSource:
    """The training sample source the flags describe (synthetic renders on `device`)."""
    if data.source == "synthetic":
        return SyntheticSource(data, device=device)
    if not data.clips:
        raise UsageError("--data.source clips needs --data.clips PATH [PATH ...] (clips or folders of clips)")
    return ClipSource(list(data.clips), replace(data, novel_share=0.0), device=device)


def training_batch(source: SampleSource, batch: int, seed: int, scale_jitter: float = 1.0) -> Sample:
    """One batch of samples (inputs, targets, true input depth where known), a pure function of
    `seed` (no hidden data-loader state); each sample's world rescaled by a log-uniform factor in
    [1/scale_jitter, scale_jitter] (rescale_world; 1 = as the source made it)."""
    g = torch.Generator().manual_seed(seed)
    sample = source.sample(batch, g)
    if scale_jitter > 1.0:
        factor = torch.exp((torch.rand(batch, generator=g, dtype=torch.float64) * 2 - 1) * math.log(scale_jitter))
        sample = rescale_world(sample, factor)
    return sample


def rescale_world(sample: Sample, factor: torch.Tensor) -> Sample:
    """The same scenes `factor` (B,) times larger about the model frame's origin: camera positions
    and depths scale; images, intrinsics, rotations and times do not (every pixel sees the same
    thing). Why: the model frame's scale comes from the camera path (normalize_poses: a short
    path or a pan makes the scene large), so the same scene reaches the model at any scale — a
    depth head must read scale from the views' parallax (the plane sweep), not learn a typical
    depth. Measured before this existed: the geo head predicted a median depth of ~6 model units
    whether the scene was scaled by 0.25, 1 or 4. (sample.normalization, the world -> model map
    the source used, is kept as it was: training reads only the views and the depth.)"""
    def views(v: Views) -> Views:
        c2w = v.c2w.clone()
        c2w[..., :3, 3] *= factor.to(c2w.dtype).view(-1, *[1] * (c2w.dim() - 3), 1)
        return replace(v, c2w=c2w)

    depth = sample.input_depth
    if depth is not None:
        depth = depth * factor.to(depth.dtype).view(-1, 1, 1, 1)
    return replace(sample, inputs=views(sample.inputs), targets=views(sample.targets), input_depth=depth)


def heldout_batches(data: SampleConfig, regime: str, scenes: int) -> list[Sample]:
    """The first `scenes` fixed held-out synthetic scenes (batch of one each) in a regime, with
    their inputs' true depth. The sparse and novel windows are fsm.data's default (4x the views),
    the continuous one is contiguous."""
    if not 1 <= scenes <= len(HELDOUT_SCENES):
        raise UsageError(f"held-out scenes must be in 1..{len(HELDOUT_SCENES)}, got {scenes}")
    return list(heldout_samples(regime, num_input=data.num_input, num_target=data.num_target, height=data.height,
                                width=data.width, scenes=HELDOUT_SCENES[:scenes]))  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Model, optimisation, losses


def build_model(cfg: TrainConfig) -> FSM:
    """The preset's architecture with --model.heads; its run settings with --model.frames-per-chunk
    and --elastic.* (stored in the checkpoint as the defaults for streaming these weights)."""
    try:
        model = FSM.from_preset(cfg.model.preset, heads=tuple(cfg.model.heads), gs_head=cfg.model.gs_head, gs_sweep=cfg.model.gs_sweep,
                                gs_refine=cfg.model.gs_refine, gs_edge=cfg.model.gs_edge, gs_depth_size=cfg.model.gs_depth_size,
                                gs_planes=cfg.model.gs_planes, gs_readout=cfg.model.gs_readout, gs_sweep_back=cfg.model.gs_sweep_back,
                                gs_sweep_keep=cfg.model.gs_sweep_keep)
    except ValueError as e:  # FSMConfig's own checks: a flag's value, not a bug
        raise UsageError(f"--model: {e}") from None
    model.stream = model.stream_config(frames_per_chunk=cfg.model.frames_per_chunk, elastic=cfg.elastic.to_config())
    return model


def make_optimizer(model: FSM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95); weight decay on matrices (>= 2-D), none on biases, norms, vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine to 0 at step `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def checkpoint_blocks(model: FSM) -> None:
    """Activation checkpointing per LaCET block: wrap each block's ingest/query in place."""
    for blk in model.blocks:
        for name in ("ingest", "query"):
            fn = getattr(blk, name)
            setattr(blk, name, lambda *args, _fn=fn: checkpoint(_fn, *args, use_reentrant=False))


def photometric_loss(preds: dict[str, torch.Tensor], truth: torch.Tensor, lpips_weight: float) -> tuple[torch.Tensor, dict]:
    """Sum over heads of L2 + mu * LPIPS on (B, V, 3, H, W) renders (paper Eq. 8), in fp32.

    parts: per-head figures as "<head>_mse" etc., and the first head's as plain "mse", "psnr"."""
    total, parts = 0.0, {}
    for i, (head, pred) in enumerate(preds.items()):
        loss, head_parts = image_loss(pred, truth, lpips_weight)
        total = total + loss
        if len(preds) > 1:
            parts.update({f"{head}_{k}": v for k, v in head_parts.items()})
        if i == 0:
            parts.update(head_parts)
    return total, parts


def depth_loss(depth: torch.Tensor, truth: torch.Tensor, far: float) -> torch.Tensor:
    """Mean |log depth - log true depth| over pixels (B, V, H, W); the sky (inf) counts at `far`.

    Log depth because the depth of interest spans 0.3 to thousands of model units and the metric
    (abs-rel) is relative: an error of 10% costs the same near and far."""
    truth = truth.float().clamp(max=far)
    return (depth.float().clamp(min=1e-6).log() - truth.log()).abs().mean()


def depth_supervision(pred: dict, truth: torch.Tensor, model: FSM, risk_weight: float) -> tuple[torch.Tensor, dict]:
    """The 4DGS head's depth losses from the forward's "depth" (and, geo head, "depth_logits"):
    log-L1 on the depth plus the planes' cross-entropy against the true depth (fsm.geohead), plus
    risk_weight x the planes' expected abs-rel on surface pixels (where > 0). The log-L1 alone only
    refines around the plane the head already picks (its readout is local); the cross-entropy moves
    probability to the right plane from anywhere; the risk moves it off the far planes first."""
    log_l1 = depth_loss(pred["depth"], truth, model.config.gs_range[1])
    parts = {"depth_logl1": log_l1.item()}
    if "depth_logits" not in pred:
        return log_l1, parts
    ce = plane_cross_entropy(pred["depth_logits"], model.gaussian_head.log_planes, truth)
    parts["depth_plane_ce"] = ce.item()
    loss = log_l1 + ce
    if risk_weight > 0:
        risk = plane_abs_rel_risk(pred["depth_logits"], model.gaussian_head.log_planes, truth)
        parts["depth_risk"] = risk.item()
        loss = loss + risk_weight * risk
    return loss, parts


def image_loss(pred: torch.Tensor, truth: torch.Tensor, lpips_weight: float) -> tuple[torch.Tensor, dict]:
    """L2 + mu * LPIPS for one head's renders."""
    pred = pred.float()
    mse = (pred - truth).square().mean()
    loss, parts = mse, {"mse": mse.item(), "psnr": -10 * math.log10(max(mse.item(), 1e-10))}
    if lpips_weight > 0:
        lp = lpips(pred.flatten(0, 1), truth.flatten(0, 1)).mean()
        loss = loss + lpips_weight * lp
        parts["lpips"] = lp.item()
    return loss, parts


# ----------------------------------------------------------------------------------------------
# The training checkpoint: fsm.checkpoint's format (the viewer opens it) plus what a resume needs


def save_training_checkpoint(path: Path, model: FSM, optimizer, step: int, cfg: TrainConfig, metadata: dict) -> None:
    """fsm.save_checkpoint with the optimizer, every RNG state, the step and the flags as extra entries."""
    extra = {"optimizer": optimizer.state_dict(), "rng": rng_state(), "step": step, "train_config": json.dumps(asdict(cfg), default=str)}
    save_checkpoint(path, model, metadata=metadata, extra=extra)


def load_training_checkpoint(path: Path, model: FSM, optimizer) -> tuple[int, dict]:
    """Restore weights, optimizer and RNG states; returns (step, metadata)."""
    ckpt = read_checkpoint(path)
    if "optimizer" not in ckpt:
        raise UsageError(f"{path}: a model-only checkpoint (no optimizer state); use train/finetune.py to start from it")
    config, stream = checkpoint_configs(path, ckpt)
    differ = differences(config, model.config) + differences(stream, model.stream)  # an exact resume needs both
    if differ:
        raise UsageError(f"{path}: the model flags differ from the checkpoint's — " + "; ".join(differ))
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"]), ckpt.get("metadata", {})


def init_weights(path: Path, model: FSM) -> dict:
    """Load the weights of any checkpoint with this architecture (fp16 ones are restored to fp32);
    returns its metadata under "init_from" (what the run started from)."""
    ckpt = read_checkpoint(path)
    config, _ = checkpoint_configs(path, ckpt)
    # the differences allowed: depth modules added (they start as the identity: the model stays as it was),
    # the depth readout and size (no weights) and the geo head's plane count (its plane weights are resampled)
    added = {flag: prefix for flag, prefix in DEPTH_MODULES.items() if getattr(model.config, flag) and not getattr(config, flag)}
    allowed = dict.fromkeys(added, True) | {name: getattr(model.config, name) for name in DEPTH_OPTIONS}
    if config.gs_head == "geo":
        allowed["gs_planes"] = model.config.gs_planes
    differ = differences(replace(config, **allowed), model.config)
    if differ:
        raise UsageError(f"{path}: the architecture differs from --model's — " + "; ".join(differ))
    for name in DEPTH_OPTIONS:  # allowed to change: say so, it is easy to miss
        if getattr(config, name) != allowed[name]:
            print(f"{path}: {name} {getattr(config, name)} -> {allowed[name]} (--model.{name.replace('_', '-')})", file=sys.stderr)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    resampled = config.gs_planes != model.config.gs_planes and "4dgs" in config.heads and config.gs_head == "geo"
    if resampled:
        state = resample_head_planes(state, "gaussian_head.", model.config.gs_planes)
        print(f"{path}: depth planes resampled {config.gs_planes} -> {model.config.gs_planes} (--model.gs-planes)", file=sys.stderr)
    missing, unexpected = model.load_state_dict(state, strict=not added)
    if unexpected or any(not k.startswith(tuple(added.values())) for k in missing):
        raise UsageError(f"{path}: weights do not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    meta = ckpt.get("metadata", {})
    init = {"path": str(path), "steps": meta.get("steps"), "cpu_hours": meta.get("cpu_hours")}
    return {"init_from": init | ({"planes": config.gs_planes} if resampled else {})}


# ----------------------------------------------------------------------------------------------
# Held-out evaluation: views streamed through a StreamSession, the way the viewer streams them

RENDER_GROUP = 8  # target views rendered per call (bounds activation memory)


@torch.no_grad()
def stream_and_render(
    model: FSM, inputs: Views, targets: Views, clip_norm: ClipNormalization | None = None, stream: StreamConfig | None = None, head: str = "lvsm"
) -> tuple[torch.Tensor, int]:
    """Stream one clip's inputs (batch of one) through a StreamSession, render its targets.

    inputs/targets hold clip-frame cameras and times; clip_norm maps them into the model's frame
    (default: identity, they are already normalised with times in [-1, 1]). stream: the run
    settings (default: the model's). Returns (renders (Vt,3,H,W) on the CPU, chunks ingested).
    """
    session = StreamSession(model, clip_norm, stream)
    session.feed(inputs.images[0], inputs.c2w[0], inputs.fxfycxcy[0], inputs.times[0].double())
    session.flush()
    H, W = inputs.images.shape[-2:]
    renders = []
    for s in range(0, targets.num_views, RENDER_GROUP):
        g = slice(s, s + RENDER_GROUP)
        out = session.render(targets.c2w[0, g], targets.fxfycxcy[0, g], targets.times[0, g].double(), H, W, head=head)
        renders.append(out.float().cpu())
    return torch.cat(renders), len(session.history)


def nearest_input(inputs: Views, targets: Views) -> torch.Tensor:
    """Baseline: each target answered by the input frame nearest in time. -> (Vt,3,H,W)."""
    gap = (targets.times[0][:, None] - inputs.times[0][None, :]).abs()  # (Vt, Vi)
    return inputs.images[0][gap.argmin(1)].float().cpu()


def image_metrics(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, list[float]]:
    """Per-image PSNR / SSIM / LPIPS of (N,3,H,W) images in [0,1]."""
    pred, truth = pred.clamp(0, 1).float(), truth.float().to(pred.device)
    return {"psnr": psnr(pred, truth).tolist(), "ssim": ssim(pred, truth).tolist(), "lpips": lpips(pred, truth).tolist()}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def evaluate_pairs(
    model: FSM,
    pairs: list[tuple],
    frames_per_chunk: int | None = None,
    heads: tuple[str, ...] | None = None,
    plain_lact: bool = False,
) -> tuple[list[dict], dict[str, list[torch.Tensor]]]:
    """Metrics of every head and of the nearest-input baseline over (inputs, targets, clip_norm[,
    true input depth]). plain_lact: also each head with the same weights streamed as plain LaCT
    (lambda = 0). Where the true depth is given and the model has a 4DGS head: that head's depth
    error on the inputs (abs_rel: mean |d - d*| / d* over non-sky pixels, and its median) and the
    oracle — the geo head's rules (input colours, pixel footprints, nearest frames) at the true depth.

    Returns (one row per method: name, psnr, ssim, lpips means, chunks, views, scenes[, abs_rel,
    abs_rel_median]; images per method for strips: renders of the first pair, plus "truth").
    """
    heads = heads or model.config.heads
    stream = model.stream_config(frames_per_chunk=frames_per_chunk)
    lact = model.stream_config(stream, elastic=ElasticConfig.plain_lact())
    with_depth = "4dgs" in heads and all(len(p) > 3 and p[3] is not None for p in pairs)
    methods = [*heads, *(f"{h} (plain LaCT)" for h in heads if plain_lact), *([ORACLE] if with_depth else []), "nearest-input"]
    per = {name: {"psnr": [], "ssim": [], "lpips": []} for name in methods}
    depth_err: list[torch.Tensor] = []
    chunks: set[int] = set()
    shown: dict[str, torch.Tensor] = {}
    for k, (inputs, targets, clip_norm, *rest) in enumerate(pairs):
        truth = targets.images[0].float().cpu()
        preds = {"nearest-input": nearest_input(inputs, targets)}
        for head in heads:
            preds[head], n = stream_and_render(model, inputs, targets, clip_norm, stream, head)
            chunks.add(n)
            if plain_lact:
                preds[f"{head} (plain LaCT)"], _ = stream_and_render(model, inputs, targets, clip_norm, lact, head)
        if with_depth:
            preds[ORACLE] = oracle_render(model, inputs, targets, rest[0], stream.frames_per_chunk)
            depth_err.append(input_depth_error(model, inputs, targets, rest[0], stream))
        for name, pred in preds.items():
            for m, v in image_metrics(pred, truth).items():
                per[name][m] += v
        if k == 0:
            shown = {**preds, "truth": truth}
    rows = [
        {
            "method": name,
            **{m: _mean(v) for m, v in values.items()},
            "chunks": sorted(chunks) if name in heads or "plain LaCT" in name else [],
            "views": len(values["psnr"]),
            "scenes": len(pairs),
        }
        for name, values in per.items()
    ]
    if depth_err:
        err = torch.cat(depth_err)
        rows[heads.index("4dgs")].update(abs_rel=err.mean().item(), abs_rel_median=err.median().item())
        oracle_row = next(r for r in rows if r["method"] == ORACLE)
        oracle_row.update(abs_rel=0.0, abs_rel_median=0.0)
    return rows, shown


ORACLE = "4dgs oracle (true depth)"


@torch.no_grad()
def oracle_render(model: FSM, inputs: Views, targets: Views, depth: torch.Tensor, frames_per_chunk: int) -> torch.Tensor:
    """The geo head's rules with the true depth and no learned residual: what a perfect depth
    gives (its own ceiling; model-independent but for the depth range). -> (Vt,3,H,W)."""
    H, W = inputs.images.shape[-2:]
    gap = frame_spacing(inputs.times, chunk_groups(inputs.num_views, frames_per_chunk))
    g = oracle_gaussians(depth.to(inputs.images.device), inputs.images, inputs.c2w, inputs.fxfycxcy, inputs.times, gap,
                         far=GS_RANGES["geo"][1])  # fmt: skip
    out = render_gaussians(g, targets, H, W, inputs.times, front=model.config.gs_front, fill=model.config.gs_fill)
    return out[0].clamp(0, 1).float().cpu()


@torch.no_grad()
def input_depth_error(model: FSM, inputs: Views, targets: Views, depth: torch.Tensor, stream: StreamConfig) -> torch.Tensor:
    """Relative depth error |d - d*| / d* of the 4DGS head's Gaussians on every non-sky input pixel
    (the batched forward, which equals the stream (tests/test_geohead.py))."""
    pred = model(inputs, targets[:1], stream.frames_per_chunk, stream.elastic, heads=("depth",))["depth"].float().cpu()
    truth = depth.float().cpu()
    sky = ~torch.isfinite(truth)
    return ((pred - truth).abs() / truth)[~sky]


def synthetic_pairs(data: SampleConfig, regime: str, scenes: int) -> list[tuple[Views, Views, ClipNormalization, torch.Tensor]]:
    """Held-out scenes: their views are already in the model's frame (identity ClipNormalization),
    with the inputs' true depth (1, V_in, H, W) for the oracle and the depth error."""
    return [(s.inputs, s.targets, ClipNormalization(), s.input_depth) for s in heldout_batches(data, regime, scenes)]


def split_clip(clip, holdout_every: int) -> tuple[Views, Views, ClipNormalization]:
    """(inputs, every k-th frame as targets, the clip's normalisation) in the clip's own frame
    and seconds. The normalisation is the viewer's: derived from the whole clip, targets included.
    """
    held = holdout_mask(len(clip), holdout_every)
    times = clip.times.to(torch.float64)
    views = lambda m: Views(clip.c2w[m][None], clip.fxfycxcy[m][None], times[m][None], clip.frames[m][None])
    return views(~held), views(held), ClipNormalization.for_clip(clip.c2w, times)


def holdout_mask(n: int, every: int) -> torch.Tensor:
    """Boolean (n,): frames k//2, k//2 + k, ... are held out (first and last frames stay inputs)."""
    if every < 2:
        raise UsageError(f"--holdout-every must be >= 2, got {every}")
    held = torch.arange(n) % every == every // 2
    held[-1] = False
    if held.all() or not held.any():
        raise UsageError(f"a clip of {n} frames has no inputs or no targets with --holdout-every {every}")
    return held


def write_strips(folder: Path, name: str, shown: dict[str, torch.Tensor], count: int, heads) -> list[str]:
    """PNG per target: [head renders | oracle, if any | nearest input | ground truth] side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    order = [*heads, *([ORACLE] if ORACLE in shown else []), "nearest-input", "truth"]
    paths = []
    for v in range(min(count, shown["truth"].shape[0])):
        row = torch.cat([shown[k][v] for k in order], dim=-1)  # (3, H, len(order) * W)
        path = folder / f"{name}_{v}.png"
        iio.imwrite(path, (row.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        paths.append(str(path))
    return paths


def markdown_table(rows: list[dict], first: tuple[str, ...] = ("set", "method")) -> str:
    cols = [*first, "psnr", "ssim", "lpips", *(["abs_rel", "abs_rel_median"] if any("abs_rel" in r for r in rows) else []), "chunks", "views"]
    fmt = lambda k, v: f"{v:.3f}" if k in ("psnr",) else f"{v:.4f}" if isinstance(v, float) else ", ".join(map(str, v)) if isinstance(v, list) else str(v)
    lines = ["| " + " | ".join(c.upper() if c in ("psnr", "ssim", "lpips") else c for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


@torch.no_grad()
def heldout_eval(model: FSM, cfg: TrainConfig) -> dict:
    """Mean PSNR/SSIM/LPIPS of every head on the held-out synthetic scenes, per regime."""
    was_training = model.training
    model.eval()
    out = {}
    data = replace(cfg.data, num_target=min(cfg.data.num_target, 8))
    for regime in REGIMES:
        rows, _ = evaluate_pairs(model, synthetic_pairs(data, regime, cfg.eval_scenes))
        out[regime] = {r["method"]: {m: r[m] for m in ("psnr", "ssim", "lpips", "abs_rel") if m in r} for r in rows}
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# The pretraining loop (train/pretrain.py; train/ablate.py runs it once per variant)


class StopFlag:
    """Set by SIGTERM / SIGINT while active: finish the current step, checkpoint, exit.
    A second signal aborts at once (KeyboardInterrupt); the last periodic checkpoint stays."""

    def __enter__(self):
        self.set = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting without a final checkpoint")
        self.set = True


SKIPPED_SHARE_WARNING = 0.1  # pretrain warns when more than this share of a run's steps were skipped


def pretrain(cfg: TrainConfig) -> dict:
    """Train per `cfg` (train/pretrain.py's docstring has the recipe); returns the run summary."""
    rank, world, local_rank = dist_info()
    distributed = world > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = pick_device(cfg.device)
    main_process = rank == 0
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise UsageError(f"--steps and --batch-size must be >= 1, got {cfg.steps}, {cfg.batch_size}")

    # the geo head's depth planes trained on true depth: what --depth-only and --depth-risk both need
    geo_depth = cfg.model.gs_head == "geo" and "4dgs" in cfg.model.heads and cfg.data.source == "synthetic" and cfg.depth_weight > 0
    if cfg.depth_only and not (geo_depth and any(getattr(cfg.model, flag) for flag in DEPTH_MODULES)):
        raise UsageError("--depth-only trains the depth modules on true depth: it needs --model.gs-refine or --model.gs-edge "
                         "with the geo 4DGS head (--model.heads including 4dgs), synthetic data and --depth-weight > 0")
    if cfg.depth_risk < 0 or (cfg.depth_risk > 0 and not geo_depth):
        raise UsageError(f"--depth-risk {cfg.depth_risk}: it weighs the geo 4DGS head's depth planes against true depth, so it "
                         "must be >= 0 and, when > 0, needs --model.gs-head geo, --model.heads including 4dgs, synthetic data "
                         "and --depth-weight > 0")
    seed_everything(cfg.seed)  # identical initial weights on every process
    model = build_model(cfg).to(device)
    if cfg.depth_only:  # before the optimizer is built: it takes the parameters that require grad
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(tuple(DEPTH_MODULES.values())))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, metadata = 0, {}
    if cfg.resume is not None:
        step, metadata = load_training_checkpoint(cfg.resume, model, optimizer)
    elif cfg.init_from is not None:
        metadata = init_weights(cfg.init_from, model)
    model.train()

    if cfg.activation_checkpointing:
        checkpoint_blocks(model)
    forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if distributed else model
    if cfg.compile:
        forward = torch.compile(forward)
    model.compute_dtype = resolve_dtype(cfg.dtype, device)

    out = cfg.out
    log_file = tb = None
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
        log_file = open(out / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(out / "tb")
        except ImportError:  # tensorboard is optional
            pass

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    tb.add_scalar(k, v, record["step"])

    def save(current_step: int) -> None:
        if main_process:
            meta = {**metadata, "steps": current_step, "seed": cfg.seed, "data": asdict(cfg.data) | {"clips": [str(c) for c in cfg.data.clips]}, "world_size": world, "train_mse_ema": loss_ema}
            save_training_checkpoint(out / "ckpt.pt", model, optimizer, current_step, cfg, meta)

    source = make_source(cfg.data, device)
    # the 4DGS head learns depth from the engine's exact depth (clips have none: photometric only)
    wants_depth = cfg.depth_weight > 0 and "4dgs" in model.config.heads and cfg.data.source == "synthetic"
    tokens_per_step = cfg.batch_size * world * (cfg.data.num_input + cfg.data.num_target) * (cfg.data.height // model.config.patch) * (cfg.data.width // model.config.patch)
    started = time.perf_counter()
    loss_ema = metadata.get("train_mse_ema")  # EMA (alpha 0.1) of the training L2 loss, as the paper's Table 1
    first_batch_digest = None
    skipped, first_step = 0, step
    bar = tqdm(total=cfg.steps, initial=step, disable=not main_process, dynamic_ncols=True)
    with StopFlag() as stop:
        while step < cfg.steps:
            over_time = cfg.max_minutes is not None and time.perf_counter() - started > cfg.max_minutes * 60
            want_stop = torch.tensor(float(stop.set or over_time))
            if distributed:  # every process must stop at the same step
                want_stop = want_stop.to(device)
                dist.all_reduce(want_stop, op=dist.ReduceOp.MAX)
            if want_stop.item():
                break

            t0 = time.perf_counter()
            sample = training_batch(source, cfg.batch_size, sample_seed(cfg.seed, rank, step), cfg.scale_jitter if wants_depth else 1.0)
            if first_batch_digest is None:
                first_batch_digest = state_digest({"images": sample.inputs.images})
            inputs, targets = views_to(sample.inputs, device), views_to(sample.targets, device)
            depth_truth = sample.input_depth if wants_depth else None
            lr = learning_rate(step, cfg.lr, cfg.warmup, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            heads = ("depth",) if cfg.depth_only else (*model.config.heads, "depth") if depth_truth is not None else None
            pred = forward(inputs, targets, heads=heads)  # {head: (B, Vt, 3, H, W)}, + "depth" (B, Vi, H, W)
            depth = {k: pred.pop(k) for k in ("depth", "depth_logits") if k in pred}
            if cfg.depth_only:  # the render is measured (logged), not trained
                with torch.no_grad():
                    _, parts = photometric_loss(pred, targets.images, 0.0)
                loss = torch.zeros((), device=device)
            else:
                loss, parts = photometric_loss(pred, targets.images, cfg.lpips_weight if step >= cfg.lpips_start else 0.0)
            if depth:
                d_loss, d_parts = depth_supervision(depth, depth_truth.to(device), model, cfg.depth_risk)
                loss = loss + cfg.depth_weight * d_loss
                parts |= d_parts
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            skip = not math.isfinite(grad_norm) or (step >= cfg.warmup and grad_norm > cfg.skip_grad_norm)
            if not skip:
                optimizer.step()
            skipped += skip
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_time = time.perf_counter() - t0
            step += 1

            loss_ema = parts["mse"] if loss_ema is None else 0.9 * loss_ema + 0.1 * parts["mse"]
            record = {"step": step, "loss": loss.item(), **parts, "mse_ema": loss_ema, "grad_norm": grad_norm, "lr": lr,
                      "skipped": int(skip), "step_s": step_time, "tokens_per_s": tokens_per_step / step_time}
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{parts['psnr']:.2f}", tok_s=f"{record['tokens_per_s']:.0f}", skipped=skipped)
            if step % cfg.log_every == 0 or step == cfg.steps:
                log(record)
            if main_process and cfg.eval_every and cfg.eval_scenes and step % cfg.eval_every == 0 and step < cfg.steps:
                metadata["heldout"] = heldout_eval(model, cfg)
                log({"step": step, "heldout": metadata["heldout"]})
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save(step)
    bar.close()
    if main_process and skipped > SKIPPED_SHARE_WARNING * max(step - first_step, 1):
        # the threshold is absolute, and raising a loss weight raises every step's gradient norm with it
        print(f"warning: {skipped} of {step - first_step} steps were skipped (gradient norm above --skip-grad-norm "
              f"{cfg.skip_grad_norm}); if the loss weights make such norms normal, raise it", file=sys.stderr)

    if main_process and cfg.eval_scenes:
        metadata["heldout"] = heldout_eval(model, cfg)
        log({"step": step, "heldout": metadata["heldout"]})
    save(step)

    digest = state_digest(model.state_dict())
    per_rank = [{"rank": rank, "weights_sha256": digest, "first_batch_sha256": first_batch_digest}]
    if distributed:
        gathered = [None] * world
        dist.all_gather_object(gathered, per_rank[0])
        per_rank = gathered
    summary = {
        "steps": step,
        "finished": step >= cfg.steps,
        "stopped_by_signal": stop.set,
        "train_mse_ema": loss_ema,
        "skipped_steps": skipped,
        "minutes": (time.perf_counter() - started) / 60,
        "world_size": world,
        "ranks": per_rank,
        "heldout": metadata.get("heldout"),
        "checkpoint": str(out / "ckpt.pt"),
    }
    if main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log_file.close()
        if tb is not None:
            tb.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary

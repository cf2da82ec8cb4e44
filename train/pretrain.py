"""Pretrain FSM for novel view-time synthesis (paper Sec. 3.2, App. A; LaCT's NVS recipe).

    python train/pretrain.py --model.preset tiny --steps 50 --data.resolution 64 --out runs/smoke   # CPU smoke
    python train/pretrain.py --model.preset small --out runs/small                                  # one GPU
    torchrun --nproc_per_node=8 train/pretrain.py --model.preset base --out runs/base               # DDP

One step: a batch of samples (inputs + targets from a window of a camera trajectory), the
inputs stream through the fast weights chunk by chunk, the targets are rendered, and the
loss L2 + 0.5 LPIPS (LPIPS from --lpips-start on) trains the slow weights. AdamW with
betas (0.9, 0.95), weight decay on matrices only, linear warmup then cosine decay; gradients
clipped to 1.0 and the step skipped when the norm is non-finite or, after warmup, above
--skip-grad-norm (LaCT's guard against loss spikes).

OUT/ holds ckpt.pt (the training checkpoint: model + optimizer + RNG states + step; the viewer
and fsm.load_checkpoint open it too), metrics.jsonl (one JSON object per logged step or
evaluation), summary.json, config.json and, if tensorboard is installed, tb/.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import tyro
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from fsm.checkpoint import FORMAT, VERSION, atomic_torch_save, read_checkpoint
from fsm.metrics import lpips
from fsm.model import FSM, FSMConfig, preset
from fsm.precision import resolve_dtype
from train.common import (
    DataConfig,
    ElasticOptions,
    dist_info,
    pick_device,
    rng_state,
    sample_seed,
    seed_everything,
    set_rng_state,
    state_digest,
    make_source,
    training_batch,
    views_to,
)
from train.eval import evaluate_pairs, synthetic_pairs


@dataclass
class ModelOptions:
    preset: Literal["tiny", "small", "base"] = "small"
    """Architecture preset (fsm.model.PRESETS): tiny for tests, small ships, base is the paper's."""
    heads: tuple[Literal["lvsm", "4dgs"], ...] = ("lvsm",)
    """Decoding heads to build and train: lvsm (direct RGB), 4dgs (4D Gaussians, rasterized); both = summed losses."""
    frames_per_chunk: int | None = None
    """Input frames per fast-weight update (default: the preset's; 8 frames = 2048 tokens at 128^2)."""


@dataclass
class TrainConfig:
    out: Path = Path("runs/pretrain")
    """Output folder (checkpoint, logs)."""
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=DataConfig)
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
    """After warmup, skip steps whose gradient norm (before clipping) exceeds this."""
    lpips_weight: float = 0.5
    """Weight mu of the LPIPS term (AlexNet LPIPS, shipped weights)."""
    lpips_start: int = 2500
    """Step from which the LPIPS term is on (L2 only before)."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
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
    seed: int = 0
    """Seeds the weights and every data stream (process r draws its samples from seed, r, step)."""
    device: str = "auto"
    """auto | cpu | cuda (under torchrun each process uses cuda:LOCAL_RANK)."""


# ----------------------------------------------------------------------------------------------
# Pieces of the loop


def model_config(cfg: TrainConfig) -> FSMConfig:
    overrides = {"heads": tuple(cfg.model.heads), "elastic": cfg.elastic.to_config()}
    if cfg.model.frames_per_chunk:
        overrides["frames_per_chunk"] = cfg.model.frames_per_chunk
    return preset(cfg.model.preset, **overrides)


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


def save_training_checkpoint(path: Path, model: FSM, optimizer, step: int, cfg: TrainConfig, metadata: dict) -> None:
    """fsm.checkpoint's format (so the viewer opens it) plus what an exact resume needs."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "config": model.config.to_dict(),
            "state_dict": state,
            "metadata": metadata,
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "step": step,
            "train_config": json.dumps(asdict(cfg), default=str),
        },
        path,
    )


def load_training_checkpoint(path: Path, model: FSM, optimizer) -> tuple[int, dict]:
    """Restore weights, optimizer and RNG states; returns (step, metadata)."""
    ckpt = read_checkpoint(path)
    if "optimizer" not in ckpt:
        raise ValueError(f"{path}: a model-only checkpoint (no optimizer state); use train/finetune.py to start from it")
    saved = FSMConfig.from_dict(ckpt["config"])
    if saved != model.config:
        differ = [f"{k}: checkpoint {getattr(saved, k)!r} vs flags {v!r}" for k, v in vars(model.config).items() if getattr(saved, k) != v]
        raise ValueError(f"{path}: the model flags differ from the checkpoint's — " + "; ".join(differ))
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"]), ckpt.get("metadata", {})


@torch.no_grad()
def heldout_eval(model: FSM, cfg: TrainConfig) -> dict:
    """Mean PSNR/SSIM/LPIPS of every head on the held-out synthetic scenes, per regime."""
    was_training = model.training
    model.eval()
    out = {}
    data = replace(cfg.data, target_views=min(cfg.data.target_views, 8))
    for regime in ("sparse", "continuous"):
        rows, _ = evaluate_pairs(model, synthetic_pairs(data, regime, cfg.eval_scenes))
        out[regime] = {r["method"]: {m: r[m] for m in ("psnr", "ssim", "lpips")} for r in rows}
    model.train(was_training)
    return out


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


# ----------------------------------------------------------------------------------------------
# The loop


def main(cfg: TrainConfig) -> dict:
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
        raise ValueError(f"--steps and --batch-size must be >= 1, got {cfg.steps}, {cfg.batch_size}")

    seed_everything(cfg.seed)  # identical initial weights on every process
    model = FSM(model_config(cfg)).to(device)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, metadata = 0, {}
    if cfg.resume is not None:
        step, metadata = load_training_checkpoint(cfg.resume, model, optimizer)
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
    H = W = cfg.data.resolution
    tokens_per_step = cfg.batch_size * world * (cfg.data.input_views + cfg.data.target_views) * (H // model.config.patch) * (W // model.config.patch)
    started = time.perf_counter()
    loss_ema = metadata.get("train_mse_ema")  # EMA (alpha 0.1) of the training L2 loss, as the paper's Table 1
    first_batch_digest = None
    skipped = 0
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
            inputs, targets = training_batch(source, cfg.batch_size, sample_seed(cfg.seed, rank, step))
            if first_batch_digest is None:
                first_batch_digest = state_digest({"images": inputs.images})
            inputs, targets = views_to(inputs, device), views_to(targets, device)
            lr = learning_rate(step, cfg.lr, cfg.warmup, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            pred = forward(inputs, targets)  # {head: (B, Vt, 3, H, W)}
            use_lpips = cfg.lpips_weight if step >= cfg.lpips_start else 0.0
            loss, parts = photometric_loss(pred, targets.images, use_lpips)
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
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{parts['psnr']:.2f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                log(record)
            if main_process and cfg.eval_every and cfg.eval_scenes and step % cfg.eval_every == 0 and step < cfg.steps:
                metadata["heldout"] = heldout_eval(model, cfg)
                log({"step": step, "heldout": metadata["heldout"]})
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save(step)
    bar.close()

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


if __name__ == "__main__":
    main(tyro.cli(TrainConfig))

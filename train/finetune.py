"""Fine-tune a checkpoint's slow weights on one clip; report held-out quality before and after.

    python train/finetune.py --ckpt assets/fsm_small.pt --clip clip.mp4 --steps 300 --out runs/ft
    fsm-view clip.mp4 --ckpt runs/ft/finetuned.pt

Every k-th frame of the clip (--holdout-every, as train/eval.py) is held out: never trained
on, used only to measure PSNR/SSIM/LPIPS before and after, with eval's code (streamed through
a StreamSession). Training samples draw inputs and targets from the remaining frames, posed
the way the viewer poses this clip (poses normalised over the whole clip, times over its span),
so the weights adapt to exactly what the viewer will feed them.

Writes OUT/finetuned.pt (fsm.load_checkpoint / the viewer open it), OUT/finetune.md,
OUT/finetune.json, OUT/metrics.jsonl and OUT/strips/.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

import torch
from tqdm import tqdm

from fsm.cameras import ClipNormalization
from fsm.checkpoint import load_checkpoint, save_checkpoint
from fsm.io import load_clip
from fsm.model import Views
from fsm.precision import DtypeChoice, resolve_dtype
from train.lib import (
    evaluate_pairs,
    learning_rate,
    make_optimizer,
    markdown_table,
    photometric_loss,
    pick_device,
    run_cli,
    seed_everything,
    split_clip,
    views_to,
    write_strips,
)


@dataclass
class FinetuneConfig:
    ckpt: Path
    """Checkpoint to start from."""
    clip: Path
    """The clip (video, image folder or camera file; see fsm.io.load_clip)."""
    out: Path = Path("runs/finetune")
    """Output folder."""
    cameras: Path | None = None
    """Camera file instead of the sidecar found next to the clip."""
    size: int = 128
    """Square resolution the clip is resized/cropped to (train and evaluate)."""
    max_frames: int | None = None
    """Use at most this many frames (after --stride)."""
    stride: int = 1
    """Take every n-th frame of the clip."""
    holdout_every: int = 4
    """Every k-th frame (from k // 2) is held out for the before/after report."""
    input_views: int = 16
    """Input frames per training sample (drawn from the non-held-out frames)."""
    target_views: int = 8
    """Target frames per training sample (other non-held-out frames)."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 1
    """Samples per step."""
    lr: float = 2e-5
    """Peak learning rate (lower than pretraining: adapt, don't forget)."""
    warmup: int = 20
    """Linear warmup steps, then cosine decay to zero."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices (>= 2-D) only."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (non-finite steps are skipped)."""
    lpips_weight: float = 0.5
    """Weight of the LPIPS term in L2 + w * LPIPS."""
    seed: int = 0
    """Seeds the choice of training frames."""
    device: str = "auto"
    """auto | cpu | cuda."""
    dtype: DtypeChoice = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""
    strips: int = 4
    """Side-by-side PNGs of held-out frames after fine-tuning."""


def clip_batch(frames: Views, clip_norm: ClipNormalization, n_in: int, n_tgt: int, batch: int, gen: torch.Generator) -> tuple[Views, Views]:
    """Random (inputs, targets) from the clip's training frames (batch of one Views in clip frame).

    Inputs and targets are disjoint and time-sorted; poses and times mapped as the viewer maps them.
    """
    n = frames.num_views
    n_in, n_tgt = min(n_in, n - 1), min(n_tgt, n - min(n_in, n - 1))
    picks = []
    for _ in range(batch):
        order = torch.randperm(n, generator=gen)
        picks.append((order[:n_in].sort().values, order[n_in : n_in + n_tgt].sort().values))

    def views(which: int) -> Views:
        idx = torch.stack([p[which] for p in picks])  # (B, V)
        return Views(
            clip_norm.c2w(frames.c2w[0][idx]),
            frames.fxfycxcy[0][idx],
            clip_norm.times(frames.times[0][idx]).float(),
            frames.images[0][idx],
        )

    return views(0), views(1)


def main(cfg: FinetuneConfig) -> dict:
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = load_checkpoint(cfg.ckpt, device=device)
    model.compute_dtype = resolve_dtype(cfg.dtype, device)
    heads = model.config.heads
    clip = load_clip(cfg.clip, cameras=cfg.cameras, max_frames=cfg.max_frames, stride=cfg.stride, size=cfg.size)
    train_frames, held, clip_norm = split_clip(clip, cfg.holdout_every)
    before, _ = evaluate_pairs(model, [(train_frames, held, clip_norm)], heads=heads)

    model.train()
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    skipped = 0
    with open(cfg.out / "metrics.jsonl", "w") as log, tqdm(total=cfg.steps, dynamic_ncols=True) as bar:
        for step in range(cfg.steps):
            t0 = time.perf_counter()
            inputs, targets = clip_batch(train_frames, clip_norm, cfg.input_views, cfg.target_views, cfg.batch_size, gen)
            inputs, targets = views_to(inputs, device), views_to(targets, device)
            lr = learning_rate(step, cfg.lr, cfg.warmup, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pred = model(inputs, targets)  # {head: (B, Vt, 3, H, W)}
            loss, parts = photometric_loss(pred, targets.images, cfg.lpips_weight)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            if math.isfinite(grad_norm):  # a non-finite step would ruin the weights; skip it
                optimizer.step()
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
            record = {"step": step + 1, "loss": loss.item(), **parts, "grad_norm": grad_norm, "lr": lr, "step_s": time.perf_counter() - t0}
            log.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{parts['psnr']:.2f}")
    model.eval()

    after, shown = evaluate_pairs(model, [(train_frames, held, clip_norm)], heads=heads)
    strips = write_strips(cfg.out / "strips", "after", shown, cfg.strips, heads)
    report = {
        "checkpoint_in": str(cfg.ckpt),
        "clip": str(cfg.clip),
        "frames": len(clip),
        "heldout_frames": held.num_views,
        "train_frames": train_frames.num_views,
        "steps": cfg.steps,
        "skipped_steps": skipped,
        "before": before,
        "after": after,
        "strips": strips,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    metadata = {**getattr(model, "metadata", {}), "finetuned": {k: report[k] for k in ("checkpoint_in", "clip", "frames", "heldout_frames", "steps")},
                "heldout": {"before": before, "after": after}}  # fmt: skip
    save_checkpoint(cfg.out / "finetuned.pt", model, metadata=json.loads(json.dumps(metadata, default=str)))
    (cfg.out / "finetune.json").write_text(json.dumps(report, indent=2))
    rows = [{"set": "before", **r} for r in before] + [{"set": "after", **r} for r in after]
    md = [
        f"# Fine-tuning `{cfg.ckpt}` on `{cfg.clip}`",
        "",
        f"{len(clip)} frames at {cfg.size}x{cfg.size}: {train_frames.num_views} trained on, {held.num_views} held out "
        f"(every {cfg.holdout_every}th); {cfg.steps} steps, lr {cfg.lr}. Held-out quality:",
        "",
        markdown_table(rows),
        "",
        f"Checkpoint: `{cfg.out / 'finetuned.pt'}`.",
    ]
    (cfg.out / "finetune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return report


if __name__ == "__main__":
    run_cli(main, FinetuneConfig)

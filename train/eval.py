"""Evaluate a checkpoint: PSNR / SSIM / LPIPS on held-out views, per head, against a baseline.

    python train/eval.py --ckpt runs/small/ckpt.pt --out runs/small/eval
    python train/eval.py --ckpt assets/fsm_small.pt --clip /path/to/clip.mp4 --holdout-every 4

Two kinds of held-out views:
  * the synthetic held-out set (fixed seeds, never trained on), in two regimes: "sparse"
    (inputs spread over a long window) and "continuous" (a contiguous run of frames with the
    targets masked inside it, which reduces to frame interpolation; paper Fig. 5);
  * each --clip: every k-th frame is a target, the others are inputs.
Inputs are streamed through fsm.StreamSession, so the chunk count is the one the viewer uses.
The "nearest-input" baseline answers every target with the input frame closest in time.

Writes OUT/eval.md, OUT/eval.json and OUT/strips/*.png (prediction | nearest input | truth).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imageio.v3 as iio
import torch
import tyro

from fsm.cameras import normalize_poses
from fsm.checkpoint import load_checkpoint
from fsm.lacet import ElasticConfig
from fsm.metrics import lpips, psnr, ssim
from fsm.model import FSM, Views
from fsm.precision import resolve_dtype
from fsm.stream import StreamSession
from train.common import DataConfig, heldout_batches, pick_device

RENDER_GROUP = 8  # target views rendered per call (bounds activation memory)


@dataclass
class EvalConfig:
    ckpt: Path
    """Checkpoint to evaluate (any file fsm.load_checkpoint opens)."""
    out: Path = Path("runs/eval")
    """Output folder for eval.md, eval.json and strips/."""
    data: DataConfig = field(default_factory=lambda: DataConfig(input_views=32, target_views=8))
    """Held-out synthetic set: resolution, views per scene, window (source is always synthetic)."""
    scenes: int = 8
    """Held-out synthetic scenes per regime (0 = skip the synthetic set)."""
    regimes: tuple[str, ...] = ("sparse", "continuous")
    """Held-out regimes to evaluate."""
    clip: tuple[Path, ...] = ()
    """Real clips to evaluate on (video, image folder or camera file; see fsm.io.load_clip)."""
    cameras: Path | None = None
    """Camera file for the clip(s), instead of the sidecar found next to them."""
    holdout_every: int = 4
    """On a clip, every k-th frame (starting at k // 2) is a target; the rest are inputs."""
    clip_size: int = 128
    """Clip frames are resized to cover and centre-cropped to this square size."""
    clip_max_frames: int | None = None
    """Use at most this many clip frames (after --clip-stride)."""
    clip_stride: int = 1
    """Take every n-th frame of the clip."""
    frames_per_chunk: int | None = None
    """Frames per fast-weight chunk when streaming (default: the checkpoint's)."""
    plain_lact: bool = False
    """Also evaluate the same weights streamed as plain LaCT (lambda = 0): the elastic baseline."""
    strips: int = 4
    """Side-by-side PNGs written per evaluated set."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""


# ----------------------------------------------------------------------------------------------
# Rendering held-out views the way the viewer does


@torch.no_grad()
def stream_and_render(
    model: FSM, inputs: Views, targets: Views, frames_per_chunk: int | None = None, head: str = "lvsm", session_kwargs=None
) -> tuple[torch.Tensor, int]:
    """Stream one clip's inputs (batch of one) through a StreamSession, render its targets.

    inputs/targets hold clip-frame cameras and times; session_kwargs (time_span, normalization)
    map them into the model's frame, default: they are already normalised (times in [-1, 1]).
    Returns (renders (Vt,3,H,W) on the CPU, number of chunks ingested).
    """
    kwargs = {"time_span": (-1.0, 1.0), **(session_kwargs or {})}
    session = StreamSession(model, frames_per_chunk=frames_per_chunk, **kwargs)
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
    pairs: list[tuple[Views, Views, dict]],
    frames_per_chunk: int | None = None,
    heads: tuple[str, ...] | None = None,
    plain_lact: bool = False,
) -> tuple[list[dict], dict[str, list[torch.Tensor]]]:
    """Metrics of every head and of the nearest-input baseline over (inputs, targets, session_kwargs).
    plain_lact: also each head with the same weights streamed as plain LaCT (lambda = 0).

    Returns (one row per method: name, psnr, ssim, lpips means, chunks, views, scenes;
    images per method for strips: renders of the first pair, plus "truth").
    """
    heads = heads or model.config.heads
    methods = [*heads, *(f"{h} (plain LaCT)" for h in heads if plain_lact), "nearest-input"]
    per = {name: {"psnr": [], "ssim": [], "lpips": []} for name in methods}
    chunks: set[int] = set()
    shown: dict[str, torch.Tensor] = {}
    for k, (inputs, targets, kwargs) in enumerate(pairs):
        truth = targets.images[0].float().cpu()
        preds = {"nearest-input": nearest_input(inputs, targets)}
        for head in heads:
            preds[head], n = stream_and_render(model, inputs, targets, frames_per_chunk, head, kwargs)
            chunks.add(n)
            if plain_lact:
                lact_kwargs = {**kwargs, "elastic": ElasticConfig.plain_lact()}
                preds[f"{head} (plain LaCT)"], _ = stream_and_render(model, inputs, targets, frames_per_chunk, head, lact_kwargs)
        for name, pred in preds.items():
            for m, v in image_metrics(pred, truth).items():
                per[name][m] += v
        if k == 0:
            shown = {**preds, "truth": truth}
    rows = [
        {
            "method": name,
            **{m: _mean(v) for m, v in values.items()},
            "chunks": sorted(chunks) if name != "nearest-input" else [],
            "views": len(values["psnr"]),
            "scenes": len(pairs),
        }
        for name, values in per.items()
    ]
    return rows, shown


def synthetic_pairs(data: DataConfig, regime: str, scenes: int) -> list[tuple[Views, Views, dict]]:
    return [(i, t, {}) for i, t in heldout_batches(data, regime, scenes)]


def load_eval_clip(cfg: EvalConfig, path: Path):
    from fsm.io import load_clip  # PyAV is only needed for clips

    return load_clip(path, cameras=cfg.cameras, max_frames=cfg.clip_max_frames, stride=cfg.clip_stride, size=cfg.clip_size)


def split_clip(clip, holdout_every: int) -> tuple[Views, Views, dict]:
    """(inputs, every k-th frame as targets, session kwargs) in the clip's own frame and seconds.

    The session kwargs are the viewer's: poses normalised over the whole clip, times over its span.
    """
    held = holdout_mask(len(clip), holdout_every)
    _, norm = normalize_poses(clip.c2w)
    times = clip.times.to(torch.float64)
    kwargs = {"time_span": (float(times[0]), float(times[-1])), "normalization": norm}
    views = lambda m: Views(clip.c2w[m][None], clip.fxfycxcy[m][None], times[m][None], clip.frames[m][None])
    return views(~held), views(held), kwargs


def holdout_mask(n: int, every: int) -> torch.Tensor:
    """Boolean (n,): frames k//2, k//2 + k, ... are held out (first and last frames stay inputs)."""
    if every < 2:
        raise ValueError(f"--holdout-every must be >= 2, got {every}")
    held = torch.arange(n) % every == every // 2
    held[-1] = False
    if held.all() or not held.any():
        raise ValueError(f"a clip of {n} frames has no inputs or no targets with --holdout-every {every}")
    return held


# ----------------------------------------------------------------------------------------------
# Reporting


def write_strips(folder: Path, name: str, shown: dict[str, torch.Tensor], count: int, heads) -> list[str]:
    """PNG per target: [head renders | nearest input | ground truth] side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    order = [*heads, "nearest-input", "truth"]
    paths = []
    for v in range(min(count, shown["truth"].shape[0])):
        row = torch.cat([shown[k][v] for k in order], dim=-1)  # (3, H, len(order) * W)
        path = folder / f"{name}_{v}.png"
        iio.imwrite(path, (row.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        paths.append(str(path))
    return paths


def markdown_table(rows: list[dict], first: tuple[str, ...] = ("set", "method")) -> str:
    cols = [*first, "psnr", "ssim", "lpips", "chunks", "views"]
    fmt = lambda k, v: f"{v:.3f}" if k in ("psnr",) else f"{v:.4f}" if isinstance(v, float) else ", ".join(map(str, v)) if isinstance(v, list) else str(v)
    lines = ["| " + " | ".join(c.upper() if c in ("psnr", "ssim", "lpips") else c for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(cfg: EvalConfig) -> dict:
    device = pick_device(cfg.device)
    model = load_checkpoint(cfg.ckpt, device=device)
    model.compute_dtype = resolve_dtype(cfg.dtype, device)
    heads = model.config.heads
    fpc = cfg.frames_per_chunk or model.config.frames_per_chunk
    rows, strips = [], []
    sets = [(f"synthetic-{r}", lambda r=r: synthetic_pairs(cfg.data, r, cfg.scenes)) for r in (cfg.regimes if cfg.scenes else ())]
    sets += [(f"clip-{p.stem}", lambda p=p: [split_clip(load_eval_clip(cfg, p), cfg.holdout_every)]) for p in cfg.clip]
    for name, make in sets:
        set_rows, shown = evaluate_pairs(model, make(), fpc, heads, cfg.plain_lact)
        rows += [{"set": name, **r} for r in set_rows]
        strips += write_strips(cfg.out / "strips", name, shown, cfg.strips, heads)
    result = {
        "checkpoint": str(cfg.ckpt),
        "model": {"preset": model.config.preset, "heads": list(heads), "frames_per_chunk": fpc},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "rows": rows,
        "strips": strips,
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "eval.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# Evaluation of `{cfg.ckpt}`",
        "",
        f"Preset {model.config.preset}, heads {', '.join(heads)}, {fpc} frames per fast-weight chunk "
        "(`chunks` = chunks the stream ingested). `nearest-input` = the input frame nearest in time.",
        "",
        markdown_table(rows),
        "",
        f"Strips in `strips/`: {' | '.join([*heads, 'nearest input', 'ground truth'])}.",
    ]
    (cfg.out / "eval.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main(tyro.cli(EvalConfig))

"""Evaluate a checkpoint: PSNR / SSIM / LPIPS on held-out views, per head, against a baseline.

    python train/eval.py --ckpt runs/small/ckpt.pt --out runs/small/eval
    python train/eval.py --ckpt assets/fsm_small.pt --clip /path/to/clip.mp4 --holdout-every 4

Two kinds of held-out views:
  * the synthetic held-out set (fixed seeds, never trained on), in three regimes: "sparse"
    (inputs spread over a long window), "continuous" (a contiguous run of frames with the
    targets masked inside it, which reduces to frame interpolation; paper Fig. 5) and "novel"
    (cameras 0.5-1.5 m off the trajectory at input times: what only a 4D model can answer);
    with a 4DGS head also its depth error on the inputs and the true-depth oracle;
  * each --clip: every k-th frame is a target, the others are inputs.
Inputs are streamed through fsm.StreamSession, so the chunk count is the one the viewer uses.
The "nearest-input" baseline answers every target with the input frame closest in time.

Writes OUT/eval.md, OUT/eval.json and OUT/strips/*.png (predictions | oracle | nearest input | truth).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from fsm.checkpoint import load_checkpoint
from fsm.model import DEPTH_OPTIONS
from fsm.data.samples import SampleConfig
from fsm.precision import DtypeChoice, resolve_dtype
from train.lib import ORACLE, DepthOptions, evaluate_pairs, markdown_table, pick_device, run_cli, split_clip, synthetic_pairs, write_strips


@dataclass
class EvalConfig:
    ckpt: Path
    """Checkpoint to evaluate (any file fsm.load_checkpoint opens)."""
    out: Path = Path("runs/eval")
    """Output folder for eval.md, eval.json and strips/."""
    data: SampleConfig = field(default_factory=lambda: SampleConfig(num_input=32, num_target=8, window=128))
    """Held-out synthetic set: --data.height/width, views per scene (--data.num-input/num-target);
    the set draws its own windows and scenes, so the other fields only have to be valid."""
    scenes: int = 8
    """Held-out synthetic scenes per regime (0 = skip the synthetic set)."""
    regimes: tuple[Literal["sparse", "continuous", "novel"], ...] = ("sparse", "continuous", "novel")
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
    depth: Annotated[DepthOptions, tyro.conf.arg(name="")] = DepthOptions()
    """--gs-readout / --gs-depth-size / --gs-sweep-back / --gs-sweep-keep: read the geo 4DGS head's depth another way than
    the checkpoint says."""
    plain_lact: bool = False
    """Also evaluate the same weights streamed as plain LaCT (lambda = 0): the elastic baseline."""
    strips: int = 4
    """Side-by-side PNGs written per evaluated set."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    dtype: DtypeChoice = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""


def load_eval_clip(cfg: EvalConfig, path: Path):
    from fsm.io import load_clip  # PyAV is only needed for clips

    return load_clip(path, cameras=cfg.cameras, max_frames=cfg.clip_max_frames, stride=cfg.clip_stride, size=cfg.clip_size)


def main(cfg: EvalConfig) -> dict:
    device = pick_device(cfg.device)
    model = load_checkpoint(cfg.ckpt, device=device)
    model.compute_dtype = resolve_dtype(cfg.dtype, device)
    cfg.depth.apply(model, cfg.ckpt)
    heads = model.config.heads
    fpc = model.stream_config(frames_per_chunk=cfg.frames_per_chunk).frames_per_chunk
    rows, strips = [], []
    sets = [(f"synthetic-{r}", lambda r=r: synthetic_pairs(cfg.data, r, cfg.scenes)) for r in (cfg.regimes if cfg.scenes else ())]
    sets += [(f"clip-{p.stem}", lambda p=p: [split_clip(load_eval_clip(cfg, p), cfg.holdout_every)]) for p in cfg.clip]
    for name, make in sets:
        set_rows, shown = evaluate_pairs(model, make(), fpc, heads, cfg.plain_lact)
        rows += [{"set": name, **r} for r in set_rows]
        strips += write_strips(cfg.out / "strips", name, shown, cfg.strips, heads)
    result = {
        "checkpoint": str(cfg.ckpt),
        "model": {"preset": model.config.preset, "heads": list(heads), "frames_per_chunk": fpc,
                  **{name: getattr(model.config, name) for name in DEPTH_OPTIONS}},
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
        "(`chunks` = chunks the stream ingested). `nearest-input` = the input frame nearest in time; "
        f"`{ORACLE}` = the geo 4DGS head's rules at the engine's exact depth (a ceiling for the depth); "
        "`abs_rel` = the 4DGS head's mean relative depth error on non-sky input pixels.",
        "",
        markdown_table(rows),
        "",
        f"Strips in `strips/`: {' | '.join([*heads, *(['oracle'] if '4dgs' in heads else []), 'nearest input', 'ground truth'])}.",
    ]
    (cfg.out / "eval.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    run_cli(main, EvalConfig)

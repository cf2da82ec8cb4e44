"""Which 4DGS head learns on a CPU budget: each design trained for the same wall-clock time,
then evaluated on the held-out regimes next to the nearest-input baseline and the oracle.

    OMP_NUM_THREADS=1 python train/ablate_4dgs.py --minutes 45 --out runs/ablate_4dgs       # README's table
    python train/ablate_4dgs.py --minutes 1 --data.height 32 --data.width 32 ...               # a smoke run

Variants (the LVSM head trains alongside in each, as in the shipped model):

    paper          the paper's head: all 20 numbers per pixel regressed from the tokens
    geo-no-sweep   geometry-grounded head (input colour + residual, footprint scales, renders
                   from the frames nearest each time, depth supervised) without the plane sweep
    geo            the same with the plane-sweep costs as its depth cue (the shipped design;
                   the shipped recipe also passes --scale-jitter 4)

Writes OUT/ablate_4dgs.md, OUT/ablate_4dgs.json and one pretrain folder per variant.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from fsm.checkpoint import load_checkpoint
from fsm.data.samples import REGIMES
from train.lib import ORACLE, DataConfig, ModelOptions, TrainConfig, UsageError, evaluate_pairs, pick_device, pretrain, run_cli, synthetic_pairs

VARIANTS: dict[str, dict] = {
    "paper": dict(gs_head="paper"),
    "geo-no-sweep": dict(gs_head="geo", gs_sweep=False),
    "geo": dict(gs_head="geo", gs_sweep=True),
}


@dataclass
class Ablate4DGSConfig:
    out: Path = Path("runs/ablate_4dgs")
    """Output folder."""
    preset: Literal["tiny", "small", "base"] = "small"
    """Architecture preset of every variant."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Variants to run, in order (paper, geo-no-sweep, geo)."""
    minutes: float = 45.0
    """Wall-clock training budget of each variant."""
    data: DataConfig = field(default_factory=lambda: DataConfig(height=64, width=64, num_input=16, num_target=8, window=48))
    """Training samples (synthetic engine)."""
    lr: float = 3e-4
    """Peak learning rate."""
    warmup: int = 100
    """Warmup steps."""
    depth_weight: float = 0.1
    """Depth-loss weight (the geo variants; the paper head is trained photometrically, as the paper)."""
    scale_jitter: float = 1.0
    """--scale-jitter of the geo variants (pretrain's; the shipped recipe uses 4)."""
    eval_scenes: int = 4
    """Held-out synthetic scenes per regime."""
    eval_inputs: int = 16
    """Inputs per held-out scene."""
    eval_targets: int = 8
    """Targets per held-out scene."""
    seed: int = 0
    device: str = "auto"


def main(cfg: Ablate4DGSConfig) -> dict:
    unknown = set(cfg.variants) - set(VARIANTS)
    if not cfg.variants or unknown:
        raise UsageError(f"--variants must name one or more of {list(VARIANTS)}" + (f"; unknown: {sorted(unknown)}" if unknown else ""))
    device = pick_device(cfg.device)
    heldout = replace(cfg.data, num_input=cfg.eval_inputs, num_target=cfg.eval_targets, window=max(cfg.data.window, cfg.eval_inputs + cfg.eval_targets))
    results = {}
    for name in cfg.variants:
        v = VARIANTS[name]
        train_cfg = TrainConfig(
            out=cfg.out / name, model=ModelOptions(preset=cfg.preset, heads=("lvsm", "4dgs"), **v), data=cfg.data,
            batch_size=1, steps=100_000, max_minutes=cfg.minutes, lr=cfg.lr, warmup=cfg.warmup, lpips_start=10**9,
            depth_weight=cfg.depth_weight if v["gs_head"] == "geo" else 0.0, scale_jitter=cfg.scale_jitter, eval_scenes=0, ckpt_every=100, log_every=10,
            seed=cfg.seed, device=str(device),
        )  # fmt: skip
        summary = pretrain(train_cfg)
        model = load_checkpoint(cfg.out / name / "ckpt.pt", device=device)
        table = {}
        for regime in REGIMES:
            rows, _ = evaluate_pairs(model, synthetic_pairs(heldout, regime, cfg.eval_scenes))
            table[regime] = {r["method"]: {k: r[k] for k in ("psnr", "ssim", "lpips", "abs_rel", "abs_rel_median") if k in r} for r in rows}
        results[name] = {"variant": v, "steps": summary["steps"], "minutes": summary["minutes"], "heldout": table}
        write_report(cfg, results)  # after every variant: an interrupted run keeps what it measured
        if summary["stopped_by_signal"]:
            break
    print(markdown(cfg, results))
    return results


def write_report(cfg: Ablate4DGSConfig, results: dict) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "ablate_4dgs.json").write_text(json.dumps({"config": json.loads(json.dumps(asdict(cfg), default=str)), "results": results}, indent=2))
    (cfg.out / "ablate_4dgs.md").write_text(markdown(cfg, results))


def markdown(cfg: Ablate4DGSConfig, results: dict) -> str:
    d = cfg.data
    lines = [
        "# 4DGS head designs at an equal CPU budget",
        "",
        f"Preset {cfg.preset} with both heads, {d.height}x{d.width}, {d.num_input} inputs + {d.num_target} targets from a "
        f"{d.window}-frame window, batch 1, {cfg.minutes:g} minutes each, seed {cfg.seed}; held-out: {cfg.eval_scenes} scenes per "
        f"regime, {cfg.eval_inputs} inputs, {cfg.eval_targets} targets. PSNR (dB) / LPIPS; abs-rel = mean relative depth "
        "error of the 4DGS head on non-sky input pixels.",
        "",
        "| variant | steps | " + " | ".join(f"{r} 4DGS | {r} LVSM | {r} nearest | {r} oracle" for r in REGIMES) + " | abs-rel (median) |",
        "|---|---|" + "---|---|---|---|" * len(REGIMES) + "---|",
    ]
    fmt = lambda m: f"{m['psnr']:.2f} / {m['lpips']:.3f}"
    for name, r in results.items():
        h = r["heldout"]
        cells = [f"{fmt(h[g]['4dgs'])} | {fmt(h[g]['lvsm'])} | {fmt(h[g]['nearest-input'])} | {fmt(h[g][ORACLE])}" for g in REGIMES]
        depth = h[REGIMES[0]]["4dgs"]
        lines.append(f"| {name} | {r['steps']} | " + " | ".join(cells) + f" | {depth['abs_rel']:.2f} ({depth['abs_rel_median']:.2f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main, Ablate4DGSConfig)

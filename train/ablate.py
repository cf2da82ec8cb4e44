"""The paper's ablation (Table 1) and test-time scaling curve (Fig. 5) at a scale that fits.

    python train/ablate.py --preset small --steps 2000 --out runs/ablate          # one GPU, ~hours
    python train/ablate.py --preset tiny --steps 20 --data.height 32 --data.width 32 ...  # a smoke run

Every variant trains with the same seed, steps and data (train.lib.pretrain, train/pretrain.py's loop), then is
evaluated on the same held-out synthetic scenes:

    lact-1chunk         LaCT, all inputs in one fast-weight update
    lact-4chunks        LaCT, inputs in 4 chunks
    lacet-{si,ewc,mas}  LaCET, 4 chunks, streaming-EMA anchor, each importance estimator
    lacet-mas-streaming / lacet-mas-global   the other anchor policies

Table: train L2 (EMA, alpha 0.1) and held-out PSNR/SSIM/LPIPS, sparse and continuous.
Curve: quality vs number of input frames at test time (chunk size fixed, so more inputs =
more chunks; LaCT 1-chunk always takes every input in one chunk), sparse vs continuous.
Writes OUT/ablate.md, OUT/ablate.json and one pretrain folder per variant.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from fsm.checkpoint import load_checkpoint
from fsm.lacet import AnchorPolicy, ElasticConfig, Estimator
from train.lib import DataConfig, ElasticOptions, ModelOptions, TrainConfig, UsageError, evaluate_pairs, pick_device, pretrain, run_cli, synthetic_pairs


@dataclass(frozen=True)
class Variant:
    chunks: int  # fast-weight chunks per training sample
    elastic: bool
    anchor: AnchorPolicy = "streaming-ema"
    estimator: Estimator = "si"


VARIANTS: dict[str, Variant] = {
    "lact-1chunk": Variant(1, False),
    "lact-4chunks": Variant(4, False),
    "lacet-si": Variant(4, True, "streaming-ema", "si"),
    "lacet-ewc": Variant(4, True, "streaming-ema", "ewc"),
    "lacet-mas": Variant(4, True, "streaming-ema", "mas"),
    "lacet-mas-streaming": Variant(4, True, "streaming", "mas"),
    "lacet-mas-global": Variant(4, True, "global", "mas"),
}


@dataclass
class AblateConfig:
    out: Path = Path("runs/ablate")
    """Output folder."""
    preset: Literal["tiny", "small", "base"] = "small"
    """Model preset for every variant (the paper uses a 12-layer model)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(num_input=16, num_target=16, window=64, height=64, width=64))
    """Training samples (same for every variant); input views must divide into 4 chunks."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Which variants to run (names above)."""
    steps: int = 2000
    """Training steps per variant."""
    batch_size: int = 4
    """Samples per step."""
    lr: float = 2e-4
    """Peak learning rate (paper's ablation: 2e-4)."""
    warmup: int = 200
    """Linear warmup steps, then cosine decay."""
    lpips_start: int = 200
    """Step from which LPIPS joins the loss."""
    lam: float = 0.5
    """Pull strength lambda of the LaCET variants."""
    alpha: float = 0.5
    """Importance EMA decay of the LaCET variants."""
    beta: float = 0.5
    """Anchor EMA decay (streaming-ema variants)."""
    seed: int = 0
    """Same seed (weights and data) for every variant."""
    eval_scenes: int = 8
    """Held-out scenes per regime for the table and for every point of the curve."""
    eval_targets: int = 8
    """Target views per held-out scene."""
    curve_inputs: tuple[int, ...] = (4, 8, 16, 32)
    """Input-frame counts of the test-time scaling curve."""
    device: str = "auto"
    """auto | cpu | cuda."""
    max_minutes_per_variant: float | None = None
    """Wall-clock cap per variant (stops training early; the table reports the steps reached)."""


def eval_chunking(variant: Variant, trained_fpc: int, num_inputs: int) -> int:
    """Frames per chunk at test time: LaCT 1-chunk sees all inputs at once, the others keep their chunk size."""
    return num_inputs if variant.chunks == 1 else trained_fpc


def heldout_config(cfg: AblateConfig, num_input: int) -> DataConfig:
    """The held-out views: `num_input` inputs, --eval-targets targets at the training size. The
    held-out set draws its own windows; `window` is widened only so that the config stays valid."""
    return replace(cfg.data, num_input=num_input, num_target=cfg.eval_targets, window=max(cfg.data.window, num_input + cfg.eval_targets))


def main(cfg: AblateConfig) -> dict:
    unknown = set(cfg.variants) - set(VARIANTS)
    if not cfg.variants or unknown:
        unknown_part = f"; unknown: {sorted(unknown)}" if unknown else ""
        raise UsageError(f"--variants must name one or more of {list(VARIANTS)}{unknown_part}")
    if cfg.data.num_input % 4:
        raise UsageError(f"--data.num-input {cfg.data.num_input} must be divisible by 4 (4-chunk variants)")
    device = pick_device(cfg.device)
    results = {}
    for name in cfg.variants:
        v = VARIANTS[name]
        fpc = cfg.data.num_input // v.chunks
        settings = ElasticConfig(lam=cfg.lam, alpha=cfg.alpha, beta=cfg.beta, estimator=v.estimator, anchor=v.anchor)
        elastic = ElasticOptions(plain_lact=not v.elastic, settings=settings)
        train_cfg = TrainConfig(
            out=cfg.out / name, model=ModelOptions(preset=cfg.preset, frames_per_chunk=fpc), data=cfg.data, elastic=elastic,
            batch_size=cfg.batch_size, steps=cfg.steps, max_minutes=cfg.max_minutes_per_variant, lr=cfg.lr, warmup=cfg.warmup,
            lpips_start=cfg.lpips_start, eval_scenes=0, ckpt_every=0, log_every=10, seed=cfg.seed, device=str(device),
        )
        summary = pretrain(train_cfg)
        model = load_checkpoint(cfg.out / name / "ckpt.pt", device=device)
        table = {}
        for regime in ("sparse", "continuous"):
            rows, _ = evaluate_pairs(model, synthetic_pairs(heldout_config(cfg, cfg.data.num_input), regime, cfg.eval_scenes), eval_chunking(v, fpc, cfg.data.num_input))
            table[regime] = {m: rows[0][m] for m in ("psnr", "ssim", "lpips")}
        curve = {}
        for regime in ("sparse", "continuous"):
            curve[regime] = []
            for n in cfg.curve_inputs:
                rows, _ = evaluate_pairs(model, synthetic_pairs(heldout_config(cfg, n), regime, cfg.eval_scenes), eval_chunking(v, fpc, n))
                curve[regime].append({"inputs": n, "chunks": rows[0]["chunks"], **{m: rows[0][m] for m in ("psnr", "ssim", "lpips")}})
        results[name] = {"variant": asdict(v), "frames_per_chunk": fpc, "steps": summary["steps"], "train_mse_ema": summary["train_mse_ema"], "heldout": table, "curve": curve}
        print(f"{name}: steps {summary['steps']}, train L2 EMA {summary['train_mse_ema']:.5f}, sparse PSNR {table['sparse']['psnr']:.2f}")
        report = write_report(cfg, results)  # after every variant: an interrupted ablation keeps what it measured
        if summary["stopped_by_signal"]:
            skipped = cfg.variants[cfg.variants.index(name) + 1 :]
            print(f"stopped by a signal during {name}; not run: {', '.join(skipped) or 'none'}")
            break
    print(markdown(cfg, results))
    return report


def write_report(cfg: AblateConfig, results: dict) -> dict:
    report = {"config": json.loads(json.dumps(asdict(cfg), default=str)), "results": results}
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "ablate.json").write_text(json.dumps(report, indent=2))
    (cfg.out / "ablate.md").write_text(markdown(cfg, results))
    return report


def markdown(cfg: AblateConfig, results: dict) -> str:
    d = cfg.data
    lines = [
        "# Ablation (paper Table 1 / Fig. 5 at small scale)",
        "",
        f"Preset {cfg.preset}, {d.height}x{d.width}, {d.num_input} inputs + {d.num_target} targets from a "
        f"{d.window}-frame window, batch {cfg.batch_size}, {cfg.steps} steps, seed {cfg.seed}; held-out: {cfg.eval_scenes} "
        f"synthetic scenes per regime, {cfg.eval_targets} targets each. Train L2 is the EMA (alpha 0.1) of the training MSE.",
        "",
        "| variant | chunks | elastic | anchor | estimator | steps | train L2 (x1e3) | sparse PSNR | SSIM | LPIPS | continuous PSNR | SSIM | LPIPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        v, s, c = r["variant"], r["heldout"]["sparse"], r["heldout"]["continuous"]
        anchor, est = (v["anchor"], v["estimator"]) if v["elastic"] else ("-", "-")
        lines.append(
            f"| {name} | {v['chunks']} | {'yes' if v['elastic'] else 'no'} | {anchor} | {est} | {r['steps']} | {1e3 * r['train_mse_ema']:.2f} "
            f"| {s['psnr']:.2f} | {s['ssim']:.3f} | {s['lpips']:.3f} | {c['psnr']:.2f} | {c['ssim']:.3f} | {c['lpips']:.3f} |"
        )
    lines += ["", "## Test-time scaling: held-out PSNR vs input frames", ""]
    lines.append("| variant | regime | " + " | ".join(f"{n} in" for n in cfg.curve_inputs) + " |")
    lines.append("|---|---|" + "---|" * len(cfg.curve_inputs))
    for name, r in results.items():
        for regime, points in r["curve"].items():
            lines.append(f"| {name} | {regime} | " + " | ".join(f"{p['psnr']:.2f}" for p in points) + " |")
    lines += ["", "SSIM and LPIPS of every point, and the chunk counts, are in ablate.json."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main, AblateConfig)

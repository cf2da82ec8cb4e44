"""Turn a training checkpoint into a shippable one: weights only (fp16 by default), metadata kept,
optionally with evaluation results and a notice the viewer shows.

    python train/export_checkpoint.py runs/small/ckpt.pt assets/fsm-small.pt \
        --eval runs/small/eval/eval.json --notice "..." [--gs-depth-size 64 --gs-sweep-back 1 --gs-sweep-keep 0.5]

The optimizer and RNG states of the training checkpoint are dropped (they are only for
--resume); fsm.load_checkpoint restores float32 weights from the fp16 file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from fsm.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from train.lib import DepthOptions, run_cli


@dataclass
class ExportConfig:
    src: tyro.conf.Positional[Path]
    """Training checkpoint (runs/NAME/ckpt.pt)."""
    dst: tyro.conf.Positional[Path]
    """Where to write the shippable checkpoint."""
    eval: Path | None = None
    """eval.json from train/eval.py, stored as metadata["eval"]."""
    notice: str | None = None
    """A one-line note about the checkpoint that fsm-view prints and shows on its page."""
    fp16: bool = True
    """Store weights in float16 (half the size; loaded back as float32)."""
    depth: Annotated[DepthOptions, tyro.conf.arg(name="")] = DepthOptions()
    """--gs-readout / --gs-depth-size / --gs-sweep-back / --gs-sweep-keep: store the geo 4DGS head's depth options so
    (as train/eval.py measured them)."""


def main(cfg: ExportConfig) -> Path:
    model = load_checkpoint(cfg.src)
    cfg.depth.apply(model, cfg.src)
    raw = read_checkpoint(cfg.src)
    metadata = dict(model.metadata)
    if "train_config" in raw:
        metadata["train_config"] = json.loads(raw["train_config"])
    if cfg.eval is not None:
        metadata["eval"] = json.loads(cfg.eval.read_text())
    if cfg.notice:
        metadata["notice"] = cfg.notice
    save_checkpoint(cfg.dst, model, metadata=metadata, dtype=torch.float16 if cfg.fp16 else None)
    print(f"wrote {cfg.dst} ({cfg.dst.stat().st_size / 2**20:.1f} MiB, {model.num_parameters() / 1e6:.1f} M parameters)")
    return cfg.dst


if __name__ == "__main__":
    run_cli(main, ExportConfig)

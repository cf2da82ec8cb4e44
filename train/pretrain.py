"""Pretrain FSM for novel view-time synthesis (paper Sec. 3.2, App. A; LaCT's NVS recipe).

    python train/pretrain.py --model.preset tiny --steps 50 --data.height 64 --data.width 64 --out runs/smoke   # CPU smoke
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

The loop and its pieces live in train/lib.py (train/ablate.py runs the same loop).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from train.lib import TrainConfig, pretrain, run_cli

if __name__ == "__main__":
    run_cli(pretrain, TrainConfig)

"""Choose the geo 4DGS head's plane-sweep temperature on validation scenes, after training.

    python train/calibrate_sweep.py runs/geo128/ckpt.pt runs/geo128/calibrated.pt --size 128

The geo head's plane logits are  -T * plane-sweep cost + CNN correction  (fsm/geohead.py), and
its depth is read out at the most likely plane. Training learns T only through the planes'
cross-entropy, which asks for *calibrated* probabilities: where the sweep is wrong (moving
objects, plain walls) a large T is confidently wrong, so the cross-entropy settles at a small T.
The readout only needs the right plane to win, which a larger T gives more often. Measured on
the shipped 64x64 checkpoint (T learned: 26): the cross-entropy's gradient raises T at 26 and
lowers it at 80, while the held-out median depth abs-rel falls from 0.88 (T 26) to 0.44 (80) and
0.27 (250). (A scalar under AdamW at lr 3e-4 also moves at most 3e-4 per step in log T.)

So T is chosen for the readout's own error — mean |log d - log d*| over non-sky input pixels,
the training's log-depth term — among candidate values, on fsm.data.VALIDATION_SCENES (seeds
neither training nor the held-out evaluation uses; regimes sparse and continuous), and written
into a copy of the checkpoint (everything else kept: a training checkpoint still resumes, an
fp16 one stays fp16). The cost volume and the CNN's correction do not depend on T, so each
scene is decoded once and every candidate is read out from the same logits.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make `train.lib` importable

from fsm.checkpoint import atomic_torch_save, load_checkpoint, read_checkpoint
from fsm.data import VALIDATION_SCENES, heldout_samples
from fsm.geohead import plane_readout
from fsm.model import DEPTH_MODULES, FSM
from fsm.planesweep import chunk_groups
from train.lib import UsageError, run_cli

KEY = "gaussian_head.log_temperature"


@dataclass
class CalibrateConfig:
    src: tyro.conf.Positional[Path]
    """Checkpoint with a geo 4DGS head (training or exported)."""
    dst: tyro.conf.Positional[Path]
    """Where to write the copy with the chosen temperature (may equal src)."""
    temperatures: tuple[float, ...] = (10, 20, 40, 80, 160, 320, 640, 1280)
    """Candidate temperatures; the checkpoint's own is always a candidate."""
    scenes: int = 6
    """Validation scenes per regime (of 12)."""
    size: int = 64
    """Square resolution of the validation views (the resolution the checkpoint is used at)."""
    num_input: int = 32
    """Input views per validation scene (the held-out evaluation's count)."""
    device: str = "cpu"
    """cpu | cuda | cuda:N."""


@torch.no_grad()
def readout_errors(model: FSM, samples, temperatures: list[float]) -> torch.Tensor:
    """Mean |log d - log d*| over the non-sky input pixels of all samples, per temperature: (len(T),)."""
    head = model.gaussian_head
    t_model = head.log_temperature.exp().item()
    fpc = model.stream.frames_per_chunk
    total, count = torch.zeros(len(temperatures), dtype=torch.float64), 0
    for s in samples:
        inputs = s.inputs
        logits = model(inputs, s.targets[:1], heads=("depth",))["depth_logits"].float()  # (B,V,P,H,W) at t_model
        # the forward's own costs (FSM.sweep_cost, at its depth size); the test checks the result against direct forwards
        cost = model.sweep_cost(inputs, chunk_groups(inputs.num_views, fpc))
        if cost.shape[-2:] != logits.shape[-2:]:  # the forward upsamples its logits bilinearly, a linear map: so the cost term too
            cost = F.interpolate(cost.flatten(0, 1), size=logits.shape[-2:], mode="bilinear", align_corners=False).unflatten(0, cost.shape[:2])
        truth = s.input_depth.to(logits.device).float()
        ground = torch.isfinite(truth)
        for k, t in enumerate(temperatures):
            log_depth = plane_readout(logits - (t - t_model) * cost, head.log_planes)  # (B,V,H,W)
            total[k] += (log_depth - truth.log())[ground].abs().sum().double().cpu()
        count += int(ground.sum())
    return total / max(count, 1)


def main(cfg: CalibrateConfig) -> dict:
    model = load_checkpoint(cfg.src, device=cfg.device)
    if model.config.gs_head != "geo" or not model.config.gs_sweep or "4dgs" not in model.config.heads:
        raise UsageError(f"{cfg.src}: calibrate_sweep needs a geo 4DGS head with the plane sweep (gs_head='geo', gs_sweep)")
    if any(getattr(model.config, flag) for flag in DEPTH_MODULES):  # logits no longer linear in T; trained at its T
        raise UsageError(f"{cfg.src}: has depth modules (gs_refine / gs_edge) trained at its sweep temperature; "
                         "calibrate the checkpoint it was trained from instead")
    t_model = model.gaussian_head.log_temperature.exp().item()
    temperatures = sorted({*map(float, cfg.temperatures), t_model})
    samples = [s for regime in ("sparse", "continuous")
               for s in heldout_samples(regime, num_input=cfg.num_input, num_target=1, height=cfg.size, width=cfg.size,
                                        scenes=VALIDATION_SCENES[: cfg.scenes], device=cfg.device)]  # fmt: skip
    errors = readout_errors(model, samples, temperatures).tolist()
    best = min(range(len(temperatures)), key=errors.__getitem__)
    for t, e in zip(temperatures, errors):
        print(f"T {t:8.1f}: mean |log d - log d*| {e:.4f}" + ("  (the checkpoint's)" if t == t_model else "") + ("  <- chosen" if t == temperatures[best] else ""))

    raw = read_checkpoint(cfg.src)
    old = raw["state_dict"][KEY]
    raw["state_dict"][KEY] = torch.tensor(math.log(temperatures[best]), dtype=old.dtype)
    record = {"from": t_model, "to": temperatures[best], "candidates": temperatures, "errors": errors,
              "scenes": cfg.scenes, "size": cfg.size, "num_input": cfg.num_input,
              "criterion": "mean |log d - log d*|, non-sky input pixels, VALIDATION_SCENES sparse+continuous"}  # fmt: skip
    raw["metadata"] = {**raw.get("metadata", {}), "sweep_calibration": record}
    atomic_torch_save(raw, cfg.dst)
    print(f"wrote {cfg.dst}: sweep temperature {t_model:.1f} -> {temperatures[best]:.1f}")
    return record


if __name__ == "__main__":
    run_cli(main, CalibrateConfig)

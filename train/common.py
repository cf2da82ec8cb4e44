"""Shared pieces of the training scripts: CLI option groups, data access, devices, RNG states.

The scripts import this as `train.common`; each script puts the repository root on sys.path
first, so `python train/pretrain.py` works from a checkout without installing anything.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fsm.data.samples import HELDOUT_SCENES, ClipSource, SampleConfig, SampleSource, SyntheticSource, heldout_views
from fsm.lacet import AnchorPolicy, ElasticConfig, Estimator
from fsm.model import Views

# ----------------------------------------------------------------------------------------------
# CLI option groups shared by pretrain / ablate / finetune


@dataclass
class DataConfig:
    """Where training samples come from and what they look like."""

    source: Literal["synthetic", "clips"] = "synthetic"
    """synthetic: the procedural 4D engine (fsm.data); clips: real posed clips listed in --data.clips."""
    clips: tuple[Path, ...] = ()
    """Clips or folders of clips (anything fsm.io.load_clip reads) for --data.source clips."""
    resolution: int = 128
    """Square training resolution in pixels (a multiple of the patch size, 8)."""
    input_views: int = 32
    """Input (context) frames per sample; these update the fast weights."""
    target_views: int = 32
    """Target views per sample (supervised renders), some off the camera trajectory."""
    window: int = 128
    """Frames in the temporal window a sample's inputs and targets are drawn from."""
    novel_share: float = 0.25
    """Share of synthetic targets rendered from off-trajectory cameras (at an input's time)."""


@dataclass
class ElasticOptions:
    """Fast-weight consolidation (paper Eq. 5-6). Defaults are the paper's."""

    plain_lact: bool = False
    """Turn consolidation off (lambda = 0): exactly LaCT."""
    estimator: Estimator = "si"
    """Importance estimator phi: si |dW * (W - W*)|, ewc dW^2, mas |dW|."""
    anchor: AnchorPolicy = "streaming-ema"
    """Anchor policy: EMA of the fast weights, the last fast weights, or the initial ones."""
    lam: float = 0.5
    """Pull strength lambda toward the anchor."""
    alpha: float = 0.5
    """Importance EMA decay."""
    beta: float = 0.5
    """Anchor EMA decay (streaming-ema only)."""

    def to_config(self) -> ElasticConfig:
        if self.plain_lact:
            return ElasticConfig.plain_lact()
        return ElasticConfig(lam=self.lam, alpha=self.alpha, beta=self.beta, estimator=self.estimator, anchor=self.anchor)


# ----------------------------------------------------------------------------------------------
# Devices and seeds


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
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
        h.update(state_dict[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def views_to(views: Views, device: torch.device) -> Views:
    move = lambda x: None if x is None else x.to(device, non_blocking=True)
    return Views(move(views.c2w), move(views.fxfycxcy), move(views.times), move(views.images))


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


# ----------------------------------------------------------------------------------------------
# Data access (the one place the scripts touch fsm.data)


def sample_config(data: DataConfig) -> SampleConfig:
    return SampleConfig(num_input=data.input_views, num_target=data.target_views, window=data.window,
                        height=data.resolution, width=data.resolution, novel_share=data.novel_share)  # fmt: skip


def make_source(data: DataConfig, device: torch.device | str = "cpu") -> SampleSource:
    """The training sample source the flags describe (synthetic renders on `device`)."""
    if data.source == "synthetic":
        return SyntheticSource(sample_config(data), device=device)
    if not data.clips:
        raise ValueError("--data.source clips needs --data.clips PATH [PATH ...] (clips or folders of clips)")
    return ClipSource(list(data.clips), replace(sample_config(data), novel_share=0.0), device=device)


def training_batch(source: SampleSource, batch: int, seed: int) -> tuple[Views, Views]:
    """One batch (inputs, targets), a pure function of `seed` (no hidden data-loader state)."""
    sample = source.sample(batch, torch.Generator().manual_seed(seed))
    return sample.inputs, sample.targets


def heldout_batches(data: DataConfig, regime: str, scenes: int) -> list[tuple[Views, Views]]:
    """The first `scenes` fixed held-out synthetic scenes (batch of one each) in a regime.

    The sparse window is fsm.data's default (4x the views), the continuous one is contiguous.
    """
    if not 1 <= scenes <= len(HELDOUT_SCENES):
        raise ValueError(f"held-out scenes must be in 1..{len(HELDOUT_SCENES)}, got {scenes}")
    return list(heldout_views(regime, num_input=data.input_views, num_target=data.target_views, height=data.resolution,
                              width=data.resolution, scenes=HELDOUT_SCENES[:scenes]))  # fmt: skip

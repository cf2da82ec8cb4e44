import math
import socket

import lpips as lpips_lib
import pytest
import torch

from conftest import SHARED_DATA
from fsm import metrics
from fsm.metrics import get_lpips, lpips, psnr, ssim

EXAMPLES = SHARED_DATA / "lpips_examples"


def random_images(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def load_example(name: str) -> torch.Tensor:
    import imageio.v3 as iio

    return torch.from_numpy(iio.imread(EXAMPLES / f"{name}.png")).permute(2, 0, 1).float() / 255  # (3,H,W)


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Make any socket connection or DNS lookup raise, and point the torch hub cache at an
    empty folder so a download would really be attempted (not served from a cache)."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked(f"network access attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    metrics._load_lpips.cache_clear()  # build the module afresh inside the guard
    yield
    metrics._load_lpips.cache_clear()


# ----------------------------------------------------------------------------------------------
# PSNR


def test_psnr_constant_offset_known_values():
    target = random_images(2, 3, 16, 16) * 0.8
    # offset 0.1 everywhere -> MSE 0.01 -> 20 dB; offset 0.01 -> 40 dB
    pred = torch.stack([target[0] + 0.1, target[1] + 0.01])
    torch.testing.assert_close(psnr(pred, target), torch.tensor([20.0, 40.0]), atol=1e-3, rtol=0)


def test_psnr_matches_formula_and_keeps_leading_dims():
    target = random_images(2, 4, 3, 8, 8, seed=1)
    pred = random_images(2, 4, 3, 8, 8, seed=2)
    got = psnr(pred, target)
    assert got.shape == (2, 4)
    mse = ((pred.double() - target.double()) ** 2).flatten(2).mean(-1)
    torch.testing.assert_close(got.double(), 10 * torch.log10(1 / mse), atol=1e-4, rtol=0)
    assert psnr(target, target).isinf().all()


# ----------------------------------------------------------------------------------------------
# SSIM


def test_ssim_identical_is_one():
    x = random_images(2, 3, 32, 24)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))


def test_ssim_constant_images_formula():
    # Constant images: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.7
    pred = torch.full((1, 3, 20, 20), a, dtype=torch.float64)
    target = torch.full((1, 3, 20, 20), b, dtype=torch.float64)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    torch.testing.assert_close(ssim(pred, target), torch.tensor([expected], dtype=torch.float64))


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image (dev dependency) not installed")
    pred = random_images(2, 3, 40, 33, seed=3, dtype=torch.float64)
    # a correlated target, so SSIM is far from both 0 and 1
    target = (0.6 * pred + 0.4 * random_images(2, 3, 40, 33, seed=4, dtype=torch.float64)).clamp(0, 1)
    got = ssim(pred, target)
    for i in range(2):
        ref = skm.structural_similarity(
            pred[i].permute(1, 2, 0).numpy(),
            target[i].permute(1, 2, 0).numpy(),
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert 0.2 < ref < 0.95
        assert got[i].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_gradient_matches_finite_differences():
    pred = random_images(1, 2, 13, 12, seed=5, dtype=torch.float64).requires_grad_()
    target = random_images(1, 2, 13, 12, seed=6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: ssim(p, target), (pred,))


def test_ssim_rejects_small_or_mismatched_images():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 30), torch.rand(1, 3, 10, 30))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))


# ----------------------------------------------------------------------------------------------
# LPIPS


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"LPIPS example images not found at {EXAMPLES}")
def test_lpips_reference_distances(no_network):
    ref, p0, p1 = load_example("ex_ref"), load_example("ex_p0"), load_example("ex_p1")
    d = lpips(torch.stack([ref, ref]), torch.stack([p0, p1]))
    # the values printed by the upstream LPIPS test with ImageNet AlexNet + v0.1 linear layers
    assert round(d[0].item(), 3) == 0.722
    assert round(d[1].item(), 3) == 0.138


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_network_guard_catches_the_upstream_download(no_network):
    # Proves the guard used above is effective: upstream's default path downloads AlexNet.
    with pytest.raises(NetworkBlocked):
        lpips_lib.LPIPS(net="alex", verbose=False)


def test_lpips_offline_identity_and_shapes(no_network):
    x = random_images(2, 2, 3, 40, 48)
    assert lpips(x, x).abs().max() < 1e-6
    d = lpips(x, random_images(2, 2, 3, 40, 48, seed=1))
    assert d.shape == (2, 2) and (d > 0.05).all()


def test_lpips_module_is_frozen_and_cached():
    model = get_lpips("cpu")
    assert model is get_lpips(torch.device("cpu"))
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_lpips_gradient_flows_to_prediction():
    target = random_images(1, 3, 48, 48, seed=7)
    pred = random_images(1, 3, 48, 48, seed=8).requires_grad_()
    lpips(pred, target).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in get_lpips("cpu").parameters())

    # The gradient is the real one: compare a directional derivative with central differences.
    v = random_images(1, 3, 48, 48, seed=9) - 0.5
    eps = 1e-3
    with torch.no_grad():
        fd = (lpips(pred + eps * v, target) - lpips(pred - eps * v, target)).item() / (2 * eps)
    assert (pred.grad * v).sum().item() == pytest.approx(fd, rel=0.05)


def test_lpips_missing_weights_names_path_and_script(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="convert_lpips_weights.py") as err:
        get_lpips("cpu", weights=missing)
    assert str(missing) in str(err.value)


def test_lpips_rejects_bad_input():
    with pytest.raises(ValueError, match="3 colour channels"):
        lpips(torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lpips_on_cuda_matches_cpu():
    a, b = random_images(2, 3, 64, 64), random_images(2, 3, 64, 64, seed=1)
    torch.testing.assert_close(lpips(a.cuda(), b.cuda()).cpu(), lpips(a, b), atol=1e-4, rtol=1e-3)
    assert math.isfinite(ssim(a.cuda(), b.cuda()).sum().item())

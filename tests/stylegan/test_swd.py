"""Sliced Wasserstein distance (ProGAN) on synthetic image sets, and the FID/KID maths."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from ganfolk.runtime.errors import InvalidArgument
from services.stylegan.training.data import disc_images
from services.stylegan.training.metrics import (
    INCEPTION_ENV,
    _up,
    extract_features,
    fid,
    inception_from_env,
    kid,
    laplacian_pyramid,
    load_inception,
    pyramid_descriptors,
    swd,
    swd_min_resolution,
)

SMALL = {"nhoods_per_image": 16, "dirs_per_repeat": 32, "dir_repeats": 2}


def _discs(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(disc_images(n, 32, seed)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pyramid_reconstructs_and_swd_of_a_set_with_itself_is_zero() -> None:
    x = _discs(8, 0)
    levels = laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    # Collapsing the pyramid gives the image back: it is a lossless band split.
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + _up(rebuilt)
    torch.testing.assert_close(rebuilt, x)

    result = swd(x, x, **SMALL)
    assert result.resolutions == [32, 16] and result.per_level == [0.0, 0.0] and result.mean == 0.0
    assert set(result.as_dict()) == {"swd_32", "swd_16", "swd_mean"} and "32px" in str(result)


def test_same_distribution_is_much_closer_than_another() -> None:
    same = swd(_discs(256, 1), _discs(256, 2), **SMALL)
    other = swd(_discs(256, 1), _noise(256, 3), **SMALL)
    assert same.mean * 5 < other.mean
    assert all(s < o for s, o in zip(same.per_level, other.per_level, strict=True))
    # Deterministic given the seed, different for another seed.
    assert swd(_discs(256, 1), _discs(256, 2), **SMALL) == same
    assert swd(_discs(256, 1), _discs(256, 2), seed=5, **SMALL) != same


def test_decreases_as_one_set_is_blended_toward_the_other() -> None:
    target = _discs(128, 4)
    discs, noise = _discs(128, 5), _noise(128, 6)
    # Descriptors of the target once, reused for every comparison (as a training loop would).
    reference = pyramid_descriptors(target, nhoods_per_image=16, generator=torch.Generator().manual_seed(0))
    means = []
    for k in (0, 32, 64, 96, 128):  # k of the 128 images drawn from the target's distribution
        mixed = torch.cat([discs[:k], noise[k:]])
        means.append(swd(reference, mixed, **SMALL).mean)
    assert all(a > b for a, b in itertools.pairwise(means)), means


def test_swd_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="smaller than min_resolution"):
        swd(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(InvalidArgument, match="different pyramids"):
        swd(_discs(2, 0), torch.zeros(2, 3, 64, 64), **SMALL)
    with pytest.raises(InvalidArgument, match="square"):
        swd(torch.zeros(2, 3, 32, 16), torch.zeros(2, 3, 32, 16))


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(sa + sb - 2 * root))


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], len(x)

    def k(p: np.ndarray, q: np.ndarray) -> float:
        return float((p @ q / d + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_fid_and_kid_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12))
    b = rng.normal(size=(250, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    assert fid(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-6)
    assert fid(torch.from_numpy(a), a) == pytest.approx(0.0, abs=1e-8)

    x, y = a[:40], b[:40]
    # One subset as large as both sets holds every feature: the plain unbiased MMD².
    assert kid(x, y, num_subsets=1) == pytest.approx(_direct_mmd2(x, y), rel=1e-9)
    assert kid(x, x, num_subsets=3) == pytest.approx(_direct_mmd2(x, x), rel=1e-9)
    assert kid(a, b, num_subsets=5, max_subset_size=50, seed=1) == kid(
        a, b, num_subsets=5, max_subset_size=50, seed=1
    )
    assert kid(a, b, max_subset_size=50) > 10 * abs(kid(a[:150], a[150:], max_subset_size=50))
    with pytest.raises(InvalidArgument, match="widths differ"):
        kid(a, b[:, :5])


class _Detector(torch.nn.Module):
    """NVIDIA's calling convention: uint8 images, return_features=True -> (N, D)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8
        return x.float().mean(dim=(2, 3))


def test_inception_hook_loads_only_a_configured_torchscript(tmp_path: Path) -> None:
    assert inception_from_env("cpu", environ={}) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_Detector()), tmp_path / "detector.pt")
    extractor = inception_from_env("cpu", environ={INCEPTION_ENV: str(tmp_path / "detector.pt")})
    assert extractor is not None
    images = torch.stack([torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 1.0)])
    feats = extract_features(extractor, images.split(1))
    np.testing.assert_array_equal(feats, [[0, 0, 0], [255, 255, 255]])

    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "state_dict.pt")
    with pytest.raises(InvalidArgument, match="not a TorchScript archive"):
        load_inception(tmp_path / "state_dict.pt", "cpu")
    with pytest.raises(FileNotFoundError, match=INCEPTION_ENV):
        load_inception(tmp_path / "absent.pt", "cpu")


def test_small_images_keep_three_pyramid_levels() -> None:
    # ProGAN's 16 px floor from 64 px up; below that 8 px, so a 32 px image has a band between its
    # finest level and the low-pass residual.
    assert [swd_min_resolution(s) for s in (1024, 64, 32, 16, 8)] == [16, 16, 8, 8, 8]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    assert swd(images, images, min_resolution=swd_min_resolution(32)).resolutions == [32, 16, 8]

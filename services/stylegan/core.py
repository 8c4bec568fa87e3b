"""Sampling core: seeds -> images with a loaded generator. No gRPC or NATS here."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ganfolk.v1 import common_pb2
from services.stylegan.latents import LatentMode, z_batch
from services.stylegan.model import Generator

_NOISE_STREAM = 0x9E3779B97F4A7C15  # separates a seed's noise draws from its z draws


@dataclass(frozen=True)
class SampleParams:
    seeds: tuple[int, ...]
    truncation_psi: float = 1.0
    latent_mode: LatentMode = "truncated"
    truncation_bound: float = 0.7
    random_noise: bool = False
    batch_size: int = 8


@dataclass
class Sample:
    seed: int
    image: np.ndarray  # H x W x 3 uint8
    w: np.ndarray  # (style_dim,)


class Sampler:
    """A loaded generator and what sampling needs beside it (mean latent, device)."""

    def __init__(self, generator: Generator, device: str, model: common_pb2.ModelRef) -> None:
        self.g = generator
        self.device = device
        self.model = model
        self._mean_latent: torch.Tensor | None = generator.latent_avg
        self._lock = threading.Lock()

    @property
    def style_dim(self) -> int:
        return int(self.g.style_dim)

    @property
    def size(self) -> int:
        return int(self.g.size)

    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        """The checkpoint's latent_avg, else mean_latent(n) computed once and cached."""
        with self._lock:
            if self._mean_latent is None:
                torch.manual_seed(0)
                self._mean_latent = self.g.mean_latent(n).detach()
            return self._mean_latent

    def _noise(self, seeds: tuple[int, ...]) -> list[torch.Tensor]:
        shapes = [n.shape for n in self.g.make_noise()]
        per_seed = []
        for seed in seeds:
            gen = torch.Generator().manual_seed((seed ^ _NOISE_STREAM) % 2**63)
            per_seed.append([torch.randn(shape[1:], generator=gen) for shape in shapes])
        return [torch.stack([layers[i] for layers in per_seed]).to(self.device) for i in range(len(shapes))]

    @torch.inference_mode()
    def sample(self, params: SampleParams) -> list[Sample]:
        """Images for ``params.seeds``; the same seed gives the same image at any batch size."""
        out: list[Sample] = []
        truncation_latent = self.mean_latent() if params.truncation_psi < 1.0 else None
        for start in range(0, len(params.seeds), params.batch_size):
            seeds = params.seeds[start : start + params.batch_size]
            z = z_batch(seeds, self.style_dim, params.latent_mode, params.truncation_bound).to(self.device)
            w = self.g.get_latent(z)
            images, _ = self.g(
                [w],
                input_is_latent=True,
                truncation=params.truncation_psi,
                truncation_latent=truncation_latent,
                noise=self._noise(seeds) if params.random_noise else None,
                randomize_noise=False,
            )
            if truncation_latent is not None:
                w = truncation_latent + params.truncation_psi * (w - truncation_latent)
            pixels = (
                ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            )
            out.extend(Sample(s, pixels[i], w[i].float().cpu().numpy()) for i, s in enumerate(seeds))
        return out

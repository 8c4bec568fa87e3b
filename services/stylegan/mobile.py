"""Offline demo generator: MobileStyleGAN (FFHQ, 1024 px) as OpenVINO IR, behind the Sample contract.

The ``random-face`` package (PyPI, 2021.7.21.1) ships a MobileStyleGAN — a StyleGAN2 distilled
on FFHQ — exported to OpenVINO IR: ``MappingNetwork.xml/.bin`` (z (1, 512) -> w (1, 512)) and
``SynthesisNetwork.xml/.bin`` (w (1, 512) -> RGB (1, 3, 1024, 1024), about [-1, 1]). The
package's own wrapper imports ``openvino.inference_engine``, an API removed from OpenVINO, so
it is never imported here: the IR files are found in its installed folder and loaded directly
with ``openvino.Core``.

Contract, the same as :class:`services.stylegan.core.Sampler`:

- seed -> z: :func:`services.stylegan.latents.z_batch` (style_dim 512), so a seed has the same
  z whichever backend draws it (the images differ: different weights).
- truncation ψ around a mean latent computed once: the mapping network over
  ``mean_latent_samples`` standard-normal z drawn from ``torch.Generator().manual_seed(0)``.
- one image per synthesis call (the IR is exported for batch 1); ``batch_size`` only groups work.
- the synthesis network has no noise inputs: ``random_noise`` has no effect (always the
  distilled constant noise).
- optional Lanczos downscale to ``output_size`` to keep the demo's images small.

Licence: the weights derive from NVIDIA's FFHQ StyleGAN2 model, which is under non-commercial
terms (NVIDIA Source Code License-NC). This backend is for the local demo only and never the
default (``GANFOLK_STYLEGAN_BACKEND`` defaults to ``torch``); every output's provenance carries
:data:`LICENSE_NOTE` in ``parameters["license"]``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.models import model_ref
from ganfolk.runtime.settings import ConfigError
from services.stylegan.core import Sample, SampleParams, Sampler
from services.stylegan.latents import z_batch

log = logging.getLogger(__name__)

MODEL_NAME = "mobilestylegan-ffhq-openvino"
LICENSE_NOTE = "non-commercial (NVIDIA FFHQ derivative); demo only"
IR_FILES = ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin")
NATIVE_SIZE = 1024
STYLE_DIM = 512


def locate_ir(mobile_dir: str | Path | None = None) -> Path:
    """Folder holding the four IR files: ``mobile_dir`` if given, else ``random_face/data``.

    The package is located with ``importlib.util.find_spec``, which does not import it (its
    ``__init__`` fails on current OpenVINO).
    """
    if mobile_dir is not None:
        folder = Path(mobile_dir).expanduser()
        where = f"GANFOLK_STYLEGAN_MOBILE_DIR={mobile_dir}"
    else:
        spec = importlib.util.find_spec("random_face")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "MobileStyleGAN backend: the random-face package is not installed "
                "(pip install openvino; pip install --no-deps random-face==2021.7.21.1) "
                "and GANFOLK_STYLEGAN_MOBILE_DIR is unset"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
        where = f"the random-face package ({folder})"
    missing = [name for name in IR_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"MobileStyleGAN backend: {where} lacks {', '.join(missing)}")
    return folder


class MobileStyleGANSampler(Sampler):
    """MobileStyleGAN IR on OpenVINO's CPU plugin with :class:`Sampler`'s interface."""

    license_note = LICENSE_NOTE

    def __init__(
        self,
        mobile_dir: str | Path | None = None,
        output_size: int | None = None,
        mean_latent_samples: int = 4096,
        ov_device: str = "CPU",
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "MobileStyleGAN backend needs the openvino package (pip install openvino)"
            ) from exc
        if output_size is not None and not 8 <= output_size <= NATIVE_SIZE:
            raise ConfigError(
                f"GANFOLK_STYLEGAN_OUTPUT_SIZE must be in [8, {NATIVE_SIZE}], got {output_size}"
            )
        self.folder = locate_ir(mobile_dir)
        core = ov.Core()
        mapping = core.read_model(self.folder / "MappingNetwork.xml", self.folder / "MappingNetwork.bin")
        # Dynamic batch for the mapping network only: the mean latent maps thousands of z at once.
        mapping.reshape({mapping.inputs[0]: ov.PartialShape([-1, STYLE_DIM])})
        synthesis = core.read_model(
            self.folder / "SynthesisNetwork.xml", self.folder / "SynthesisNetwork.bin"
        )
        shape = tuple(synthesis.outputs[0].get_shape())
        if shape != (1, 3, NATIVE_SIZE, NATIVE_SIZE):
            raise ConfigError(f"MobileStyleGAN IR in {self.folder}: unexpected output shape {shape}")
        self._mapping: Any = core.compile_model(mapping, ov_device)
        self._synthesis: Any = core.compile_model(synthesis, ov_device, {"PERFORMANCE_HINT": "LATENCY"})
        self._output_size = output_size or NATIVE_SIZE
        self._mean_samples = mean_latent_samples
        self._mean_latent: torch.Tensor | None = None
        self._lock = threading.Lock()  # compiled models' implicit infer requests are not thread-safe
        self.device = "cpu"
        self.model = model_ref(
            MODEL_NAME,
            str(self.folder),
            file_sha256(self.folder / "SynthesisNetwork.bin"),
            random_weights=False,
        )
        log.warning(
            "stylegan backend mobilestylegan: %s (weights derive from NVIDIA FFHQ, non-commercial)",
            self.folder,
        )

    @property
    def style_dim(self) -> int:
        return STYLE_DIM

    @property
    def size(self) -> int:
        return self._output_size

    def _map(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self._mapping({0: np.ascontiguousarray(z, dtype=np.float32)})[0], dtype=np.float32)

    def mean_latent(self, n: int | None = None) -> torch.Tensor:
        """Mean of the mapping network over ``n`` normal z (seeded), computed once and cached."""
        with self._lock:
            if self._mean_latent is None:
                gen = torch.Generator().manual_seed(0)
                z = torch.randn(n or self._mean_samples, STYLE_DIM, generator=gen)
                self._mean_latent = torch.from_numpy(self._map(z.numpy()).mean(axis=0))
            return self._mean_latent

    def _to_pixels(self, image: np.ndarray) -> np.ndarray:
        pixels = ((np.clip(image[0], -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)
        if self._output_size != NATIVE_SIZE:
            size = (self._output_size, self._output_size)
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
        return pixels

    def sample(self, params: SampleParams) -> list[Sample]:
        """Images for ``params.seeds``, one synthesis call per seed."""
        mean = self.mean_latent().numpy() if params.truncation_psi < 1.0 else None
        out: list[Sample] = []
        for seed in params.seeds:
            z = z_batch([seed], STYLE_DIM, params.latent_mode, params.truncation_bound).numpy()
            with self._lock:
                w = self._map(z)
                if mean is not None:
                    w = (mean + params.truncation_psi * (w - mean)).astype(np.float32)
                image = np.asarray(self._synthesis({0: w})[0])
            out.append(Sample(seed, self._to_pixels(image), w[0].copy()))
        return out

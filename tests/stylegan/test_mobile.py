"""MobileStyleGAN demo backend: the random-face package's OpenVINO IR behind the Sample contract."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfolk.runtime.hashing import file_sha256
from ganfolk.runtime.settings import ConfigError
from ganfolk.v1 import stylegan_pb2, stylegan_pb2_grpc
from services.stylegan.core import SampleParams
from services.stylegan.latents import z_batch
from services.stylegan.main import SERVICE
from tests.fixtures.services import serving

_MISSING = [name for name in ("openvino", "random_face") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"MobileStyleGAN demo backend needs {' and '.join(_MISSING)} "
    "(pip install openvino; pip install --no-deps random-face==2021.7.21.1)",
)


@pytest.fixture(scope="module")
def sampler():
    from services.stylegan.mobile import MobileStyleGANSampler

    return MobileStyleGANSampler(mean_latent_samples=1024)


def test_ir_loads_from_the_package_folder(sampler) -> None:
    from services.stylegan.mobile import LICENSE_NOTE, MODEL_NAME

    assert sampler.size == 1024 and sampler.style_dim == 512 and sampler.device == "cpu"
    model = sampler.model
    assert model.name == MODEL_NAME == "mobilestylegan-ffhq-openvino" and not model.random_weights
    assert Path(model.source).name == "data" and Path(model.source).parent.name == "random_face"
    assert model.sha256 == file_sha256(Path(model.source) / "SynthesisNetwork.bin")
    assert sampler.license_note == LICENSE_NOTE and "non-commercial" in LICENSE_NOTE


def test_seed_gives_a_deterministic_face(sampler) -> None:
    first, other = sampler.sample(SampleParams(seeds=(7, 8), truncation_psi=1.0))
    (again,) = sampler.sample(SampleParams(seeds=(7,), truncation_psi=1.0, batch_size=1))
    assert first.image.shape == (1024, 1024, 3) and first.image.dtype == np.uint8
    assert np.array_equal(first.image, again.image) and np.array_equal(first.w, again.w)
    assert np.abs(first.image.astype(int) - other.image.astype(int)).mean() > 10
    # A photo, not noise or a flat field: broad tonal range, smooth neighbouring pixels.
    img = first.image.astype(float)
    assert img.std() > 30 and np.abs(np.diff(img, axis=1)).mean() < 12
    # The seed's z is latents.z_batch's (truncated normal by default), mapped by the IR.
    z = z_batch([7], 512, "truncated", 0.7).numpy()
    assert np.allclose(sampler._map(z)[0], first.w, atol=1e-5)


def test_truncation_uses_a_cached_mean_latent(sampler) -> None:
    mean = sampler.mean_latent()
    assert mean.shape == (512,) and sampler.mean_latent() is mean
    (s,) = sampler.sample(SampleParams(seeds=(7,), truncation_psi=0.5))
    z = z_batch([7], 512, "truncated", 0.7).numpy()
    expected = mean.numpy() + 0.5 * (sampler._map(z)[0] - mean.numpy())
    assert np.allclose(s.w, expected, atol=1e-5)


def test_bad_configuration_is_a_config_error(tmp_path: Path) -> None:
    from services.stylegan.mobile import MobileStyleGANSampler

    with pytest.raises(ConfigError, match=r"lacks MappingNetwork\.xml"):
        MobileStyleGANSampler(tmp_path)
    with pytest.raises(ConfigError, match="OUTPUT_SIZE"):
        MobileStyleGANSampler(output_size=2048)


async def test_served_over_grpc_with_license_in_provenance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GANFOLK_STYLEGAN_CHECKPOINT", raising=False)
    monkeypatch.delenv("GANFOLK_ALLOW_RANDOM_WEIGHTS", raising=False)
    monkeypatch.setenv("GANFOLK_STYLEGAN_BACKEND", "mobilestylegan")
    monkeypatch.setenv("GANFOLK_STYLEGAN_OUTPUT_SIZE", "256")
    monkeypatch.setenv("GANFOLK_STYLEGAN_MEAN_LATENT_SAMPLES", "512")
    async with serving(SERVICE, store_url=str(tmp_path / "objects"), worker_enabled=False) as (_, channel):
        reply = await stylegan_pb2_grpc.StyleGANServiceStub(channel).Sample(
            stylegan_pb2.SampleRequest(
                seed_list=stylegan_pb2.SeedList(seeds=[3, 4]),
                truncation_psi=0.7,
                inline_images=True,
                return_latents=True,
            )
        )
    assert [s.seed for s in reply.samples] == [3, 4]
    images = [np.asarray(Image.open(io.BytesIO(s.image.inline_data))) for s in reply.samples]
    assert all(img.shape == (256, 256, 3) for img in images)
    assert not np.array_equal(images[0], images[1])
    assert len(reply.samples[0].w_latent) == 512
    prov = reply.provenance
    assert prov.models[0].name == "mobilestylegan-ffhq-openvino" and not prov.models[0].random_weights
    assert "non-commercial" in prov.parameters["license"]
    assert prov.parameters["truncation_psi"] == pytest.approx(0.7)

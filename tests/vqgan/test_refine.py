"""The refinement loop in process: golden tiny VQGAN (f2, 32 px) + a tiny random CLIP on CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ganfolk.runtime.errors import ResourceExhausted
from ganfolk.v1 import common_pb2, vqgan_pb2
from services.vqgan import augment as aug
from services.vqgan import ops
from services.vqgan.augment import AugmentParams
from services.vqgan.refine import (
    Progress,
    Prompt,
    RefineParams,
    RefineStopped,
    check_memory,
    embed_prompts,
    spherical_distance,
)
from tests.vqgan.conftest import Models, face

PROMPTS = [Prompt("a thoughtful Brazilian girl"), Prompt("a blurry photo", -0.3)]
QUICK = RefineParams(size=32, iterations=4, cutn=4, step_size=0.05)


def run(core: Any, params: RefineParams, init: Any = "face", **kw: Any) -> Any:
    return core.refine(face() if init == "face" else init, PROMPTS, params, **kw)


def test_golden_vqgan_is_f2(core: Any) -> None:
    assert core.factor == 2 and not core.random_weights
    assert [m.name for m in core.models] == ["vqgan-taming", "tiny-clip-vqgan-test"]


def test_clip_loss_decreases(core: Any) -> None:
    # Augmentations off and cutouts the size of the image: the loss is a function of z alone.
    params = RefineParams(
        size=32, iterations=20, cutn=4, step_size=0.05, augment=AugmentParams(enabled=False)
    )
    losses = run(core, params).losses
    assert len(losses) == 20
    assert losses[-1] < losses[0] - 0.05, losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # With the notebook's augmentations the per-iteration loss is noisy; the clean CLIP loss of the
    # whole image still goes down from the first snapshot to the final image.
    seen: list[Progress] = []
    noisy = run(
        core,
        RefineParams(size=32, iterations=20, cutn=8, step_size=0.05, seed=3, snapshot_every=20),
        on_progress=seen.append,
    )
    start = seen[0].snapshot
    assert start is not None
    assert clean_loss(core, noisy.image) < clean_loss(core, start) - 0.01


def clean_loss(core: Any, pixels: np.ndarray) -> float:
    cfg = core.clip.preprocess_cfg
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        d = spherical_distance(core.clip.model.encode_image(x).float(), embed_prompts(core.clip, PROMPTS))
    w = torch.tensor([p.weight for p in PROMPTS])
    return float((w.abs() * (d * w.sign()).mean(0)).sum())


def test_same_seed_same_result_other_seed_differs(core: Any) -> None:
    a = run(core, QUICK)
    b = run(core, QUICK)
    assert np.array_equal(a.image, b.image) and a.losses == b.losses
    c = run(core, RefineParams(size=32, iterations=4, cutn=4, step_size=0.05, seed=1))
    assert c.losses != a.losses
    # Without an init image the start is random codes from the same seed.
    r1, r2 = run(core, QUICK, init=None), run(core, QUICK, init=None)
    assert np.array_equal(r1.image, r2.image) and r1.image.shape == (32, 32, 3)


def test_snapshots_at_asked_iterations(core: Any) -> None:
    seen: list[Progress] = []
    params = RefineParams(size=32, iterations=7, cutn=2, snapshot_every=3)
    result = run(core, params, on_progress=seen.append)
    assert [p.iteration for p in seen] == list(range(7))
    assert [p.iteration for p in seen if p.snapshot is not None] == [0, 3, 6]
    assert all(
        p.snapshot.shape == (32, 32, 3) and p.snapshot.dtype == np.uint8
        for p in seen
        if p.snapshot is not None
    )
    assert result.image.shape == (32, 32, 3) and result.iterations == 7


def test_should_stop_ends_the_loop_within_one_iteration(core: Any) -> None:
    seen: list[Progress] = []
    with pytest.raises(RefineStopped) as stopped:
        run(
            core,
            RefineParams(size=32, iterations=100, cutn=2),
            on_progress=seen.append,
            should_stop=lambda: len(seen) >= 3,
        )
    assert stopped.value.iteration == 3 and len(seen) == 3
    assert core.active == 0


def test_init_weight_keeps_the_result_near_the_init(core: Any) -> None:
    free = run(core, RefineParams(size=32, iterations=12, cutn=4, step_size=0.1))
    held = run(core, RefineParams(size=32, iterations=12, cutn=4, step_size=0.1, init_weight=1e4))
    start = run(core, RefineParams(size=32, iterations=1, cutn=1, step_size=1e-9))
    dist = lambda r: np.abs(r.image.astype(int) - start.image.astype(int)).mean()  # noqa: E731
    assert dist(held) < dist(free)


def test_augmentations_are_deterministic_and_differentiable() -> None:
    x = torch.rand(6, 3, 24, 24, requires_grad=True)
    a = aug.augment(x, AugmentParams(), torch.Generator().manual_seed(9))
    b = aug.augment(x, AugmentParams(), torch.Generator().manual_seed(9))
    c = aug.augment(x, AugmentParams(), torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(aug.augment(x, AugmentParams(enabled=False), torch.Generator()), x)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Zero strength is the identity; full strength at p=1 changes every cutout.
        assert torch.allclose(aug.affine(x, 0.0, 0.0, 1.0, gen), x, atol=1e-5)
        assert torch.allclose(aug.perspective(x, 0.0, 1.0, gen), x, atol=1e-4)
        assert torch.allclose(aug.color_jitter(x, 0.0, 0.0, 1.0, gen), x, atol=1e-5)
        assert torch.equal(aug.hflip(x, 1.0, gen), x.flip(-1))
        assert torch.equal(aug.sharpness(x, 0.3, 0.0, gen), x)
        for out in (
            aug.affine(x, 30.0, 0.1, 1.0, gen),
            aug.perspective(x, 0.5, 1.0, gen),
            aug.color_jitter(x, 0.1, 0.5, 1.0, gen),
            aug.sharpness(x, 0.3, 1.0, gen),
        ):
            assert out.shape == x.shape
            assert ((out - x).abs().flatten(1).amax(1) > 1e-3).all()


def test_memory_check_names_the_knob(core: Any) -> None:
    est = core.check_memory(32, 4)
    budget = est.total + est.clip_bytes  # fits cutn 8 at 32 px, not much more
    with pytest.raises(ResourceExhausted, match=r"cutn 64 needs an estimated .* lower cutn to 8 or less"):
        check_memory(core.vqgan, core.clip, 32, 64, budget)
    big = core.check_memory(256, 1)
    with pytest.raises(ResourceExhausted, match=r"lower size to \d+ px or less"):
        check_memory(core.vqgan, core.clip, 256, 1, big.total * 0.5)


def _request(**params: Any) -> vqgan_pb2.RefineRequest:
    return vqgan_pb2.RefineRequest(
        prompts=[common_pb2.WeightedPrompt(text="a portrait")], params=vqgan_pb2.RefineParams(**params)
    )


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"iterations": 0}, ValueError, "iterations must be at least 1"),
        ({"size": 33}, ValueError, "not a multiple of the VQGAN downsampling factor 2; use 32 or 34"),
        ({"size": 1}, ValueError, "at least the VQGAN downsampling factor"),
        ({"cutn": 0}, ValueError, "cutn must be at least 1"),
        ({"step_size": 0.0}, ValueError, "step_size must be in (0, 10]"),
        ({"size": 4096}, ResourceExhausted, "GANFOLK_VQGAN_MAX_SIZE"),
        ({"cutn": 1000}, ResourceExhausted, "lower cutn"),
        ({"iterations": 10**6}, ValueError, "over the limit"),
        ({"augmentations": vqgan_pb2.Augmentations(hflip_p=1.5)}, ValueError, "augmentations.hflip_p"),
        ({"augmentations": vqgan_pb2.Augmentations(noise_factor=-1)}, ValueError, "noise_factor"),
    ],
)
def test_bad_params_say_what_to_fix(
    models: Models, params: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error) as err:
        ops.refine_params(_request(**params), models.settings(), factor=2)
    assert message in str(err.value)


def test_prompts_and_defaults(models: Models) -> None:
    settings = models.settings()
    with pytest.raises(ValueError, match="no prompts"):
        ops.prompts_of(vqgan_pb2.RefineRequest(prompts=[common_pb2.WeightedPrompt(text="  ")]), settings)
    with pytest.raises(ValueError, match="positive weight"):
        ops.prompts_of(
            vqgan_pb2.RefineRequest(prompts=[common_pb2.WeightedPrompt(text="x", weight=-1)]), settings
        )
    prompts = ops.prompts_of(
        vqgan_pb2.RefineRequest(
            prompts=[common_pb2.WeightedPrompt(text="a"), common_pb2.WeightedPrompt(text="b", weight=-0.5)]
        ),
        settings,
    )
    assert prompts == [Prompt("a", 1.0), Prompt("b", -0.5)]
    p = ops.refine_params(_request(), models.settings(vqgan_default_size=512), factor=16)
    # The GANfolk notebook defaults.
    assert (p.size, p.step_size, p.iterations, p.cutn, p.cut_pow, p.init_weight) == (
        512,
        0.01,
        50,
        64,
        1.0,
        0.0,
    )
    assert p.augment == AugmentParams()
    # A task without a seed gets one from its task id, so a retry refines the same way.
    req = _request()
    req.meta.task_id = "job-1.refine.0"
    assert ops.refine_params(req, settings, 2).seed == ops.refine_params(req, settings, 2).seed

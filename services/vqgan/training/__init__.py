"""Fine-tuning a taming VQGAN on the shared training runtime (:mod:`services.training`).

* :mod:`.discriminator` -- taming's PatchGAN ``NLayerDiscriminator``, hinge and vanilla D losses.
* :mod:`.lpips` -- taming's LPIPS (VGG16 + five ``lin`` layers), loaded from a state dict only.
* :mod:`.objective` -- ``VQLPIPSWithDiscriminator``'s terms and the adaptive discriminator weight.
"""

from services.vqgan.training.discriminator import (
    NLayerDiscriminator,
    hinge_d_loss,
    init_weights,
    vanilla_d_loss,
)
from services.vqgan.training.lpips import LPIPS, LPIPSError, lpips_state_from
from services.vqgan.training.objective import (
    LossConfig,
    VQLoss,
    adaptive_weight,
    calculate_adaptive_weight,
)

__all__ = [
    "LPIPS",
    "LPIPSError",
    "LossConfig",
    "NLayerDiscriminator",
    "VQLoss",
    "adaptive_weight",
    "calculate_adaptive_weight",
    "hinge_d_loss",
    "init_weights",
    "lpips_state_from",
    "vanilla_d_loss",
]

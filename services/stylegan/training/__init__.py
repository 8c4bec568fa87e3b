"""Building blocks for training a StyleGAN2 generator in rosinality's format.

* :mod:`.data` -- image folders, store prefixes and rosinality LMDBs, decoded once into a
  per-node cache and served as [-1, 1] tensors; the synthetic disc dataset for smoke tests.
* :mod:`.checkpoints` -- rosinality training checkpoints kept in a folder or the object store.
* :mod:`.metrics` -- sliced Wasserstein distance (no downloads) and the optional FID/KID.
* :mod:`.losses` -- rosinality's logistic/non-saturating losses, R1 and path-length regularisers.
* :mod:`.augment` -- ADA: the "bgc" augmentation pipeline, the adaptive-p controller and the
  ``--aug none|ada|fixed:P`` parser.
"""

from services.stylegan.training.augment import (
    AdaptiveP,
    AugmentConfig,
    AugmentPipe,
    AugmentSpec,
    AugmentSpecError,
    build_augment,
    parse_augment,
)
from services.stylegan.training.losses import (
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
)

__all__ = [
    "AdaptiveP",
    "AugmentConfig",
    "AugmentPipe",
    "AugmentSpec",
    "AugmentSpecError",
    "build_augment",
    "d_logistic_loss",
    "d_r1_loss",
    "g_nonsaturating_loss",
    "g_path_regularize",
    "parse_augment",
]

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
from services.stylegan.training.checkpoints import (
    CheckpointError,
    CheckpointOutput,
    CheckpointRef,
    load_training_checkpoint,
    open_output,
)
from services.stylegan.training.data import (
    DatasetError,
    DatasetInfo,
    ImageDataset,
    batches,
    check_dataset,
    make_disc_dataset,
    make_loader,
    prepare_dataset,
)
from services.stylegan.training.losses import (
    d_logistic_loss,
    d_r1_loss,
    g_nonsaturating_loss,
    g_path_regularize,
)
from services.stylegan.training.metrics import SWDResult, fid, inception_from_env, kid, swd

__all__ = [
    "AdaptiveP",
    "AugmentConfig",
    "AugmentPipe",
    "AugmentSpec",
    "AugmentSpecError",
    "CheckpointError",
    "CheckpointOutput",
    "CheckpointRef",
    "DatasetError",
    "DatasetInfo",
    "ImageDataset",
    "SWDResult",
    "batches",
    "build_augment",
    "check_dataset",
    "d_logistic_loss",
    "d_r1_loss",
    "fid",
    "g_nonsaturating_loss",
    "g_path_regularize",
    "inception_from_env",
    "kid",
    "load_training_checkpoint",
    "make_disc_dataset",
    "make_loader",
    "open_output",
    "parse_augment",
    "prepare_dataset",
    "swd",
]

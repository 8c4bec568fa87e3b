"""Building blocks for training a StyleGAN2 generator in rosinality's format.

* :mod:`.data` -- image folders, store prefixes and rosinality LMDBs, decoded once into a
  per-node cache and served as [-1, 1] tensors; the synthetic disc dataset for smoke tests.
* :mod:`.checkpoints` -- rosinality training checkpoints kept in a folder or the object store.
* :mod:`.metrics` -- sliced Wasserstein distance (no downloads) and the optional FID/KID.
"""

"""The training runtime both models share: process groups (:mod:`.dist`), run outputs with atomic,
hashed checkpoints (:mod:`.output`) and the ``torchrun`` launcher (:mod:`.launch`).

StyleGAN2 (``services.stylegan.training``) and the VQGAN (``services.vqgan.training``) build their
loops on these; the dataset cache and the progress reporters live in ``services.stylegan.training``
(``data``, ``report``, ``progress``) and are model-neutral too.
"""

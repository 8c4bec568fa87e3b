"""CLIP scoring service: open_clip embeddings, prompt-image ranking, dynamic batching.

Import :mod:`services.clip.loader` for ``load_clip`` (it pulls in open_clip and torchvision).
"""

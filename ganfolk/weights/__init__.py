"""Public checkpoints for a machine with internet: ``ganfolk models list`` / ``ganfolk models pull``.

``models.toml`` (shipped with the package) lists each public checkpoint the pipeline uses:
its URL (or open_clip pretrained tag), published digest where there is one, size, licence,
and the ``GANFOLK_*`` settings it fills. ``ganfolk models pull`` downloads with resume,
verifies, stores each file as ``models/<file>`` and prints the settings. Nothing else in
GANfolk reaches a public host: ``make demo``, the tests and CI never call it.
"""

from ganfolk.weights.download import ChecksumError, DownloadError, download
from ganfolk.weights.manifest import ManifestError, ModelEntry, ModelFile, load_manifest

__all__ = [
    "ChecksumError",
    "DownloadError",
    "ManifestError",
    "ModelEntry",
    "ModelFile",
    "download",
    "load_manifest",
]

"""Training-set tooling behind ``ganfolk dataset``: collect, filter, prepare, export, attribute.

A command-line tool, not a served service: it has no gRPC or NATS side and no ``main.py``. It
lives under ``services/`` because it drives align's public functions (detection, warping,
inpainting) directly, and the runtime package must not import services; ``ganfolk/cli.py``
reaches it by module name. See ``docs/dataset.md``.
"""

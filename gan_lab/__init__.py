"""gan_lab: GAN experiments on PyTorch Lightning + Hydra.

The Python API, for scripts and notebooks (each name is imported on first use, so
``import gan_lab`` stays light)::

    import gan_lab
    metrics = gan_lab.train(["experiment=ring_mlp", "train.iterations=500"])  # as gan-train
    module = gan_lab.load("outputs/.../checkpoints/last.ckpt")  # GANModule in eval mode
    samples = module.generate(16)                                # in data space
    metrics = gan_lab.evaluate("outputs/.../checkpoints/last.ckpt")  # as gan-evaluate
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["evaluate", "load", "train"]


def __getattr__(name: str) -> Any:
    # train and evaluate are the CLI modules themselves, made callable (gan_lab/train.py).
    if name in ("train", "evaluate"):
        return importlib.import_module(f"gan_lab.{name}")
    if name == "load":
        from gan_lab.loading import load

        return load
    raise AttributeError(f"module 'gan_lab' has no attribute {name!r}")

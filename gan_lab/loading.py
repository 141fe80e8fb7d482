"""A checkpoint -> a ready GANModule (``gan_lab.load``), without the dataset on disk.

Every gan_lab checkpoint carries the resolved run config and the sample shape, which is all it
takes to rebuild the nets; the weights then come from its ``state_dict``. Loading is safe
(``weights_only=True``, gan_lab.checkpoint_io) unless ``trust_checkpoint=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gan_lab.build import build_datamodule, build_module
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.errors import BadFileError, UsageError, UserError
from gan_lab.gan_module import GANModule


def load(
    path: str | Path, device: str | torch.device = "cpu", trust_checkpoint: bool = False
) -> GANModule:
    """The GANModule of a gan_lab checkpoint, on ``device`` (``"auto"``: a GPU if there is
    one), in eval mode, with the iteration it was saved at in ``module.iteration``.

    ``module.generate(n)`` then gives ``n`` samples in data space. Raises a ``UserError``
    (gan_lab.errors) for a missing, foreign or unsafe file.
    """
    path = Path(path)
    target = resolve_device(device)
    checkpoint = load_checkpoint_file(path, trust=trust_checkpoint)
    cfg = stored_config(checkpoint, path)
    module = restore_module(cfg, checkpoint, stored_sample_shape(checkpoint, cfg))
    return module.to(target).eval()


def stored_config(checkpoint: dict[str, Any], path: Path) -> DictConfig:
    """The run config a gan_lab checkpoint carries."""
    stored = checkpoint.get("gan_lab", {}).get("config")
    if stored is None:
        raise BadFileError(
            f"checkpoint {path} has no gan_lab config: pass a .ckpt written by gan_lab.train"
        )
    return OmegaConf.create(stored)


def stored_sample_shape(checkpoint: dict[str, Any], cfg: DictConfig) -> tuple[int, ...]:
    """The sample shape the checkpoint records; checkpoints from before it did take it from
    the data module, which every gan_lab data module knows from its config alone."""
    shape = checkpoint.get("gan_lab", {}).get("sample_shape")
    if shape is not None:
        return tuple(shape)
    return tuple(build_datamodule(cfg).sample_shape)


def restore_module(
    cfg: DictConfig, checkpoint: dict[str, Any], sample_shape: tuple[int, ...]
) -> GANModule:
    """``cfg``'s GANModule with the checkpoint's weights and progress (not its RNG state).

    The caller's global RNG is left as it was: the nets' initial weights, drawn from it and
    then overwritten, are no business of a notebook's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        module = build_module(cfg, sample_shape)
    module.load_state_dict(checkpoint["state_dict"])
    module.restore_progress(checkpoint)
    return module


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; a CUDA device must exist."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise UsageError(f"device={name}: not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}: this machine has no CUDA device; use device=cpu")
    return device

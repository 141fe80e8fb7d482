"""Sample grids from a fixed z (images) or scatter/histogram plots (toy data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gan_lab.arguments import Count

# Grids of small images are enlarged (nearest neighbour, whole pixels) until each image is at
# least MIN_IMAGE_SIZE px, by at most MAX_UPSCALE: 8x8 digits x4 (a 274 px grid of 64), 28x28
# Fashion-MNIST x2, 32x32 and larger images as they are. A viewer's own smoothing blurs an 82 px
# grid of 8x8 digits into noise; blocks of whole pixels stay what G drew.
MIN_IMAGE_SIZE = 32
MAX_UPSCALE = 8


def upscale_factor(height: int, width: int) -> int:
    """Integer factor that brings an image's short side to ``MIN_IMAGE_SIZE`` px (1 to 8)."""
    return max(1, min(MAX_UPSCALE, -(-MIN_IMAGE_SIZE // max(1, min(height, width)))))


def image_grid(samples: Tensor, nrow: int | None = None) -> Tensor:
    """(N, C, H, W) samples in [-1, 1] -> one (C, H', W') grid in [0, 1], small images
    enlarged by ``upscale_factor`` (nearest neighbour) before they are tiled."""
    nrow = nrow or max(1, int(len(samples) ** 0.5))
    factor = upscale_factor(*samples.shape[-2:])
    samples = samples.float().clamp(-1, 1)
    if factor > 1:
        samples = samples.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return make_grid(samples, nrow=nrow, normalize=True, value_range=(-1, 1))


def toy_plot(fake: Tensor, real: Tensor, path: Path, title: str) -> None:
    """Scatter (2-D) or histogram (1-D) of generated samples over real ones, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    fake, real = fake.float().cpu().flatten(1), real.float().cpu().flatten(1)
    if fake.shape[1] == 1:
        bins = torch.linspace(
            float(min(real.min(), fake.min())), float(max(real.max(), fake.max())), 60
        ).numpy()
        ax.hist(real[:, 0].numpy(), bins=bins, alpha=0.5, density=True, label="data")
        ax.hist(fake[:, 0].numpy(), bins=bins, alpha=0.5, density=True, label="G(z)")
        ax.legend()
    else:
        ax.scatter(real[:, 0], real[:, 1], s=2, alpha=0.3, label="data")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, alpha=0.6, label="G(z)")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


class SampleGrid(L.Callback):
    """Every ``every_n_iterations``, draws samples from the module's fixed z and saves a PNG.

    The PNG goes to ``<dirpath>/iter_XXXXXXX.png`` and, as an image "samples" at step XXXXXXX, to
    every logger that takes images (TensorBoard, W&B). Image runs also save, once, a grid of as
    many real images (``<dirpath>/real.png``, logged as "real") to set beside them. Only rank 0
    writes. Toy plots use the module's sample noise (the same z every time) and real images come
    from the datamodule's own seeded generator, so drawing never touches the training RNG.
    """

    def __init__(
        self, dirpath: str, every_n_iterations: Count = 500, num_toy_samples: Count = 2000
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_iterations = every_n_iterations
        self.num_toy_samples = num_toy_samples

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.iteration % self.every_n_iterations == 0:
            self.draw(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.draw_real(trainer, pl_module)
        if pl_module.iteration == 0:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if pl_module.iteration % self.every_n_iterations:
            self.draw(trainer, pl_module)

    @rank_zero_only
    def draw(self, trainer: L.Trainer, pl_module: Any) -> Path:
        """Save and log the current samples; returns the PNG path."""
        iteration = pl_module.iteration
        path = self.dirpath / f"iter_{iteration:07d}.png"
        datamodule = trainer.datamodule
        if datamodule is not None and datamodule.kind == "toy":
            fake = pl_module.generate(self.num_toy_samples)
            real = datamodule.real_samples(self.num_toy_samples)
            toy_plot(fake, real, path, f"iteration {iteration}")
            image = _read_png(path)
        else:
            image = image_grid(pl_module.generate(z=pl_module.fixed_z).cpu())
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, path)
        _log_image(trainer, "samples", image, path, iteration)
        return path

    @rank_zero_only
    def draw_real(self, trainer: L.Trainer, pl_module: Any) -> Path | None:
        """Save and log a grid of real training images laid out like the fake grid, once per
        run (a resumed run keeps its ``real.png``); returns its path, None when nothing was
        drawn. Toy plots already show the data."""
        datamodule = trainer.datamodule
        path = self.dirpath / "real.png"
        if datamodule is None or datamodule.kind != "image":
            return None
        if pl_module.iteration > 0 and path.exists():
            return None
        n = len(pl_module.fixed_z)
        size = datamodule.num_samples("train")
        # real_samples draws from a generator seeded by the data seed, not the global RNG.
        real = datamodule.real_samples(n if size is None else min(n, size), "train")
        image = image_grid(real.cpu(), nrow=max(1, int(n**0.5)))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, path)
        _log_image(trainer, "real", image, path, pl_module.iteration)
        return path


def _log_image(trainer: L.Trainer, key: str, image: Tensor, path: Path, step: int) -> None:
    """``image`` (its PNG at ``path``) at ``step`` to every logger that takes images."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key, [path.as_posix()], step=step)


def _read_png(path: Path) -> Tensor:
    from torchvision.io import read_image

    return read_image(str(path))[:3].float() / 255.0

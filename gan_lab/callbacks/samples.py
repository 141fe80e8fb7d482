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


def image_grid(samples: Tensor, nrow: int | None = None) -> Tensor:
    """(N, C, H, W) samples in [-1, 1] -> one (C, H', W') grid in [0, 1]."""
    nrow = nrow or max(1, int(len(samples) ** 0.5))
    return make_grid(samples.float().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1))


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

    The PNG goes to ``<dirpath>/iter_XXXXXXX.png`` and, as an image at step XXXXXXX, to every
    logger that takes images (TensorBoard, W&B). Only rank 0 writes. Toy plots use the module's
    sample noise (the same z every time), so drawing never touches the training RNG.
    """

    def __init__(self, dirpath: str, every_n_iterations: int = 500, num_toy_samples: int = 2000):
        self.dirpath = Path(dirpath)
        self.every_n_iterations = every_n_iterations
        self.num_toy_samples = num_toy_samples

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.iteration % self.every_n_iterations == 0:
            self.draw(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
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
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", image, global_step=iteration)
            elif isinstance(logger, WandbLogger):
                logger.log_image("samples", [path.as_posix()], step=iteration)
        return path


def _read_png(path: Path) -> Tensor:
    from torchvision.io import read_image

    return read_image(str(path))[:3].float() / 255.0

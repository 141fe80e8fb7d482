"""The alternating D/G updates of Goodfellow et al. (2014), Algorithm 1, as a LightningModule."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from gan_lab.config import TrainSettings
from gan_lab.distributed import gather_objects, is_distributed, own_entry, rank_and_world
from gan_lab.ema import EMA
from gan_lab.instance_noise import InstanceNoise
from gan_lab.losses import GANLoss
from gan_lab.nan_guard import NonFiniteGuard
from gan_lab.priors import Prior
from gan_lab.regularizers import Regularizer
from gan_lab.restore import (
    apply_optimizer_updates,
    check_weights_fit,
    optimizer_updates,
    reopen_training,
)
from gan_lab.rng_state import capture_rng_state, restore_rng_state, seeded_generator
from gan_lab.stopping import Diverged, StoppedEarly

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
log = logging.getLogger(__name__)


@dataclass
class GANParts:
    """What one GAN is made of: each field is one config group's object (gan_lab.build)."""

    generator: nn.Module
    discriminator: nn.Module
    loss: GANLoss
    prior: Prior
    optimizer_g: OptimizerFactory
    optimizer_d: OptimizerFactory
    regularizer: Regularizer | None = None
    instance_noise: InstanceNoise | None = None
    # The shape of one sample, (C, H, W) or (D,): the nets were sized for it.
    sample_shape: tuple[int, ...] | None = None


def _make_optimizer(
    factory: OptimizerFactory, params: Iterable[nn.Parameter], device: torch.device
) -> torch.optim.Optimizer:
    """``factory(params)``, with ``fused=True`` on CUDA when the optimizer has fused kernels.

    Fused Adam/AdamW/SGD update every parameter in one kernel launch; on CPU torch's default
    (per-parameter loops) is kept. A ``fused`` set in the optimizer config wins.
    """
    if device.type == "cuda" and isinstance(factory, functools.partial):
        accepts = "fused" in inspect.signature(factory.func).parameters
        if accepts and "fused" not in factory.keywords:
            return factory(params, fused=True)
    return factory(params)


class GANModule(L.LightningModule):
    """Trains a generator and a discriminator with manual optimization.

    One *iteration* is ``k_d_steps`` discriminator updates, each on its own real minibatch and
    fresh noise, followed by one generator update. One ``training_step`` call is one iteration,
    and every logger's step is ``iteration`` (the one finished); ``trainer.global_step`` counts
    every ``optimizer.step()`` (k + 1 per iteration) and is never used for cadence here.

    Training noise comes from torch's global RNG (seeded by the run). Noise for samples and
    metrics comes from generators seeded by ``sample_seed`` (the run seed), so observing a run
    never draws from the training stream.
    """

    def __init__(
        self,
        parts: GANParts,
        settings: TrainSettings | None = None,
        config: dict | None = None,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        settings = settings or TrainSettings()
        self.automatic_optimization = False
        self.generator = parts.generator
        self.discriminator = parts.discriminator
        self.loss = parts.loss
        self.prior = parts.prior
        self.optimizer_g_factory = parts.optimizer_g
        self.optimizer_d_factory = parts.optimizer_d
        self.regularizer = parts.regularizer
        self.instance_noise = parts.instance_noise
        self.k_d_steps = settings.k_d_steps
        self.generator_ema = (
            EMA(parts.generator, settings.ema_decay, settings.ema_warmup)
            if settings.ema_decay
            else None
        )
        # The resolved run config travels in every checkpoint so evaluate.py can rebuild the run.
        self.config = config
        self.sample_seed = sample_seed
        # Stored in checkpoints too, so gan_lab.load rebuilds the nets without the data.
        self.sample_shape = parts.sample_shape
        # A fixed z makes successive sample grids comparable; a buffer so resume keeps it.
        self.register_buffer("fixed_z", self.sample_noise(settings.num_fixed_samples, "fixed_z"))
        self.iteration = 0
        self.compile_nets = settings.compile
        self.channels_last = settings.channels_last
        self.nan_guard = NonFiniteGuard(
            settings.on_nan, settings.nan_check_every, settings.max_skips
        )
        # Set when training is to end before its budget; raised before the next iteration.
        self.stopped: StoppedEarly | None = None
        # Where this run started and each resume's changed settings (gan_lab.resume), carried
        # in every checkpoint and in the run's done record.
        self.lineage: dict[str, Any] = {"started_from": None, "resumes": []}
        # Optimizer settings this run changes from the checkpoint it resumes (on_load_checkpoint);
        # None when the fit does not resume one.
        self._optimizer_updates: dict[str, set[str]] | None = None

    def configure_model(self) -> None:
        # nn.Module.compile works in place, so state_dict keys (and checkpoints) stay the same.
        if self.compile_nets:
            self.generator.compile()
            self.discriminator.compile()

    def on_train_start(self) -> None:
        if self._optimizer_updates is not None:
            optimizer_g, optimizer_d = self.trainer.optimizers
            apply_optimizer_updates({"g": optimizer_g, "d": optimizer_d}, self._optimizer_updates)
            self._optimizer_updates = None

    def setup(self, stage: str) -> None:
        # Here, not in on_fit_start: a resumed fit restores each rank's RNG after setup
        # (on_load_checkpoint), and that state must not be re-seeded.
        if stage == "fit" and self.trainer.world_size > 1:
            # Every rank was seeded alike; offset the noise so ranks draw different z.
            torch.manual_seed(torch.initial_seed() + 7919 * self.global_rank)

    def on_fit_start(self) -> None:
        # channels_last lets cuDNN pick NHWC kernels for convs (tensor cores); no gain on CPU.
        if self.channels_last and self.device.type == "cuda":
            for net in (self.generator, self.discriminator):
                net.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # Lightning moves the module to its device before calling this, so self.device is known.
        return [
            _make_optimizer(self.optimizer_g_factory, self.generator.parameters(), self.device),
            _make_optimizer(self.optimizer_d_factory, self.discriminator.parameters(), self.device),
        ]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        """One iteration: ``batch`` holds k real minibatches, shape (k, B, *sample_shape)."""
        if batch.shape[0] != self.k_d_steps:
            raise ValueError(
                f"training batch holds {batch.shape[0]} minibatches but k_d_steps="
                f"{self.k_d_steps}; set datamodule.batches_per_step = k_d_steps"
            )
        optimizer_g, optimizer_d = self.optimizers()
        d_stats = [self.discriminator_step(real, optimizer_d) for real in batch.unbind(0)]
        g_loss = self.generator_step(batch.shape[1], optimizer_g)
        self.iteration += 1

        if self.nan_guard.due(self.iteration):
            self.check_finite()
        if not self._is_log_step():
            return
        stats = {key: torch.stack([s[key] for s in d_stats]).mean() for key in d_stats[0]}
        stats["train/g_loss"] = g_loss
        stats["train/iteration"] = float(self.iteration)
        if self.nan_guard.on_nan == "skip":
            stats["train/skipped"] = float(self.nan_guard.skipped)
        # Under DDP the logged values are rank means; logging only on log steps keeps the
        # all-reduce off the other iterations.
        self.log_dict(stats, on_step=True, on_epoch=False, sync_dist=self.trainer.world_size > 1)
        # A logged "step" is the x-axis Lightning gives every logger (its own counter is one
        # behind: it counts batches finished before this one).
        self.log("step", float(self.iteration), on_step=True, on_epoch=False)

    def _is_log_step(self) -> bool:
        # Lightning sends on-step values to the loggers every log_every_n_steps iterations only;
        # logging in between costs Python time per key (and host syncs on GPU) for nothing.
        # The last iteration always logs, so the final losses reach callback_metrics.
        trainer = self.trainer
        return (
            self.iteration % trainer.log_every_n_steps == 0
            or self.iteration >= trainer.num_training_batches
        )

    def judge(self, x: Tensor) -> Tensor:
        """D's logits for ``x``, through the instance noise when it is enabled."""
        if self.instance_noise is not None:
            x = self.instance_noise(x, self.iteration)
        return self.discriminator(x)

    def discriminator_step(self, real: Tensor, optimizer: LightningOptimizer) -> dict[str, Tensor]:
        """One D update on a real minibatch and fresh noise; G's parameters get no gradient."""
        with self.toggled_optimizer(optimizer):
            with torch.no_grad():
                fake = self.generator(self.prior.sample(real.shape[0], device=real.device))
            real_logits = self.judge(real)
            fake_logits = self.judge(fake)
            loss = self.loss.d_loss(real_logits, fake_logits)
            total = loss
            if self.regularizer is not None and self.iteration % self.regularizer.every == 0:
                # Lazy regularization (StyleGAN2): apply every n-th iteration, scaled by n.
                total = (
                    total
                    + self.regularizer(self.discriminator, real, fake) * self.regularizer.every
                )
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(total)
            if self.nan_guard.allow_step("d_loss", total.detach(), self.iteration + 1):
                optimizer.step()
            self.loss.after_d_step(self.discriminator)
        diagnostics = self.loss.diagnostics(real_logits.detach(), fake_logits.detach())
        return {
            "train/d_loss": loss.detach(),
            **{f"train/{key}": value for key, value in diagnostics.items()},
        }

    def generator_step(self, batch_size: int, optimizer: LightningOptimizer) -> Tensor:
        """One G update on fresh noise; D's parameters get no gradient."""
        with self.toggled_optimizer(optimizer):
            fake = self.generator(self.prior.sample(batch_size, device=self.fixed_z.device))
            loss = self.loss.g_loss(self.judge(fake))
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.nan_guard.allow_step("g_loss", loss.detach(), self.iteration + 1):
                optimizer.step()
        if self.generator_ema is not None:
            # ``iteration`` counts the G steps before this one, and a resumed run restores it.
            self.generator_ema.update(self.generator, self.iteration)
        return loss.detach()

    def check_finite(self) -> bool:
        """Run the non-finite guard now (one host sync); False: the weights are not to be saved.

        On failure training stops after this iteration (``request_stop``); checkpoint callbacks
        call this before writing so a diverged model never replaces the last good checkpoint.
        """
        if not self.nan_guard.check() and not isinstance(self.stopped, Diverged):
            reason = "non-finite" if self.nan_guard.on_nan == "stop" else "max-skips"
            message = self.nan_guard.stop_message or reason
            if rank_and_world()[0] == 0:  # every rank decided alike (nan_guard); one says so
                print(f"\n[gan_lab] {message}", file=sys.stderr)
            self.stopped = Diverged(message, self.iteration, reason)
        return self.stop_reason != "non-finite"

    @property
    def stop_reason(self) -> str | None:
        """Why training ends early: None, "non-finite", "max-skips", "SIGINT" or "SIGTERM"."""
        return self.stopped.reason if self.stopped is not None else None

    def request_stop(self, error: StoppedEarly) -> None:
        """End training before the next iteration with ``error`` (the first request wins).

        The running iteration finishes (its logging, samples, checkpoint); raising at the next
        ``on_train_batch_start`` rather than setting ``trainer.should_stop`` keeps Lightning from
        re-sending stale logged values and from running the end-of-training hooks.
        """
        if self.stopped is None:
            self.stopped = error

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.stopped is not None:
            raise self.stopped

    def on_train_end(self) -> None:
        # The final check, for losses that went non-finite since the last periodic one.
        self.check_finite()

    # ------------------------------------------------------------------ sampling
    def sample_noise(self, n: int, purpose: str = "samples") -> Tensor:
        """``n`` latent vectors for ``purpose``, the same on every call; never the training RNG.

        Drawn on the CPU, so a run gives the same z on every device; ``generate`` moves them.
        """
        return self.prior.sample(n, generator=seeded_generator(self.sample_seed, purpose))

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for samples and metrics: the EMA copy when enabled."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    @torch.inference_mode()
    def generate(
        self, n: int | None = None, batch_size: int = 1024, z: Tensor | None = None
    ) -> Tensor:
        """Generate ``n`` samples (or one per row of ``z``) in eval mode, in batches.

        Samples are in data space, shape ``(n, *sample_shape)``: what the data module yields,
        i.e. images channels-first in [-1, 1] (``gan_lab.data.to_pixels`` makes them uint8) and
        toy points in the data's own coordinates. Without ``z`` the noise is
        ``sample_noise(n)``: the same z at every call, so metrics at different iterations (and
        of evaluate.py) score the generator, not the draw; pass ``z=module.prior.sample(n)``
        for a fresh draw.
        """
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        try:
            if z is None:
                assert n is not None, "give n or z"
                z = self.sample_noise(n)
            z = z.to(self.fixed_z.device)
            return torch.cat([generator(chunk) for chunk in z.split(batch_size)])
        finally:
            generator.train(was_training)

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain containers and tensors only: checkpoints load with weights_only=True.
        checkpoint["gan_lab"] = {
            "iteration": self.iteration,
            "config": self.config,
            "sample_shape": list(self.sample_shape) if self.sample_shape is not None else None,
            "skipped": self.nan_guard.skipped,
            "lineage": self.lineage,
            # Noise z comes from torch's global RNG, which Lightning does not checkpoint.
            "rng": capture_rng_state(),
        }
        if is_distributed():
            # Lightning writes rank 0's dict; each rank draws its own noise, so it carries all.
            ranks = gather_objects(checkpoint["gan_lab"]["rng"])
            checkpoint["gan_lab"]["ranks"] = [{"rng": rng} for rng in ranks]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this while resuming a fit, before it restores weights, loops and
        # optimizers.
        check_weights_fit(checkpoint["state_dict"], self.state_dict())
        self.restore_progress(checkpoint)
        state = checkpoint.get("gan_lab", {})
        rng = _own_rng_state(state)
        if rng is not None:
            restore_rng_state(rng)
        reopen_training(checkpoint)
        self._optimizer_updates = optimizer_updates(state.get("config"), self.config)

    def restore_progress(self, checkpoint: dict[str, Any]) -> None:
        """The iteration count and skip count of ``checkpoint``; the global RNG is left alone
        (that is for resuming a fit, not for loading a model to sample from)."""
        state = checkpoint.get("gan_lab", {})
        self.iteration = state.get("iteration", 0)
        self.nan_guard.skipped = state.get("skipped", 0)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Any:
        """Not supported: use ``gan_lab.load(path, device=...)``.

        Lightning's version calls ``__init__`` with saved hyperparameters, but a GANModule is
        made of objects built from the run config (gan_lab.build), which sits above this module;
        ``gan_lab.load`` rebuilds them from the config the checkpoint carries.
        """
        raise TypeError(
            f"GANModule.load_from_checkpoint({str(checkpoint_path)!r}) is not supported: use "
            f"gan_lab.load({str(checkpoint_path)!r}, device='cpu'), which rebuilds the module "
            "from the run config stored in the checkpoint"
        )


def _own_rng_state(state: dict[str, Any]) -> dict[str, Any] | None:
    """This rank's RNG state in a checkpoint's ``gan_lab`` record; None where it has none.

    A DDP checkpoint holds every rank's (``ranks``); a one-process checkpoint holds its own
    (``rng``), which is rank 0's. A rank without a saved state keeps the noise stream it was
    seeded with, and the run goes on, though not as the run it would have been.
    """
    rank, world = rank_and_world()
    saved = state.get("ranks")
    count = len(saved) if saved is not None else (1 if "rng" in state else 0)
    if count and count != world and rank == 0:
        log.warning(
            "the checkpoint holds the noise and data streams of %d rank(s) and this fit runs "
            "%d: each rank takes its own where there is one, a rank without one starts fresh; "
            "the run goes on, but not as it would have on %d",
            count,
            world,
            count,
        )
    return own_entry(None if saved is None else [r["rng"] for r in saved], state.get("rng"))

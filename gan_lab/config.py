"""Typed schema of the run config, registered in Hydra's ConfigStore so typos fail at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gan_lab.arguments import Count, Interval

# The shipped configs, inside the package so that an installed gan_lab has them.
CONF_DIR = Path(__file__).resolve().parent / "conf"

# Ranges of the run scalars (gan_lab.arguments): OmegaConf checks the type, validation the range.
Decay = Annotated[float, Interval(gt=0, lt=1)]
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)]  # what numpy and Lightning can seed


@dataclass
class TrainSettings:
    """The ``train`` group: the run's scalars, and the one home of their defaults.

    One iteration is ``k_d_steps`` discriminator updates + 1 generator update (Algorithm 1);
    ``iterations`` and every ``*_every`` interval count iterations, whatever k is. The train
    group owns the cadence of logging, sample grids and checkpoints; the eval group owns the
    cadence of metrics (``eval.every_n_iterations``, in gan_lab/conf/eval/*.yaml).
    """

    iterations: Count = 2000
    k_d_steps: Count = 1
    log_every: Count = 10
    sample_every: Count = 500
    checkpoint_every: Count = 500
    # e.g. 0.999: samples and metrics from an EMA of G's weights.
    ema_decay: Optional[Decay] = None  # noqa: UP045 - OmegaConf reads typing.Optional
    # Decay ramps as min(ema_decay, (1 + t) / (10 + t)) (gan_lab/ema.py).
    ema_warmup: bool = True
    num_fixed_samples: Count = 64
    # Non-finite D or G loss: "stop" (keep the last good checkpoint) or "skip" (drop the update).
    on_nan: str = "stop"
    nan_check_every: Count = 10  # iterations between checks (each check is one host sync)
    max_skips: Count = 10  # with on_nan=skip, stop after this many skipped iterations
    # Fast paths (see docs/benchmarks.md): torch.compile G and D; channels_last conv nets (GPU).
    compile: bool = False
    channels_last: bool = True


@dataclass
class ResumeSettings:
    """The ``resume`` node: what a resume or warm start (``ckpt_path``) may change.

    A resume compares this run's config with the checkpoint's (gan_lab/resume.py): the budget,
    cadences, loggers, evaluation, devices, data location and learning rates may change (and are
    recorded); anything else is refused with the list of differing keys, unless
    ``allow_changes`` is true.
    """

    allow_changes: bool = False


@dataclass
class DeviceSlot:
    """Where ``hydra/launcher=local_gpus`` ran a sweep job (gan_lab/slot_launcher.py): recorded
    in the run config, hence in .hydra/config.yaml, the loggers' hyperparameters and ``done``;
    training never reads it."""

    gpus: list[str] = field(default_factory=list)  # the job's CUDA_VISIBLE_DEVICES, as a list
    shares: list[int] = field(default_factory=list)  # which share of each GPU the job held
    jobs_per_gpu: int = 1
    host: str = ""


@dataclass
class RunConfig:
    """Root of ``gan_lab/conf/train.yaml``, which holds only the defaults list: every run scalar's
    default is here. Config groups are typed ``Any`` and checked by gan_lab.validation."""

    seed: Seed = 0
    name: str = "gan"  # experiment presets set their own name
    # Resume: a .ckpt path, or `last` = <run dir>/checkpoints/last.ckpt (with hydra.run.dir).
    ckpt_path: Optional[str] = None  # noqa: UP045
    # Checkpoints load with torch.load(weights_only=True): nothing in the file can run. true
    # unpickles everything (foreign or very old checkpoints, from a source you trust).
    trust_checkpoint: bool = False
    # A fresh run in a run dir that holds another run's checkpoints or done is refused; true
    # deletes that run's checkpoints, samples, metrics.csv and done first.
    overwrite: bool = False
    resume: ResumeSettings = field(default_factory=ResumeSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    prior: Any = MISSING
    optimizer: Any = MISSING
    regularizer: Any = None
    instance_noise: Any = None
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    paths: Any = MISSING
    eval: Any = None
    # Metric train.main returns for Hydra sweepers (lower is better): FID for images, reverse
    # KL / W1 for toys, all logged as val/primary.
    optimized_metric: Optional[str] = "val/primary"  # noqa: UP045
    tags: list[str] = field(default_factory=list)
    # Set by the launcher, never by hand: the GPU slot a sweep job ran on (None outside one).
    slot: Optional[DeviceSlot] = None  # noqa: UP045


def register_configs() -> None:
    """Store the schema as ``run_schema`` (first entry of train.yaml's defaults list)."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


register_configs()

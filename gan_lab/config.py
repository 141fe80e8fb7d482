"""Typed schema of the run config, registered in Hydra's ConfigStore so typos fail at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainSettings:
    """Run scalars. Every budget and interval is in GAN iterations (k D-steps + 1 G-step)."""

    iterations: int = 2000
    k_d_steps: int = 1
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    ema_decay: Optional[float] = None  # noqa: UP045 - OmegaConf reads typing.Optional
    ema_warmup: bool = True
    num_fixed_samples: int = 64
    # Non-finite guard: "stop" (keep the last good checkpoint) or "skip" (drop the update).
    on_nan: str = "stop"
    nan_check_every: int = 10
    max_skips: int = 10
    # Fast paths (see docs/benchmarks.md).
    compile: bool = False
    channels_last: bool = True


@dataclass
class RunConfig:
    """Root of ``conf/train.yaml``; config groups are typed ``Any`` and checked by validation."""

    seed: int = 0
    name: str = "gan"
    ckpt_path: Optional[str] = None  # noqa: UP045
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
    # Metric a sweeper optimises (returned by train.main), e.g. "val/fid_classifier".
    optimized_metric: Optional[str] = None  # noqa: UP045
    tags: list[str] = field(default_factory=list)


def register_configs() -> None:
    """Store the schema as ``run_schema`` (first entry of train.yaml's defaults list)."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


register_configs()

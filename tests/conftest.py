"""Shared fixtures: compose the real Hydra configs into a temporary run directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import gan_lab.config  # noqa: F401 - registers the run schema

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Tests never need a W&B account.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as the CLI would, writing into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


# Quiet, quick runs: no progress bar, no logger, no callbacks unless a test asks for them.
QUICK = [
    "logger=none",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "train.iterations=2",
]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    def _make(*overrides: str, quick: bool = True) -> DictConfig:
        return compose_config([*(QUICK if quick else []), *overrides], tmp_path)

    return _make

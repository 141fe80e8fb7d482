"""Logger factories that need more than a constructor call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(
    save_dir: str,
    project: str = "gan_lab",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    id: str | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A W&B logger that runs offline when no API key is configured (sync later with `wandb sync`).

    ``mode`` (online/offline/disabled) overrides; otherwise ``WANDB_MODE`` is respected.
    """
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if _wandb_has_credentials() else "offline")
    )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=list(tags) if tags else None,
        id=id,
        offline=mode == "offline",
        mode=mode,
        resume="allow",
        **kwargs,
    )

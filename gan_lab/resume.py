"""Run-level resume bookkeeping: the ``done`` marker.

A run that finishes its budget writes ``<run dir>/done`` (its final metrics as JSON). Re-running
the same command with ``ckpt_path=last`` then returns those metrics without training, which is
how an interrupted multirun is re-launched: finished jobs are skipped, the others resume.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

DONE_FILE = "done"


def done_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir) / DONE_FILE


def finished_metrics(cfg: DictConfig) -> dict[str, float] | None:
    """The metrics of an already finished run when resuming it (``ckpt_path=last``), else None."""
    path = done_path(cfg)
    if cfg.ckpt_path != "last" or not path.is_file():
        return None
    log.info("%s exists: this run already finished, skipping it", path)
    print(f"[gan_lab] {path} exists: run already finished, nothing to do")
    return json.loads(path.read_text() or "{}")


def mark_done(cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Write the ``done`` marker (with the final metrics)."""
    path = done_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")

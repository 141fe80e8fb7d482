"""Logger factories that need more than a constructor call."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

WANDB_ID_FILE = "wandb_run_id.txt"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is continued, not deleted.

    Rows at or after the first step logged by this process are dropped from the old file: they
    come from iterations after the checkpoint being resumed, which are about to be re-run.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._resume_pending = self._fs.isfile(self.metrics_file_path)
        if self._resume_pending:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes metrics.csv here; a resumed run appends to it instead

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._resume_pending and step is not None:
            self._resume_pending = False
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                rows = [row for row in csv.DictReader(file) if float(row["step"]) < step]
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        super().log_metrics(metrics_dict, step)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` (resumed runs, same run dir)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def persistent_wandb_id(save_dir: str) -> str:
    """The W&B run id of this run dir: read from ``save_dir/wandb_run_id.txt`` or created there.

    A resumed run (same run dir) therefore continues the same W&B run.
    """
    path = Path(save_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    path.write_text(run_id + "\n")
    return run_id


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def hydra_study_labels() -> dict[str, Any]:
    """W&B labels for a study: jobs of one multirun share a group (the sweep folder's name), each
    is named from its overrides, and tags carry the chosen loss/model/data/prior/optimizer."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    choices = hydra.runtime.choices
    tags = [
        f"{group}:{choices[group]}"
        for group in ("loss", "model", "data", "prior")
        if choices.get(group)
    ]
    labels: dict[str, Any] = {"tags": tags, "name": hydra.job.override_dirname or None}
    if hydra.mode == RunMode.MULTIRUN:
        labels["group"] = Path(hydra.sweep.dir).name
    return labels


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
    Without an ``id`` the run dir's persistent id is used, so ``ckpt_path=last`` continues the
    same W&B run (``resume="allow"``).
    """
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if _wandb_has_credentials() else "offline")
    )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    id = id or persistent_wandb_id(save_dir)
    study = hydra_study_labels()
    group = group or study.get("group")
    name = name or study.get("name")
    tags = [*(tags or []), *study.get("tags", [])]
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

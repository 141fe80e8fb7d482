"""Loggers and logger factories that need more than a constructor call: resumable CSV, W&B
runs and TensorBoard runs that carry their study (group, short name, tags)."""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from gan_lab.run_dir import WANDB_ID_FILE, WANDB_NAME_FILE

# What a dashboard sorts a study's runs by (gan_lab.callbacks.checkpoint logs the best).
STUDY_METRICS = ("val/primary", "best/val/primary")


# The key the evaluation protocol (gan_lab.metrics.protocol) has in each logger's config.
PROTOCOL_KEY = "eval_protocol"


@rank_zero_only
def log_protocol(logger: Logger, protocol: dict[str, Any]) -> None:
    """Record the evaluation protocol in ``logger``'s config, under ``eval_protocol``: W&B's
    run config and the CSV logger's hparams.yaml through ``log_hyperparams``; TensorBoard as
    text (its ``log_hyperparams`` would start a second HParams session) and in hparams.yaml."""
    if isinstance(logger, TensorBoardLogger):
        text = json.dumps(protocol, indent=2)
        logger.experiment.add_text(PROTOCOL_KEY, f"```\n{text}\n```", global_step=0)
        logger.hparams[PROTOCOL_KEY] = protocol
        return
    logger.log_hyperparams({PROTOCOL_KEY: protocol})


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


class StudyTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` whose run carries its study: the run's ``tags`` and the study's
    (``hydra_study_labels``) as text, and in TensorBoard's HParams tab the run's name, group and
    tags beside ``val/primary`` and ``best/val/primary`` (read from their scalars), so that a
    sweep's runs are filtered and sorted there as on W&B. The full config stays in
    hparams.yaml."""

    def __init__(
        self, *args: Any, tags: Sequence[str] = (), experiment_name: str = "gan", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tags = list(tags)
        self.experiment_name = experiment_name

    @rank_zero_only
    def log_hyperparams(
        self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        super().log_hyperparams(params, metrics, step)
        from torch.utils.tensorboard.summary import hparams

        study = hydra_study_labels(self.experiment_name)
        tags = list(dict.fromkeys([*self.tags, *study.get("tags", [])]))
        labels = {
            "name": study.get("name") or self.experiment_name,
            "group": study.get("group") or "",
            "tags": ",".join(tags),
        }
        if tags:
            self.experiment.add_text("tags", ", ".join(tags), global_step=0)
        # The metric values are not written here: the HParams tab reads each one's scalars.
        for summary in hparams(labels, dict.fromkeys(STUDY_METRICS, 0.0)):
            self.experiment.file_writer.add_summary(summary)


def persistent_wandb_id(save_dir: str) -> str:
    """The W&B run id of this run dir: read from ``save_dir/wandb_run_id.txt`` or created there.

    A resumed run (same run dir) therefore continues the same W&B run.
    """
    return _persistent(Path(save_dir) / WANDB_ID_FILE, lambda: uuid.uuid4().hex[:8])


def _persistent(path: Path, make: Callable[[], str]) -> str:
    if path.is_file():
        return path.read_text().strip()
    value = make()
    path.write_text(value + "\n")
    return value


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


# Overrides that say where and how a run executes, not what it trains: never part of its name.
PLUMBING_GROUPS = ("hydra", "trainer", "logger", "callbacks", "paths", "debug", "resume", "slot")
PLUMBING_KEYS = (
    "ckpt_path",
    "overwrite",
    "trust_checkpoint",
    "optimized_metric",
    "tags",
    "name",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.nan_check_every",
    "eval.every_n_iterations",
    "data.root",
    "data.download",
    "data.num_workers",
)


def _is_plumbing(key: str) -> bool:
    return key in PLUMBING_KEYS or re.split(r"[./@]", key, maxsplit=1)[0] in PLUMBING_GROUPS


def _short(value: Any) -> str:
    # Optuna's floats (lr=0.00012345678) would make a name as long as the dashboard's row.
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace(" ", "")


def run_name(overrides: Sequence[str], varying: Iterable[str] | None, experiment: str) -> str:
    """A short run name: the job's overrides of the keys that vary within its sweep
    (``loss=hinge,seed=1``), or, outside a sweep (``varying`` None) or where none varies, the
    experiment's name and its overrides (``ring_mlp loss=hinge``); overrides that only say where
    and how it runs (trainer, loggers, paths, cadences, ``ckpt_path``) are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keep = [o for o in parsed if not _is_plumbing(o.get_key_element())]
    if varying is not None:
        wanted = set(varying)
        swept = [o for o in keep if o.get_key_element() in wanted]
        if swept:
            return ",".join(_named(swept))
    # The experiment's name says which experiment.
    return " ".join([experiment, *_named([o for o in keep if o.key_or_group != "experiment"])])


def _named(overrides: Sequence[Any]) -> list[str]:
    """``key=value``, each key without its group (optimizer.g.lr -> g.lr, train.k_d_steps ->
    k_d_steps) unless that would make two keys of the name alike; floats to 3 digits."""
    keys = [o.get_key_element() for o in overrides]
    # optimizer@optimizer.d: the package is the point; kept whole.
    cut = [key.split(".", 1)[-1] if "@" not in key else key for key in keys]
    names = cut if len(set(cut)) == len(cut) else keys
    return [f"{name}={_short(o.value())}" for name, o in zip(names, overrides)]


def _swept_keys(hydra: Any) -> set[str]:
    """The keys a multirun varies: its sweeper's ``params`` and the command line's sweeps
    (``loss=minimax,hinge``), which Hydra's basic sweeper keeps in <sweep dir>/multirun.yaml."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    keys = {str(key) for key in (OmegaConf.select(hydra, "sweeper.params") or {})}
    multirun = Path(hydra.sweep.dir) / "multirun.yaml"
    if multirun.is_file():
        task = OmegaConf.select(OmegaConf.load(multirun), "hydra.overrides.task") or []
        keys |= {
            o.get_key_element()
            for o in OverridesParser.create().parse_overrides(list(task))
            if o.is_sweep_override()
        }
    return keys


def hydra_study_labels(experiment: str = "gan") -> dict[str, Any]:
    """Labels that place a run in its study: jobs of one multirun share a group (the sweep
    folder's name), each is named by ``run_name``, and tags carry the chosen
    loss/model/data/prior. Empty outside a Hydra app (the Python API)."""
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
    multirun = hydra.mode == RunMode.MULTIRUN
    varying = _swept_keys(hydra) if multirun else None
    labels: dict[str, Any] = {
        "tags": tags,
        "name": run_name(hydra.overrides.task, varying, experiment),
    }
    if multirun:
        labels["group"] = Path(hydra.sweep.dir).name
    return labels


def wandb_logger(
    save_dir: str,
    project: str = "gan_lab",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    id: str | None = None,
    mode: str | None = None,
    experiment_name: str = "gan",
    **kwargs: Any,
) -> WandbLogger:
    """A W&B logger that runs offline when no API key is configured (sync later with `wandb sync`).

    ``mode`` (online/offline/disabled) overrides; otherwise ``WANDB_MODE`` is respected.
    Without an ``id`` the run dir's persistent id is used, so ``ckpt_path=last`` continues the
    same W&B run (``resume="allow"``). ``tags`` (the run's top-level ``tags``) come first, then
    the study's (``hydra_study_labels``). Without a ``name`` the run is named by ``run_name``
    (``experiment_name`` is the run config's ``name``) at its first start, and keeps that name in
    ``wandb_run_name.txt`` for every resume.
    """
    mode = (
        mode
        or os.environ.get("WANDB_MODE")
        or ("online" if _wandb_has_credentials() else "offline")
    )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    id = id or persistent_wandb_id(save_dir)
    study = hydra_study_labels(experiment_name)
    group = group or study.get("group")
    name = name or _persistent(
        Path(save_dir) / WANDB_NAME_FILE, lambda: study.get("name") or experiment_name
    )
    tags = list(dict.fromkeys([*tags, *study.get("tags", [])]))  # in order, once each
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

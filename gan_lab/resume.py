"""Where a run starts, and what a resume may change.

A run starts from scratch, **resumes** a checkpoint of its own run dir (``ckpt_path=last``, or a
path inside ``<run dir>/checkpoints``), or **warm-starts** from another run's checkpoint
(``ckpt_path=<path>``). ``plan`` decides which, before anything is built:

- ``ckpt_path=last`` in a run dir whose ``done`` records this budget or more: nothing to train,
  the recorded metrics are returned (a re-launched sweep skips its finished jobs); with a larger
  ``train.iterations`` the run continues from ``last.ckpt`` to the new budget.
- A checkpoint's stored config is compared with this run's: the keys in ``MAY_CHANGE`` (budget,
  cadences, loggers, evaluation, devices, data location, learning rates) may differ and are
  recorded; any other difference is refused with the list of differing keys, unless
  ``resume.allow_changes=true``. Changed optimizer settings are applied to the restored
  optimizers (gan_lab/restore.py).
- A fresh run or a warm start in a run dir that holds another run's checkpoints or ``done`` is
  refused, unless ``overwrite=true`` (which deletes them first).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gan_lab import run_dir as run_files
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.errors import UserError
from gan_lab.loading import stored_config
from gan_lab.run_dir import DoneRecord

log = logging.getLogger(__name__)

# The settings a resume or warm start may change: how long, how often and where a run trains
# and reports, and its learning rates; not what it trains. fnmatch patterns over dotted keys,
# each also covering the keys below it.
MAY_CHANGE = (
    "train.iterations",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.nan_check_every",
    "train.on_nan",
    "train.max_skips",
    "train.compile",
    "train.channels_last",
    "optimizer.*.lr",
    "logger",
    "callbacks",
    "eval",
    "optimized_metric",
    "trainer",
    "paths",
    "data.root",
    "data.download",
    "data.num_workers",
    # Checkpoints from before image folders had the option lack it; "skip" leaves out only
    # files that "error" would have stopped the old run on.
    "data.bad_files",
    "name",
    "tags",
    "slot",  # a re-launched sweep job may get another GPU
    "ckpt_path",
    "trust_checkpoint",
    "overwrite",
    "resume",
)
_ABSENT = "<absent>"


class ConfigDriftError(UserError, ValueError):
    """A resume or warm start whose config differs from the checkpoint's in keys that decide
    what is trained; ``keys`` lists them."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


class RunDirTaken(UserError):
    """A fresh run (or warm start) in a run dir that holds another run."""


@dataclass
class Start:
    """Where a run starts: from scratch (``checkpoint`` None), or from a checkpoint."""

    checkpoint: Path | None = None
    iteration: int = 0
    # From another run's checkpoint (a warm start), not this run dir's.
    warm: bool = False
    # Settings that differ from the checkpoint's: key -> (old, new).
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # Carried in every checkpoint and in ``done``: {"started_from": ..., "resumes": [...]}.
    lineage: dict[str, Any] = field(default_factory=lambda: new_lineage())
    # Set when the run dir already finished this budget: nothing to train.
    finished: DoneRecord | None = None


def new_lineage() -> dict[str, Any]:
    return {"started_from": None, "resumes": []}


def plan(cfg: DictConfig) -> Start:
    """Decide where the run of ``cfg`` starts; refuse what would train something else than the
    user asked for (module docstring). Only reads, except on rank 0: ``overwrite=true`` deletes
    the previous run, and a resume of a finished run dir deletes its ``done``."""
    run_dir = Path(cfg.paths.output_dir)
    budget = int(cfg.train.iterations)
    done = run_files.read_done(run_dir)
    if cfg.ckpt_path == "last" and done is not None:
        finished_budget = done.iterations
        if finished_budget is None or finished_budget >= budget:
            print(
                f"[gan_lab] {run_files.done_path(run_dir)} exists: this run finished "
                f"{finished_budget or 'its'} iterations, nothing to do",
                flush=True,
            )
            return Start(finished=done)
    checkpoint = _checkpoint_to_restore(cfg, run_dir)
    warm = checkpoint is not None and not run_files.is_own_checkpoint(run_dir, checkpoint)
    if checkpoint is None or warm:
        _claim_for_new_run(cfg, run_dir)
    if checkpoint is None:
        return Start()
    loaded = load_checkpoint_file(checkpoint, trust=cfg.trust_checkpoint)
    stored = OmegaConf.to_container(stored_config(loaded, checkpoint))
    state = loaded["gan_lab"]
    iteration = int(state.get("iteration", 0))
    if iteration >= budget:
        raise UserError(
            f"ckpt_path={cfg.ckpt_path}: {checkpoint} is at iteration {iteration}, so "
            f"train.iterations={budget} leaves nothing to train; set train.iterations above "
            f"{iteration} to train on"
        )
    changes = config_changes(stored, OmegaConf.to_container(cfg, resolve=True))
    changes = _without_relocation(changes, stored, run_dir)
    changes.pop("ckpt_path", None)  # a resume always names a checkpoint the stored run did not
    _check_changes(cfg, checkpoint, changes)
    lineage = _continued_lineage(stored, state.get("lineage"), checkpoint, iteration, changes, warm)
    if warm:
        log.warning(
            "warm start from %s (iteration %d) into the new run dir %s",
            checkpoint,
            iteration,
            run_dir,
        )
    elif done is not None and rank_zero_only.rank == 0:
        # The run dir is training again (a larger budget, or from an earlier checkpoint): it is
        # not finished until a new done is written.
        run_files.done_path(run_dir).unlink(missing_ok=True)
    if changes:
        log.warning("resuming with changed settings: %s", describe_changes(changes))
    return Start(checkpoint, iteration, warm, changes, lineage)


def _checkpoint_to_restore(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.ckpt_path == "last":
        path = run_files.last_checkpoint(run_dir)
        if path.is_file():
            return path
        # A mistyped hydra.run.dir would otherwise train from scratch unnoticed.
        log.warning(
            "ckpt_path=last, but %s does not exist: starting from scratch (is hydra.run.dir "
            "the dir of the run to resume?)",
            path,
        )
        return None
    if cfg.ckpt_path is not None:
        return Path(cfg.ckpt_path)
    if SLURMEnvironment.detect():
        # A requeued SLURM job resumes from the checkpoint Lightning saved on pre-emption
        # (SLURMEnvironment auto_requeue); Lightning would pick the same file itself. A job
        # submitit requeued (hydra/launcher=slurm: SIGUSR2, no hpc_ckpt) comes back with its
        # own overrides, so no ckpt_path: SLURM_RESTART_COUNT > 0 says it ran before, and it
        # resumes from its last.ckpt, whichever of the two is newer.
        found = [path for path in [_newest_hpc_checkpoint(run_dir)] if path is not None]
        last = run_files.last_checkpoint(run_dir)
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and last.is_file():
            found.append(last)
        return max(found, key=lambda path: path.stat().st_mtime) if found else None
    return None


def _newest_hpc_checkpoint(run_dir: Path) -> Path | None:
    numbered = [
        (int(match.group(1)), path)
        for path in run_dir.glob("hpc_ckpt_*.ckpt")
        if (match := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name))
    ]
    return max(numbered)[1] if numbered else None


def _claim_for_new_run(cfg: DictConfig, run_dir: Path) -> None:
    """A fresh run or a warm start writes a new run: refuse a dir holding another one."""
    previous = run_files.previous_run(run_dir)
    if not previous:
        return
    if cfg.overwrite:
        if rank_zero_only.rank != 0:  # DDP: rank 0 deleted them before it started the others
            return
        removed = run_files.clear_previous_run(run_dir)
        log.warning(
            "overwrite=true: deleted the previous run's %s in %s",
            ", ".join(path.name for path in removed),
            run_dir,
        )
        return
    more = f" and {len(previous) - 4} more" if len(previous) > 4 else ""
    shown = ", ".join(previous[:4]) + more
    raise RunDirTaken(
        f"{run_dir} holds another run ({shown}); a new run there would mix with it. Resume it "
        "with ckpt_path=last, pick another hydra.run.dir, or pass overwrite=true to delete it "
        "and start afresh"
    )


def _without_relocation(
    changes: dict[str, tuple[Any, Any]], stored: dict[str, Any], run_dir: Path
) -> dict[str, tuple[Any, Any]]:
    """``changes`` less the paths that differ only by the run dir (a warm start writes into its
    own dir; a moved run dir is still the same run)."""
    old_dir = str((stored.get("paths") or {}).get("output_dir") or "")
    new_dir = str(run_dir)
    if not old_dir or old_dir == new_dir:
        return changes
    return {
        key: (old, new)
        for key, (old, new) in changes.items()
        if not (isinstance(old, str) and str(new) == old.replace(old_dir, new_dir))
    }


def _check_changes(cfg: DictConfig, checkpoint: Path, changes: dict[str, tuple]) -> None:
    refused = [key for key in changes if not may_change(key)]
    if not refused:
        return
    if cfg.resume.allow_changes:
        log.warning(
            "resume.allow_changes=true: training on from %s with settings a resume does not "
            "normally change: %s",
            checkpoint,
            ", ".join(refused),
        )
        return
    shown = describe_changes({key: changes[key] for key in refused[:8]})
    more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
    raise ConfigDriftError(
        f"ckpt_path={cfg.ckpt_path}: {checkpoint} was trained with other settings: {shown}"
        f"{more}. A resume may change only the budget, cadences, loggers, evaluation, devices, "
        "data location and learning rates; resume with the checkpoint's settings, start a new "
        "run dir, or pass resume.allow_changes=true to train on with the new ones",
        refused,
    )


def _continued_lineage(
    stored: dict[str, Any],
    stored_lineage: dict[str, Any] | None,
    checkpoint: Path,
    iteration: int,
    changes: dict[str, tuple],
    warm: bool,
) -> dict[str, Any]:
    recorded = {key: [old, new] for key, (old, new) in changes.items()}
    if warm:
        lineage = new_lineage()
        lineage["started_from"] = {
            "checkpoint": str(checkpoint.resolve()),
            "iteration": iteration,
            "config_digest": config_digest(stored),
            "changes": recorded,
        }
        return lineage
    lineage = copy.deepcopy(stored_lineage or new_lineage())
    lineage["resumes"].append({"iteration": iteration, "changes": recorded})
    return lineage


def may_change(key: str) -> bool:
    """Whether a resume may change the dotted config ``key`` without resume.allow_changes."""
    return any(_matches(key, pattern) for pattern in MAY_CHANGE)


def _matches(key: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(key, pattern + ".*")


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` for every leaf of a config container; lists are leaves."""
    if isinstance(config, dict) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: config}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The leaves that differ between two resolved configs: key -> (old, new)."""
    before, after = flatten(old), flatten(new)
    return {
        key: (before.get(key, _ABSENT), after.get(key, _ABSENT))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, _ABSENT) != after.get(key, _ABSENT)
    }


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``key: old -> new; ...`` on one line, long values shortened."""
    return "; ".join(
        f"{key}: {_short(old)} -> {_short(new)}" for key, (old, new) in changes.items()
    )


def _short(value: Any, limit: int = 48) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_digest(config: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a resolved config's settings that a resume may not change: two runs
    with one digest trained the same experiment (nets, loss, prior, data, optimizers but their
    learning rates, seed, k, EMA, regularizer, instance noise)."""
    guarded = {key: value for key, value in flatten(config).items() if not may_change(key)}
    text = json.dumps(guarded, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

"""What a run directory holds, and the ``done`` record a finished run leaves in it.

A run dir (``hydra.run.dir``, or ``output_dir`` from Python) belongs to one run:
``checkpoints/`` (``last.ckpt``, ``iter_*.ckpt``, ``best.ckpt``), ``samples/``, ``metrics.csv``,
the loggers' files, ``gan_lab.lock`` while a process trains in it (gan_lab/run_lock.py), and
``done`` once the run has trained its whole budget.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DONE_FILE = "done"
# The W&B run's id and name (gan_lab.loggers), kept so that a resume continues the same run under
# the same name. Named here, with the run dir's other files, so that reading a run dir
# (gan_lab.report) does not import the loggers (and Lightning).
WANDB_ID_FILE = "wandb_run_id.txt"
WANDB_NAME_FILE = "wandb_run_name.txt"
DONE_SCHEMA = 1
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# What a fresh run started with overwrite=true deletes: everything gan_lab's own callbacks and
# the CSV logger wrote (other loggers keep their files; W&B starts a new run).
RUN_OUTPUTS = (CHECKPOINT_DIR, "samples", "metrics.csv", "hparams.yaml", DONE_FILE)


@dataclass
class DoneRecord:
    """``<run dir>/done``, JSON, written when a run has trained its whole budget.

    Schema 1 (``schema``: 1):

    - ``iterations``: the budget the run finished (``train.iterations``);
    - ``metrics``: the final logged metrics (what ``gan-train`` prints as ``final metrics``);
    - ``config_digest``: ``sha256:<hex>`` of the settings a resume may not change
      (gan_lab.resume.config_digest): runs with one digest trained the same experiment;
    - ``config``: the resolved run config;
    - ``started_from``: null for a run started from scratch, else the checkpoint it was
      warm-started from: ``{"checkpoint": path, "iteration": n, "config_digest": ...}``;
    - ``resumes``: one entry per resume in this run dir, ``{"iteration": n, "changes":
      {key: [old, new]}}``;
    - ``finished_at``: UTC time, ISO 8601;
    - ``best``: the best value of the checkpoint callback's monitored metric over the run's
      evaluations (best.ckpt's), ``{"metric": "val/primary", "value": v, "iteration": n}``;
      null when nothing was evaluated. Records written before it was added lack it (None).
    - ``protocol``: the evaluation protocol of the metrics (gan_lab.metrics.protocol: extractor
      and its weights' sha256, reference split, size and fingerprint, sample counts,
      preprocessing; ``id`` says which numbers compare); null when nothing was evaluated or
      the record predates it.

    Files from before schema 1 held only the metrics; they read as a record with ``iterations``
    and everything else unknown (None).
    """

    iterations: int | None
    metrics: dict[str, float]
    config_digest: str | None = None
    config: dict[str, Any] | None = None
    started_from: dict[str, Any] | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    finished_at: str | None = None
    best: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    schema: int = DONE_SCHEMA

    @classmethod
    def from_json(cls, text: str) -> DoneRecord:
        data = json.loads(text or "{}")
        if data.get("schema") is None:  # before schema 1: the metrics alone
            return cls(iterations=None, metrics=data, schema=0)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_json(self) -> str:
        # inf/nan metrics (a toy run that hits no mode) are written as JSON's Infinity/NaN, which
        # json and pandas read back.
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str) + "\n"


def done_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / DONE_FILE


def read_done(run_dir: str | Path) -> DoneRecord | None:
    """The run dir's ``done`` record, or None when the run has not finished."""
    path = done_path(run_dir)
    return DoneRecord.from_json(path.read_text()) if path.is_file() else None


def write_done(run_dir: str | Path, record: DoneRecord) -> None:
    """Write ``done`` atomically: a reader (``gan_lab.report``) never sees half a record."""
    if record.finished_at is None:
        record.finished_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    path = done_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".done.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as file:
        file.write(record.to_json())
    os.replace(tmp, path)


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def is_own_checkpoint(run_dir: str | Path, checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` was written into this run dir (a resume, not a warm start):
    ``checkpoints/*.ckpt``, or Lightning's SLURM ``hpc_ckpt_*.ckpt`` in the dir itself."""
    folder = Path(checkpoint).resolve().parent
    run_dir = Path(run_dir).resolve()
    return folder in (run_dir / CHECKPOINT_DIR, run_dir)


def previous_run(run_dir: str | Path) -> list[str]:
    """What of an earlier run ``run_dir`` holds (checkpoints, ``done``), as relative paths,
    ``last.ckpt`` and ``done`` first."""
    run_dir = Path(run_dir)
    found = [
        str(path.relative_to(run_dir))
        for path in (last_checkpoint(run_dir), done_path(run_dir))
        if path.is_file()
    ]
    found += sorted(
        str(path.relative_to(run_dir))
        for path in (*(run_dir / CHECKPOINT_DIR).glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt"))
        if path.name != LAST_CHECKPOINT
    )
    return found


def clear_previous_run(run_dir: str | Path) -> list[Path]:
    """Delete what a previous run wrote (``RUN_OUTPUTS``); return the paths removed."""
    run_dir = Path(run_dir)
    removed = []
    for name in (*RUN_OUTPUTS, WANDB_ID_FILE, WANDB_NAME_FILE):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    for path in run_dir.glob("hpc_ckpt_*.ckpt"):
        path.unlink()
        removed.append(path)
    return removed

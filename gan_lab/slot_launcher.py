"""Sweep jobs on GPU slots: each job a fresh process pinned to the GPUs it leased.

The launcher process (``hydra/launcher=local_gpus``, hydra_plugins/gan_lab_launchers) starts a
job whenever a slot is free (gan_lab/gpu_slots.py) and another when a job ends, so jobs of
different lengths keep every slot busy. Each job is ``python -m gan_lab.slot_launcher JOB
RESULT``: a new interpreter whose ``CUDA_VISIBLE_DEVICES`` is set before it starts, since a
process that has initialised CUDA (a reused joblib worker) can no longer change its devices. The
job runs Hydra's ``run_job`` as the joblib launcher does in its workers, records its slot in the
run config (``slot``: .hydra/config.yaml, the loggers' hyperparameters, ``done``), and writes
its ``JobReturn`` back for the sweeper.

Jobs stay in the launcher's process group: a Ctrl+C in the terminal reaches every job (each
stops at its iteration boundary, saved), and a group kill ends them all. A SIGTERM sent to the
launcher alone is passed on to its jobs. A job that ends with 130 or 143 stops the sweep, as
under Hydra's basic launcher: no new job starts, running ones finish, the launcher exits with
that status. A job that crashes or is killed otherwise is a failed job; the others go on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from gan_lab.config import DeviceSlot
from gan_lab.errors import ConfigError
from gan_lab.gpu_slots import Lease, SlotPool, default_lock_dir, visible_gpus
from gan_lab.stopping import EXIT_SIGINT, EXIT_SIGTERM

log = logging.getLogger(__name__)

# How often the launcher looks for ended jobs and free slots.
POLL_S = 0.2


class JobFailed(RuntimeError):
    """A sweep job whose process ended without a result (crashed, killed, or a user error)."""


@dataclass
class _Job:
    """What a job process needs to run one Hydra job (pickled into its job file)."""

    index: int
    overrides: Sequence[str]
    hydra_context: HydraContext
    config: DictConfig
    task_function: TaskFunction
    singleton_state: dict[Any, Any]
    slot: DeviceSlot


@dataclass
class _Running:
    index: int
    overrides: Sequence[str]
    process: subprocess.Popen
    result: Path


def slot_pool(
    gpus: Sequence[str | int] | None,
    gpus_per_job: int,
    jobs_per_gpu: int,
    lock_dir: str | None,
) -> SlotPool:
    """The slots the launcher's settings describe; a ConfigError names a setting that cannot
    work (before any job starts)."""
    for key, value in (("gpus_per_job", gpus_per_job), ("jobs_per_gpu", jobs_per_gpu)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.launcher.{key}", value, "must be an integer >= 1")
    found = visible_gpus(gpus)
    if not found:
        raise ConfigError(
            "hydra.launcher.gpus",
            gpus,
            "no GPU found (CUDA_VISIBLE_DEVICES is empty or this machine has none); list them, "
            "e.g. hydra.launcher.gpus=[0,1], or use hydra/launcher=local_parallel for CPU jobs",
        )
    if len(set(found)) != len(found):  # one lock file would stand for two GPUs
        raise ConfigError("hydra.launcher.gpus", found, "lists a GPU twice")
    if gpus_per_job > len(found):
        raise ConfigError(
            "hydra.launcher.gpus_per_job",
            gpus_per_job,
            f"more than the {len(found)} GPU(s) there are ({','.join(found)})",
        )
    return SlotPool(found, jobs_per_gpu, lock_dir or default_lock_dir())


def launch(
    *,
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    pool: SlotPool,
    gpus_per_job: int,
) -> list[JobReturn]:
    """Run every job, as many at once as ``pool`` has free slots; their returns in order."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "local_gpus: %d jobs on GPUs %s, %d GPU(s) per job, %d job(s) per GPU; "
        "sweep output dir: %s",
        len(job_overrides),
        ",".join(pool.gpus),
        gpus_per_job,
        pool.jobs_per_gpu,
        sweep_dir,
    )
    singleton_state = Singleton.get_state()
    pending = deque(
        (initial_job_idx + offset, list(overrides))
        for offset, overrides in enumerate(job_overrides)
    )
    running: list[_Running] = []
    returns: dict[int, JobReturn] = {}
    stop_status: int | None = None
    waiting = False
    with (
        tempfile.TemporaryDirectory(prefix="gan_lab-jobs-") as scratch,
        _passed_on(running) as asked,
    ):
        while pending or running:
            for job in [job for job in running if job.process.poll() is not None]:
                running.remove(job)
                status, returned = _collect(job)
                if status in (EXIT_SIGINT, EXIT_SIGTERM) and stop_status is None:
                    stop_status = status
                returns[job.index] = returned
            if asked.status is not None and stop_status is None:
                stop_status = asked.status
            if stop_status is not None:
                pending.clear()
            while pending and (lease := pool.try_lease(gpus_per_job)) is not None:
                index, overrides = pending.popleft()
                job = _Job(
                    index,
                    overrides,
                    hydra_context,
                    config,
                    task_function,
                    singleton_state,
                    slot=_slot_record(lease, pool),
                )
                running.append(_start(job, lease, Path(scratch)))
            if pending and not running and not waiting:
                waiting = True  # said once: every slot is another process's
                log.info(
                    "local_gpus: every slot is in use by other jobs (leases in %s); waiting",
                    pool.lock_dir,
                )
            time.sleep(POLL_S)
    if stop_status is not None:
        log.info("local_gpus: sweep stopped (status %d)", stop_status)
        raise SystemExit(stop_status)
    return [returns[index] for index in sorted(returns)]


def _slot_record(lease: Lease, pool: SlotPool) -> DeviceSlot:
    return DeviceSlot(list(lease.gpus), list(lease.shares), pool.jobs_per_gpu, socket.gethostname())


def _start(job: _Job, lease: Lease, scratch: Path) -> _Running:
    job_file = scratch / f"job_{job.index}.pkl"
    result = scratch / f"job_{job.index}.result.pkl"
    job_file.write_bytes(cloudpickle.dumps(job))
    # The job imports what the launcher imported (the task function is pickled by reference).
    path = os.pathsep.join(entry for entry in sys.path if entry and os.path.isdir(entry))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": lease.cuda_visible_devices, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_lab.slot_launcher", str(job_file), str(result)],
        env=env,
        pass_fds=lease.descriptors,  # the job holds the lease until its last process ends
    )
    lease.note(f"pid {process.pid} job #{job.index} {job.slot.host}")
    lease.release()  # the launcher's copies: from now on only the job holds the slot
    log.info("#%d on GPU %s: %s", job.index, lease.cuda_visible_devices, _shown(job.overrides))
    return _Running(job.index, job.overrides, process, result)


def _collect(job: _Running) -> tuple[int, JobReturn]:
    status = job.process.returncode
    if status == 0 and job.result.is_file():
        returned = cloudpickle.loads(job.result.read_bytes())
        log.info("#%d ended (%s)", job.index, returned.status.name.lower())
        return status, returned
    if status < 0:
        how = f"was killed by {signal.Signals(-status).name}"
    else:
        how = f"exited with status {status}"
    log.info("#%d %s", job.index, how)
    failed = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
    failed.return_value = JobFailed(f"sweep job #{job.index} ({_shown(job.overrides)}) {how}")
    return status, failed


def _shown(overrides: Sequence[str]) -> str:
    return " ".join(filter_overrides(overrides))


@dataclass
class _Asked:
    status: int | None = None


@contextmanager
def _passed_on(running: list[_Running]) -> Iterator[_Asked]:
    """While the launcher waits: a signal stops the sweep; SIGTERM is passed on to the jobs.

    A Ctrl+C reaches the jobs from the terminal (they share its process group); passing it on
    would be a second Ctrl+C, which stops a job at once without saving. A repeated SIGTERM
    changes nothing in a job, so it is passed on for the case where only the launcher got it.
    """
    asked = _Asked()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        asked.status = 128 + signum
        if signum == signal.SIGTERM:
            for job in running:
                if job.process.poll() is None:
                    job.process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield asked
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_one(job_file: Path, result_file: Path) -> None:
    """Run one sweep job in this (fresh) process; write its ``JobReturn`` to ``result_file``.

    A job that exits (``SystemExit``: a user error, a stop by signal) ends this process with its
    status and writes nothing; the launcher reads the status.

    Under DDP (``gpus_per_job`` > 1, ``trainer=ddp``) Lightning starts the other ranks with this
    same command line and ``LOCAL_RANK`` set: they run the same job into the same run dir, and
    leave the config files and the result to rank 0, as Lightning has them do under Hydra.
    """
    rank_zero = int(os.environ.get("LOCAL_RANK", "0")) == 0
    job: _Job = cloudpickle.loads(job_file.read_bytes())
    setup_globals()
    Singleton.set_state(job.singleton_state)
    sweep_config = job.hydra_context.config_loader.load_sweep_config(
        job.config, list(job.overrides)
    )
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{job.index}"
        sweep_config.hydra.job.num = job.index
        # Recorded in .hydra/hydra.yaml; the process already has it from the launcher.
        sweep_config.hydra.job.env_set.CUDA_VISIBLE_DEVICES = ",".join(job.slot.gpus)
        sweep_config.slot = job.slot
        if not rank_zero:
            sweep_config.hydra.output_subdir = None
    HydraConfig.instance().set_config(sweep_config)
    returned = run_job(
        hydra_context=job.hydra_context,
        config=sweep_config,
        task_function=job.task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if not rank_zero:
        return
    try:
        payload = cloudpickle.dumps(returned)
    except Exception as error:  # an unpicklable return value or exception: keep its text
        returned.return_value = JobFailed(f"{type(error).__name__}: {error}")
        returned.status = JobStatus.FAILED
        payload = cloudpickle.dumps(returned)
    # No temp file and rename: the launcher reads it only after this process exited with 0.
    result_file.write_bytes(payload)


if __name__ == "__main__":
    run_one(Path(sys.argv[1]), Path(sys.argv[2]))

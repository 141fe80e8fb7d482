"""``hydra/launcher=local_gpus``: sweep jobs on the GPU slots of one machine.

Thin on purpose: Hydra imports every module under ``hydra_plugins`` at start-up, so this one
only checks the settings and hands the jobs to gan_lab.slot_launcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LocalGPUsLauncher(Launcher):
    """Runs as many jobs at once as there are free GPU slots, each pinned to its own GPUs.

    ``gpus``: GPU ids (default: ``CUDA_VISIBLE_DEVICES``, else every GPU); ``gpus_per_job``:
    GPUs each job gets (a ``trainer=ddp`` job uses them all); ``jobs_per_gpu``: jobs sharing one
    GPU; ``lock_dir``: where the slot leases live (default: per user, in the temp dir).
    """

    def __init__(
        self,
        gpus: Sequence[str | int] | None = None,
        gpus_per_job: int = 1,
        jobs_per_gpu: int = 1,
        lock_dir: str | None = None,
    ) -> None:
        self.settings: dict[str, Any] = {
            "gpus": gpus,
            "gpus_per_job": gpus_per_job,
            "jobs_per_gpu": jobs_per_gpu,
            "lock_dir": lock_dir,
        }
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.pool: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from gan_lab.errors import reported_as_one_line
        from gan_lab.slot_launcher import slot_pool

        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context
        with reported_as_one_line("gan_lab.train"):
            self.pool = slot_pool(**self.settings)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from gan_lab import slot_launcher

        assert self.config is not None and self.hydra_context is not None
        return slot_launcher.launch(
            hydra_context=self.hydra_context,
            config=self.config,
            task_function=self.task_function,
            job_overrides=job_overrides,
            initial_job_idx=initial_job_idx,
            pool=self.pool,
            gpus_per_job=self.settings["gpus_per_job"],
        )

"""The GPU slots of one machine, leased to sweep jobs with file locks.

A GPU has ``jobs_per_gpu`` shares; a job that needs ``gpus_per_job`` GPUs leases one share on
each of that many distinct GPUs. A share is an ``flock`` on one file in ``lock_dir``. The job's
process inherits the locked descriptors and the launcher closes its own, so the kernel releases
a lease when the last process holding it ends, however it ends: exit, crash or SIGKILL. A job
that dies cannot leak its GPU, and sweeps that use the same ``lock_dir`` on one machine share
its slots instead of piling onto the same GPUs.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def visible_gpus(configured: Sequence[str | int] | None = None) -> list[str]:
    """The GPUs jobs may use: ``configured``, else ``CUDA_VISIBLE_DEVICES``, else every GPU."""
    if configured is not None:
        return [str(gpu).strip() for gpu in configured]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch  # only here: the launcher process may never need CUDA otherwise

    return [str(index) for index in range(torch.cuda.device_count())]


def default_lock_dir() -> Path:
    """Per user and machine, so every sweep of this user on this machine sees the same slots."""
    return Path(tempfile.gettempdir()) / f"gan_lab-gpu-slots-{os.getuid()}"


@dataclass
class Lease:
    """Shares of GPUs held for one job: ``gpus[i]`` at share ``shares[i]``."""

    gpus: list[str]
    shares: list[int]
    descriptors: list[int] = field(default_factory=list, repr=False)

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.gpus)

    def note(self, holder: str) -> None:
        """Write who holds the lease into its lock files (for a person looking at the dir)."""
        for descriptor in self.descriptors:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{holder}\n".encode(), 0)

    def release(self) -> None:
        """Close this process's descriptors; the lease ends once no process holds them."""
        for descriptor in self.descriptors:
            os.close(descriptor)
        self.descriptors = []


class SlotPool:
    """``jobs_per_gpu`` shares of each of ``gpus``, leased through lock files in ``lock_dir``.

    The settings are checked where the user gives them (gan_lab.slot_launcher.slot_pool, one
    line naming the key): at least one GPU, none twice, ``jobs_per_gpu`` >= 1.
    """

    def __init__(self, gpus: Sequence[str], jobs_per_gpu: int, lock_dir: str | Path) -> None:
        self.gpus = list(gpus)
        self.jobs_per_gpu = jobs_per_gpu
        self.lock_dir = Path(lock_dir)
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    def try_lease(self, gpus_per_job: int) -> Lease | None:
        """Lease one free share on each of ``gpus_per_job`` GPUs, or None when not that many
        GPUs have a free share now. Jobs are spread: every GPU's first share before any
        second."""
        lease = Lease([], [])
        for share in range(self.jobs_per_gpu):
            for gpu in self.gpus:
                if gpu in lease.gpus:
                    continue
                descriptor = self._lock(gpu, share)
                if descriptor is None:
                    continue
                lease.gpus.append(gpu)
                lease.shares.append(share)
                lease.descriptors.append(descriptor)
                if len(lease.gpus) == gpus_per_job:
                    return lease
        lease.release()
        return None

    def _lock(self, gpu: str, share: int) -> int | None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", gpu)
        path = self.lock_dir / f"gpu-{name}.share-{share}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        return descriptor

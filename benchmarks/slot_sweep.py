"""Which ``jobs_per_gpu`` keeps a GPU busy: one sweep of small jobs per value, on one GPU.

    python -m benchmarks.slot_sweep [--jobs 8] [--jobs-per-gpu 1 2 4 8] [--gpu 0]
        [--out benchmarks/results/slot_sweep.json] [-- training overrides ...]

Each value runs the same ``--jobs`` jobs (seeds 0..jobs-1 of the given overrides, default a
ring MLP) through ``hydra/launcher=local_gpus hydra.launcher.gpus=[GPU]``, timed from launch to
the last job's end. While it runs, ``nvidia-smi`` samples the GPU's utilisation and memory every
second (absent on a machine without it: the table then has wall times only). Reported per value:
wall time, jobs per minute, mean and peak utilisation, peak memory. On CPU (``--cpu``, for
trying the harness) the jobs train with ``trainer=cpu`` on a fake GPU id.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_JOB = [
    "experiment=ring_mlp",
    "train.iterations=2000",
    "eval.every_n_iterations=1000",
    "trainer.enable_progress_bar=false",
]


class GPUSampler(threading.Thread):
    """``nvidia-smi`` utilisation (%) and memory (MiB) of one GPU, once a second."""

    def __init__(self, gpu: str) -> None:
        super().__init__(daemon=True)
        self.gpu = gpu
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        query = [
            "nvidia-smi",
            f"--id={self.gpu}",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self.stopped.wait(1.0):
            try:
                line = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
                utilisation, memory = (float(part) for part in line.strip().split(","))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                continue
            self.samples.append((utilisation, memory))


def run_sweep(jobs: int, jobs_per_gpu: int, gpu: str, cpu: bool, job: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="slot_sweep-") as scratch:
        command = [
            sys.executable,
            "-m",
            "gan_lab.train",
            "-m",
            "hydra/launcher=local_gpus",
            f"hydra.launcher.gpus=[{gpu}]",
            f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}",
            f"hydra.launcher.lock_dir={scratch}/locks",
            f"hydra.sweep.dir={scratch}/sweep",
            f"trainer={'cpu' if cpu else 'gpu'}",
            *job,
            "seed=" + ",".join(str(seed) for seed in range(jobs)),
        ]
        sampler = GPUSampler(gpu)
        if shutil.which("nvidia-smi") and not cpu:
            sampler.start()
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        sampler.stopped.set()
        if result.returncode != 0:
            raise SystemExit(f"sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
        finished = len(list(Path(scratch, "sweep").glob("*/done")))
    utilisation = [u for u, _ in sampler.samples]
    return {
        "jobs_per_gpu": jobs_per_gpu,
        "jobs": jobs,
        "finished": finished,
        "wall_s": round(wall, 1),
        "jobs_per_min": round(60 * finished / wall, 2),
        "mean_utilisation_pct": round(statistics.fmean(utilisation), 1) if utilisation else None,
        "peak_utilisation_pct": max(utilisation) if utilisation else None,
        "peak_memory_mib": max((m for _, m in sampler.samples), default=None),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--jobs-per-gpu", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--cpu", action="store_true", help="trainer=cpu on a fake GPU id")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("job", nargs="*", help="training overrides (default: a ring MLP)")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for value in args.jobs_per_gpu:
        rows.append(run_sweep(args.jobs, value, args.gpu, args.cpu, args.job or DEFAULT_JOB))
        print(json.dumps(rows[-1]), flush=True)
    print("| jobs_per_gpu | wall (s) | jobs/min | mean util (%) | peak util (%) | peak mem (MiB) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['jobs_per_gpu']} | {row['wall_s']} | {row['jobs_per_min']} | "
            f"{row['mean_utilisation_pct']} | {row['peak_utilisation_pct']} | "
            f"{row['peak_memory_mib']} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"job": args.job or DEFAULT_JOB, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""The ``slurm`` launcher preset: the sbatch script it submits for a sweep, what a requeued job
runs, and the SLURM environment a DDP rank inside one of its tasks gets. No cluster: a fake
``sbatch`` on PATH records the script submitit hands it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmJob

from gan_lab.build import build_trainer
from gan_lab.config import CONF_DIR


def compose_sweep(sweep_dir: Path | str, *overrides: str) -> DictConfig:
    """The multirun config of ``-m hydra/launcher=slurm OVERRIDES``, Hydra's part included."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", *overrides],
            return_hydra_config=True,
        )


def _never_run(cfg: DictConfig) -> None:
    raise AssertionError("the jobs run on the cluster, not in the submitting process")


@pytest.fixture
def sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake ``sbatch`` and ``srun`` first on PATH; returns the folder where sbatch keeps each
    script it is given. submitit refuses to submit where it finds no ``srun``."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" "$(mktemp -p {scripts} XXXXXX)"\necho "Submitted batch job 1234"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    # Nobody runs the jobs here: the launcher must not wait for their results (sacct polling).
    monkeypatch.setattr(SlurmJob, "results", lambda self: [None])
    return scripts


def submit(cfg: DictConfig, jobs: list[list[str]], scripts: Path) -> list[str]:
    """Launch ``jobs`` (each a job's overrides) through the launcher Hydra builds from ``cfg``,
    as the sweeper would; returns the lines of the one sbatch script submitted."""
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=None, task_function=_never_run, config=cfg
    )
    launcher.launch(jobs, initial_job_idx=0)
    submitted = sorted(scripts.iterdir())
    assert len(submitted) == 1, "a sweep is one sbatch submission (an array)"
    return submitted[0].read_text().splitlines()


def sbatch_flags(lines: list[str]) -> dict[str, str | None]:
    """``#SBATCH --key=value`` lines as {key: value} (None for a bare ``--flag``)."""
    flags: dict[str, str | None] = {}
    for line in lines:
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            flags[key] = value or None
    return flags


def test_default_preset_asks_one_gpu_one_task_and_requeues(tmp_path, sbatch):
    lines = submit(compose_sweep(tmp_path / "sweep"), [["loss=hinge"]], sbatch)
    flags = sbatch_flags(lines)
    assert flags["gpus-per-node"] == "1"
    assert flags["ntasks-per-node"] == "1"
    assert flags["nodes"] == "1"
    # submitit's handler (SIGUSR2) checkpoints the launcher call and `scontrol requeue`s it,
    # 120 s before the time limit; the requeued job appends to the same logs.
    assert flags["signal"] == "USR2@120"
    assert "requeue" in flags and flags["requeue"] is None
    assert flags["open-mode"] == "append"
    assert flags["time"] == "240"
    # srun starts the tasks: each is one rank (Lightning's SLURMEnvironment), none spawns more.
    command = lines[lines.index("# command") + 2]
    assert command.startswith("srun ") and "-m submitit.core._submit" in command


def test_tasks_per_node_follow_gpus_per_node(tmp_path, sbatch):
    cfg = compose_sweep(
        tmp_path / "sweep",
        "trainer=ddp",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.signal_delay_s=300",
    )
    flags = sbatch_flags(submit(cfg, [["seed=0"]], sbatch))
    assert flags["gpus-per-node"] == "4"
    assert flags["ntasks-per-node"] == "4"  # 4 DDP ranks, one per GPU
    assert flags["signal"] == "USR2@300"


@pytest.mark.parametrize(("jobs", "array"), [(1, None), (3, "0-2%3"), (20, "0-19%16")])
def test_a_sweep_is_one_array_of_at_most_16_running_jobs(tmp_path, sbatch, jobs, array):
    overrides = [[f"seed={seed}"] for seed in range(jobs)]
    flags = sbatch_flags(submit(compose_sweep(tmp_path / "sweep"), overrides, sbatch))
    assert flags.get("array") == array


def test_requeued_job_reruns_its_overrides_in_its_run_dir(tmp_path, sbatch):
    """What submitit's SIGUSR2 handler resubmits: the same launcher call, whose config still
    resolves the timestamped sweep dir to the one the first attempt wrote to (Hydra's ``now``
    resolver cache is pickled with it), and with the job's own overrides, nothing added."""
    cfg = compose_sweep(tmp_path / "${now:%H-%M-%S-%f}")
    submit(cfg, [["loss=hinge", "seed=3"]], sbatch)
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.name not in ("bin", "submitted")]
    (pickled,) = sweep_dir.glob(".submitit/*/*_submitted.pkl")
    with pickled.open("rb") as file:
        delayed = pickle.load(file)
    assert delayed._timeout_countdown == 3  # max_num_timeout: time-limit requeues allowed
    requeued = delayed._checkpoint_function()  # BaseSubmititLauncher.checkpoint
    overrides, job_dir_key, job_num = requeued.args[:3]
    assert overrides == ["loss=hinge", "seed=3"]
    assert (job_dir_key, job_num) == ("hydra.sweep.dir", 0)
    assert Path(requeued.function.config.hydra.sweep.dir) == sweep_dir


# What srun gives task 1 of a job with --ntasks-per-node=2 on one node.
SLURM_TASK_1_OF_2 = {
    "SLURM_JOB_ID": "4321",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "gpu-node-01",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "0",
}


@pytest.fixture
def slurm_task(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SLURM_TASK_1_OF_2.items():
        monkeypatch.setenv(name, value)
    # Building a DDP trainer sets Lightning's process-wide rank; later tests expect rank 0.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    return SLURM_TASK_1_OF_2


def test_ddp_rank_in_a_slurm_task_takes_its_rank_from_slurm(slurm_task, make_config):
    trainer = build_trainer(make_config("trainer=ddp_cpu"))
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 1, 1)
    # srun started the ranks: Lightning's launcher starts none of its own, and the task count
    # matches the devices (checked when fit launches).
    assert environment.creates_processes_externally
    environment.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)


def test_ddp_refuses_a_task_count_other_than_its_devices(slurm_task, make_config, monkeypatch):
    """Why the preset's tasks per node follow its GPUs: trainer=ddp takes every GPU it sees."""
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    trainer = build_trainer(make_config("trainer=ddp_cpu"))
    # The first thing fit does; it fails before any process or process group is started.
    with pytest.raises(ValueError, match="ntasks-per-node=1"):
        trainer.strategy.launcher.launch(_never_run, trainer=trainer)

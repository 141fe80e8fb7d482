"""GPU slots for local sweeps (hydra/launcher=local_gpus): leases, and real sweeps on a fake list
of GPUs with CPU training.

A sweep job's own records are the evidence: its slot from ``.hydra/config.yaml``, its run from
the moment Hydra wrote that file to the moment it wrote ``done``. Both moments lie inside the
job's lease, so two records that overlap in time mean two leases that did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gan_lab.errors import ConfigError
from gan_lab.gpu_slots import SlotPool, visible_gpus
from gan_lab.slot_launcher import slot_pool
from tests import processes

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=ring_mlp",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "data.batch_size=32",
    "eval.every_n_iterations=1000",
    "train.log_every=5",
    "trainer.enable_progress_bar=false",
]


def test_a_pool_leases_each_share_once_and_spreads_jobs_over_gpus(tmp_path):
    pool = SlotPool(["0", "1"], jobs_per_gpu=2, lock_dir=tmp_path)
    leases = [pool.try_lease(1) for _ in range(4)]
    assert [(lease.gpus, lease.shares) for lease in leases] == [
        (["0"], [0]),
        (["1"], [0]),
        (["0"], [1]),
        (["1"], [1]),
    ]
    assert pool.try_lease(1) is None
    leases[1].release()
    again = pool.try_lease(1)
    assert (again.gpus, again.shares) == (["1"], [0])


def test_a_job_of_several_gpus_gets_distinct_gpus_or_none(tmp_path):
    pool = SlotPool(["0", "1", "2"], jobs_per_gpu=1, lock_dir=tmp_path)
    first = pool.try_lease(2)
    assert first.gpus == ["0", "1"] and first.cuda_visible_devices == "0,1"
    assert pool.try_lease(2) is None  # one GPU left: not enough, and none kept
    assert pool.try_lease(1).gpus == ["2"]


def test_a_killed_holder_releases_its_slot(tmp_path):
    pool = SlotPool(["0"], jobs_per_gpu=1, lock_dir=tmp_path)
    lease = pool.try_lease(1)
    holder = processes.spawn(["sleep", "60"], pass_fds=lease.descriptors)
    lease.release()  # only the child holds it now
    try:
        assert pool.try_lease(1) is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert pool.try_lease(1).gpus == ["0"]
    finally:
        processes.stop(holder)


def test_gpus_come_from_the_setting_then_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus() == ["2", "5"]
    assert visible_gpus([0, 1]) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gpus": [], "gpus_per_job": 1, "jobs_per_gpu": 1}, "hydra.launcher.gpus=[]: no GPU"),
        ({"gpus": [0], "gpus_per_job": 2, "jobs_per_gpu": 1}, "gpus_per_job=2: more than the 1"),
        ({"gpus": [0], "gpus_per_job": 1, "jobs_per_gpu": 0}, "jobs_per_gpu=0: must be"),
        ({"gpus": [0, 0], "gpus_per_job": 1, "jobs_per_gpu": 1}, "lists a GPU twice"),
    ],
)
def test_impossible_slot_settings_name_the_key(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        slot_pool(**settings, lock_dir=str(tmp_path))


def _start_sweep(tmp_path: Path, gpus: str, jobs_per_gpu: int, *overrides: str):
    log = (tmp_path / "sweep.log").open("w")
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        "-m",
        "hydra/launcher=local_gpus",
        f"hydra.launcher.gpus={gpus}",
        f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}",
        f"hydra.launcher.lock_dir={tmp_path / 'locks'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY,
        *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return processes.spawn(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_sweep(sweep: subprocess.Popen, tmp_path: Path, timeout: float) -> str:
    """Wait for the sweep to end (its group is stopped in any case); returns what it printed."""
    try:
        sweep.wait(timeout=timeout)
    finally:
        processes.stop(sweep)
    return (tmp_path / "sweep.log").read_text()


def _wait_for_training(run_dir: Path, timeout: float) -> int:
    """The pid of the process training in ``run_dir`` once it has logged a row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = json.loads((run_dir / "gan_lab.lock").read_text())["pid"]
            if len((run_dir / "metrics.csv").read_text().splitlines()) > 1:
                return pid
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no training in {run_dir} after {timeout} s")


def _records(sweep: Path, killed: int, killed_at: float) -> dict[int, dict]:
    records = {}
    for config in sweep.glob("*/.hydra/config.yaml"):
        run_dir = config.parents[1]
        slot = yaml.safe_load(config.read_text())["slot"]
        done = run_dir / "done"
        end = done.stat().st_mtime if done.is_file() else None
        if int(run_dir.name) == killed:
            end = killed_at
        records[int(run_dir.name)] = {
            "slot": (tuple(slot["gpus"]), tuple(slot["shares"])),
            "start": config.stat().st_mtime,
            "end": end,
            "hparams": yaml.safe_load((run_dir / "hparams.yaml").read_text())["slot"],
        }
    return records


def _most_at_once(records: dict[int, dict]) -> int:
    events = sorted(
        [(r["start"], 1) for r in records.values()] + [(r["end"], -1) for r in records.values()]
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize(
    ("jobs_per_gpu", "slots"),
    [(1, 2), (2, 4)],
)
# ~40 s each on 2 cores (six fresh interpreters); make test has the launcher's start, slot
# record and signal path in test_sigterm_to_the_launcher_stops_the_sweep_saved
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sweep_keeps_every_slot_busy_and_a_killed_job_frees_its_slot(
    tmp_path, jobs_per_gpu, slots
):
    # Jobs of different lengths; #2 and #3 are the long ones, #2 is killed mid-run.
    sweep = _start_sweep(tmp_path, "[0,1]", jobs_per_gpu, "train.iterations=20,300,60", "seed=0,1")
    try:
        pid = _wait_for_training(tmp_path / "sweep" / "2", timeout=180)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        sweep.wait(timeout=200)
    finally:
        processes.stop(sweep)
    output = (tmp_path / "sweep.log").read_text()
    # The killed job fails the sweep at its end, after every other job has run.
    assert sweep.returncode == 1, output[-3000:]
    assert "sweep job #2" in output and "was killed by SIGKILL" in output
    records = _records(tmp_path / "sweep", killed=2, killed_at=killed_at)
    assert sorted(records) == list(range(6))
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/done")) == [
        "0",
        "1",
        "3",
        "4",
        "5",
    ]
    # The job ran with its slot's GPU as its only visible device, and recorded it.
    gpus, _ = records[2]["slot"]
    assert f"CUDA_VISIBLE_DEVICES={gpus[0]}".encode() in environ
    for record in records.values():
        gpus, shares = record["slot"]
        assert gpus[0] in {"0", "1"} and shares[0] < jobs_per_gpu
        assert record["hparams"]["gpus"] == list(gpus)
    assert _most_at_once(records) <= slots
    for one in records.values():
        for other in records.values():
            if one is not other and one["slot"] == other["slot"]:
                assert one["end"] <= other["start"] or other["end"] <= one["start"]
    # The killed job's slot went on working: a job started on it after the kill.
    assert any(r["slot"] == records[2]["slot"] and r["start"] > killed_at for r in records.values())


def _stop_sweep_by_signal(
    tmp_path: Path, *overrides: str, sig: signal.Signals = signal.SIGTERM, group: bool = False
) -> str:
    """A 2-job sweep on one slot (fake GPU 3), ``sig`` to the launcher alone (as `kill <pid>`
    would) or to its whole process group (as a terminal's Ctrl+C would) once job 0 trains;
    returns what the sweep printed."""
    sweep = _start_sweep(tmp_path, "[3]", 1, "train.iterations=400", "seed=0,1", *overrides)
    try:
        pid = _wait_for_training(tmp_path / "sweep" / "0", timeout=90)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=3" in environ  # pinned before the job started
        (os.killpg if group else os.kill)(sweep.pid, sig)
        sweep.wait(timeout=60)
    finally:
        processes.stop(sweep)
    output = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 128 + sig, output[-3000:]
    return output


@pytest.mark.timeout(120)
def test_sigterm_to_the_launcher_stops_the_sweep_saved(tmp_path):
    output = _stop_sweep_by_signal(tmp_path)
    assert "stopped: SIGTERM at iteration" in output  # the job's own stop line
    config = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").read_text())
    assert config["slot"]["gpus"] == ["3"] and config["slot"]["shares"] == [0]
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "sweep" / "0" / "done").exists()
    assert not (tmp_path / "sweep" / "1").exists()  # never started


@pytest.mark.slow  # ~16 s; make test has the SIGTERM case
@pytest.mark.timeout(120)
def test_ctrl_c_in_the_terminal_stops_the_sweep_saved(tmp_path):
    """SIGINT to the launcher's process group: each job gets it once (the launcher does not
    pass it on, which would be a second Ctrl+C), saves at its iteration boundary, and the
    sweep ends with 130, starting no new job."""
    output = _stop_sweep_by_signal(tmp_path, sig=signal.SIGINT, group=True)
    assert "stopped: SIGINT at iteration" in output and "stopped at once" not in output
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "sweep" / "1").exists()


@pytest.mark.slow  # ~40 s: a stopped sweep launched again (three jobs in all)
@pytest.mark.timeout(240)
def test_a_sweep_stopped_by_sigterm_finishes_when_launched_again(tmp_path):
    """README's "Interrupted multirun": the same sweep again with ckpt_path=last finishes it,
    the stopped job from its last.ckpt (on whichever slot is free then)."""
    _stop_sweep_by_signal(tmp_path, "ckpt_path=last")
    sweep = _start_sweep(tmp_path, "[0]", 1, "train.iterations=400", "seed=0,1", "ckpt_path=last")
    output = _wait_for_sweep(sweep, tmp_path, timeout=150)
    assert sweep.returncode == 0, output[-3000:]
    assert "resuming from" in (tmp_path / "sweep" / "0" / "train.log").read_text()
    assert all((tmp_path / "sweep" / job / "done").is_file() for job in ("0", "1"))


@pytest.mark.slow  # ~30 s: two 2-rank DDP jobs one after the other
@pytest.mark.timeout(180)
def test_a_job_of_two_gpus_runs_ddp_on_both(tmp_path):
    """gpus_per_job=2 with trainer=ddp_cpu: each job's two ranks (Lightning starts the second
    with the job's own command line) share its slot, and the jobs take turns on the 2 GPUs."""
    sweep = _start_sweep(
        tmp_path,
        "[0,1]",
        1,
        "hydra.launcher.gpus_per_job=2",
        "trainer=ddp_cpu",
        "train.iterations=20",
        "seed=0,1",
    )
    output = _wait_for_sweep(sweep, tmp_path, timeout=150)
    assert sweep.returncode == 0, output[-3000:]
    records = _records(tmp_path / "sweep", killed=-1, killed_at=0.0)
    assert [records[n]["slot"] for n in (0, 1)] == [(("0", "1"), (0, 0))] * 2
    assert _most_at_once(records) == 1
    assert output.count("run finished") == 2  # rank 0 reports, once per job


@pytest.mark.slow  # ~40 s: two sweeps of two jobs
@pytest.mark.timeout(240)
def test_the_jobs_per_gpu_benchmark_runs_on_cpu(tmp_path):
    """benchmarks/slot_sweep.py (benchmarks/gpu.sh on a GPU) with trainer=cpu on a fake GPU."""
    out = tmp_path / "slot_sweep.json"
    processes.run(
        [sys.executable, "-m", "benchmarks.slot_sweep", "--cpu", "--jobs", "2"]
        + ["--jobs-per-gpu", "1", "2", "--out", str(out), "--"]
        + [*TINY, "train.iterations=20"],
        timeout=200,
        cwd=ROOT,
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(row["jobs_per_gpu"], row["finished"]) for row in rows] == [(1, 2), (2, 2)]
    assert all(row["wall_s"] > 0 and row["jobs_per_min"] > 0 for row in rows)


@pytest.mark.slow  # ~15 s; the lease semantics are in test_a_killed_holder_releases_its_slot
@pytest.mark.timeout(180)
def test_a_sweep_waits_for_a_slot_another_process_holds(tmp_path):
    """Slots are the machine's, not the sweep's: a lease held elsewhere (another sweep's job)
    keeps this sweep waiting, and it starts once that holder ends."""
    pool = SlotPool(["0"], jobs_per_gpu=1, lock_dir=tmp_path / "locks")
    lease = pool.try_lease(1)
    holder = processes.spawn(["sleep", "60"], pass_fds=lease.descriptors)
    lease.release()
    sweep = _start_sweep(tmp_path, "[0]", 1, "train.iterations=10")
    try:
        deadline = time.monotonic() + 60
        while "waiting" not in (tmp_path / "sweep.log").read_text():
            assert time.monotonic() < deadline and sweep.poll() is None
            time.sleep(0.1)
        assert not (tmp_path / "sweep" / "0").exists()
        processes.stop(holder)
        output = _wait_for_sweep(sweep, tmp_path, timeout=90)
    finally:
        processes.stop(holder)
    assert sweep.returncode == 0, output[-3000:]
    assert (tmp_path / "sweep" / "0" / "done").is_file()

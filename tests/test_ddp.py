"""DDP with manual optimization: 2 CPU processes (gloo) train one GAN in one run directory.

Evaluation runs mid-training on every rank (samples and features sharded over the ranks, the
metric states gathered by torchmetrics), every checkpoint save is reached by every rank, a stop
(a signal, divergence) is decided for all ranks at once, and each rank's RNG and data stream are
checkpointed, so an interrupted DDP run resumes to the run it would have been. ``make test`` has
the ring case; the digits case, the resume and the lost rank run in ``make test-full``.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gan_lab
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.data.streams import SamplerStream
from gan_lab.gan_module import _own_rng_state
from gan_lab.stopping import EXIT_DIVERGED, EXIT_SIGTERM
from tests import processes
from tests.helpers import run_cli
from tests.test_resume import assert_same_checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=csv", "callbacks=default", "trainer.enable_progress_bar=false"]
CASES = {
    # A wide ring and fast rates: the reverse KL moves within 30 iterations and best.ckpt is
    # replaced mid-run (the narrow preset ring scores inf at every evaluation that early).
    "ring": [
        "experiment=ring_mlp",
        "model.g.hidden=[16]",
        "model.d.hidden=[16]",
        "data.batch_size=32",
        "data.std=0.25",
        "optimizer.g.lr=5e-3",
        "optimizer.d.lr=5e-3",
    ],
    # Classifier-feature FID/KID: the real and generated sets are split between the ranks.
    "digits": [
        "experiment=digits_dcgan",
        "model.g.base_channels=8",
        "model.d.base_channels=8",
        "data.batch_size=32",
        "eval.evaluator.num_real=300",
        "eval.evaluator.num_fake=301",  # odd: the ranks' shares differ by one
        "eval.evaluator.kid_subset_size=100",
    ],
    # 20,000 samples gathered for the fit and theory metrics; the theory plot by rank 0.
    "gaussian_1d": ["experiment=gaussian1d_mlp", "data.batch_size=32"],
}
EVAL_EVERY_5 = [
    "train.iterations=30",
    "train.log_every=5",
    "train.sample_every=15",
    "train.checkpoint_every=10",
    "eval.every_n_iterations=5",
    *QUIET,
]
# A single-process evaluation of the same checkpoint scores the same samples (the evaluation
# noise is the run's, drawn on the CPU); sums gathered over ranks in another order differ in
# the last bits, which FID's matrix square root can grow: relative 1e-4 (measured on CPU:
# equal, for ring, digits and the 1-D Gaussian).
REL = 1e-4


def dump_rank(dumps: Path) -> list[str]:
    return ["+callbacks.dump._target_=tests.helpers.DumpRank", f"+callbacks.dump.dirpath={dumps}"]


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluations(run_dir: Path) -> dict[int, dict[str, float]]:
    """The logged evaluation rows by iteration: every ``val/``, ``toy/``, ``theory/`` value."""
    found: dict[int, dict[str, float]] = {}
    for row in read_rows(run_dir):
        values = {
            k: float(v) for k, v in row.items() if v and k.startswith(("val/", "toy/", "theory/"))
        }
        if values:
            found.setdefault(int(float(row["step"])), {}).update(values)
    return found


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "case",
    [
        "ring",
        pytest.param("digits", marks=pytest.mark.slow),
        pytest.param("gaussian_1d", marks=pytest.mark.slow),
    ],
)
def test_ddp_evaluates_mid_run_on_every_rank(tmp_path, case):
    """The issue's hang: an evaluation every 5 iterations with a best.ckpt to update. The run
    ends, the ranks stay equal, best.ckpt holds the best evaluated iteration, and the logged
    metrics are those of a single-process evaluation of the same checkpoint."""
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    result = run_cli(
        *CASES[case],
        *EVAL_EVERY_5,
        "trainer=ddp_cpu",
        f"hydra.run.dir={run_dir}",
        *dump_rank(dumps),
        timeout=200,
    )
    assert "not used in producing the loss" not in result.stderr
    # One process reports: the launcher's summary, not one per rank.
    assert result.stdout.count("run finished") + result.stderr.count("run finished") == 1

    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt") for r in (0, 1))
    # Gradients were all-reduced every step. (BatchNorm's running statistics are each rank's
    # own until DDP sends rank 0's at the next forward, or the evaluation does.)
    for key, value in rank0["parameters"].items():
        assert torch.equal(value, rank1["parameters"][key]), key
    # Ranks saw different data and noise, and the logged loss is their mean.
    assert rank0["g_losses"] != rank1["g_losses"]
    logged = {
        int(float(r["step"])): float(r["train/g_loss"])
        for r in read_rows(run_dir)
        if r.get("train/g_loss")
    }
    for iteration in (5, 30):
        mean = (rank0["g_losses"][iteration - 1] + rank1["g_losses"][iteration - 1]) / 2
        assert logged[iteration] == pytest.approx(mean, abs=1e-5)

    evaluated = evaluations(run_dir)
    assert sorted(evaluated) == [5, 10, 15, 20, 25, 30]
    primary = {it: row["val/primary"] for it, row in evaluated.items()}
    best = min(primary, key=lambda it: (primary[it], it))  # the first of equal scores
    assert best > 5 and math.isfinite(primary[best])  # best.ckpt was replaced mid-run
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best.ckpt",
        "iter_0000010.ckpt",
        "iter_0000020.ckpt",
        "iter_0000030.ckpt",
        "last.ckpt",
    ]
    assert load_checkpoint_file(checkpoints / "best.ckpt")["gan_lab"]["iteration"] == best
    stored = load_checkpoint_file(checkpoints / "last.ckpt")
    assert len(stored["gan_lab"]["ranks"]) == 2  # each rank's RNG, for an exact resume

    # The logged numbers are those of one process scoring the same checkpoint.
    alone = gan_lab.evaluate(checkpoints / "last.ckpt")
    for key, value in evaluated[30].items():
        assert alone[key] == pytest.approx(value, rel=REL, abs=1e-9), key
    if case == "digits":
        assert math.isfinite(evaluated[30]["val/fid_classifier"])

    # One run directory for both ranks; images written once, by rank 0.
    assert sorted(p.name for p in (run_dir / "samples").glob("iter_*.png")) == [
        "iter_0000000.png",
        "iter_0000015.png",
        "iter_0000030.png",
    ]
    assert not list(tmp_path.glob("outputs")) and (run_dir / "done").is_file()
    for path in checkpoints.glob("*.ckpt"):  # DDP's checkpoints open safely, like any other
        assert gan_lab.load(path).iteration in (10, 20, 30, best), path


# ------------------------------------------------------------------ per-rank state, in one process
def _ring_stream(seed: int) -> SamplerStream:
    return SamplerStream(lambda n, g: torch.randn(n, 2, generator=g), 4, seed=seed)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_each_rank_resumes_its_own_stream_and_rng(monkeypatch, rank):
    """A DDP checkpoint holds every rank's stream state and RNG; each rank takes its own, and a
    rank the checkpoint has none for (it ran on fewer ranks) keeps its fresh stream."""
    saved = [_ring_stream(seed) for seed in (10, 20)]
    for stream in saved:
        next(iter(stream))
    states = [stream.state_dict() for stream in saved]  # one process: each its plain state
    rngs = [{"torch": torch.Generator().manual_seed(s).get_state()} for s in (1, 2)]
    world = (rank, 3)
    monkeypatch.setattr("gan_lab.distributed.rank_and_world", lambda: world)
    monkeypatch.setattr("gan_lab.gan_module.rank_and_world", lambda: world)

    fresh = _ring_stream(30 + rank)
    expected = next(iter(_ring_stream(30 + rank)))
    fresh.load_state_dict({"ranks": states})
    if rank < 2:
        expected = next(iter(saved[rank]))
    assert torch.equal(next(iter(fresh)), expected)
    own = _own_rng_state({"rng": rngs[0], "ranks": [{"rng": r} for r in rngs]})
    assert own is (rngs[rank] if rank < 2 else None)
    # A one-process checkpoint holds rank 0's stream and RNG only.
    assert _own_rng_state({"rng": rngs[0]}) is (rngs[0] if rank == 0 else None)


def test_ddp_trainer_configs_validate_and_build(make_config):
    """trainer=ddp and ddp_cpu pass start-up validation (the strategy's timeout is a nested
    timedelta node); ddp_cpu builds a 2-process DDP trainer with that timeout."""
    from datetime import timedelta

    from hydra.utils import instantiate

    from gan_lab.build import build_trainer
    from gan_lab.validation import validate

    validate(make_config("experiment=ring_mlp", "trainer=ddp"))
    cfg = make_config("experiment=ring_mlp", "trainer=ddp_cpu")
    validate(cfg)
    assert instantiate(cfg.trainer.strategy.timeout) == timedelta(seconds=600)
    assert build_trainer(cfg).world_size == 2


def test_a_signal_during_the_ranks_agreement_is_kept_for_the_next(monkeypatch, tmp_path):
    """A rank spends most of an iteration's end blocked in the all-reduce where the ranks agree
    on stopping, so that is where a signal usually lands: its handler runs as the all-reduce
    returns. The flag it sets must survive the agreement (no other rank had seen a signal) and
    stop every rank one iteration later. (It was overwritten by the agreed "no signal": a
    Ctrl+C to a DDP run was lost and the run trained on to its budget.)"""
    from types import SimpleNamespace

    from gan_lab.callbacks.interruption import Interruption

    interruption = Interruption(str(tmp_path))
    sent: list[int] = []

    def all_max(seen):  # the other rank saw nothing; this rank's Ctrl+C arrives meanwhile
        sent.append(int(seen.item()))
        if len(sent) == 1:
            interruption._on_sigint(signal.SIGINT, None)
        return seen if len(sent) > 1 else torch.zeros_like(seen)

    monkeypatch.setattr("gan_lab.callbacks.interruption.all_max", all_max)
    stops = []
    module = SimpleNamespace(
        device=torch.device("cpu"),
        iteration=7,
        stopped=None,
        check_finite=lambda: True,
        request_stop=stops.append,
    )
    trainer = SimpleNamespace(
        world_size=2, received_sigterm=False, callbacks=[], is_global_zero=True
    )
    trainer.save_checkpoint = lambda *args, **kwargs: None
    interruption.on_train_batch_end(trainer, module)
    assert stops == [] and interruption.signal_name == "SIGINT"
    module.iteration = 8
    interruption.on_train_batch_end(trainer, module)
    assert sent == [0, 2]  # the second agreement carries this rank's SIGINT
    assert [(stop.reason, stop.iteration) for stop in stops] == [("SIGINT", 8)]


# ------------------------------------------------------------------ interrupted and resumed
RESUME = [*CASES["ring"], *EVAL_EVERY_5, "trainer=ddp_cpu"]


def launch(run_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        *RESUME,
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return processes.spawn(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, expected: int, timeout: float = 150) -> str:
    out, err = processes.communicate(process, timeout=timeout)
    assert process.returncode == expected, (out + err)[-4000:]
    return out + err


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ddp_sigterm_then_resume_equals_straight_run(tmp_path):
    """SIGTERM to the launcher (rank 0) at iteration 15 stops both ranks at one iteration and
    checkpoints once; ``ckpt_path=last`` then continues each rank's noise and data stream, so
    the weights and metrics.csv equal those of a run never stopped."""
    straight = tmp_path / "straight"
    finish(launch(straight), 0)
    stopped = tmp_path / "stopped"
    signal_at_15 = [
        "+callbacks.signal._target_=tests.helpers.SignalAt",
        "+callbacks.signal.iteration=15",
        "+callbacks.signal.signal_name=SIGTERM",
        "+callbacks.signal.rank=0",
    ]
    output = finish(launch(stopped, *signal_at_15), EXIT_SIGTERM)
    saved = load_checkpoint_file(stopped / "checkpoints" / "last.ckpt")
    at = saved["gan_lab"]["iteration"]
    assert 15 <= at < 30
    assert output.count(f"stopped: SIGTERM at iteration {at}: saved") == 1, output[-3000:]
    assert not (stopped / "done").exists()

    finish(launch(stopped, "ckpt_path=last"), 0)
    assert (stopped / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()
    assert_same_checkpoint(
        stopped / "checkpoints" / "last.ckpt", straight / "checkpoints" / "last.ckpt", 30
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_ddp_non_finite_on_one_rank_stops_every_rank_alike(tmp_path, policy):
    """NaN data on rank 1 only, from iteration 14: the all-reduced gradients carry it to both
    ranks, and both decide as one. ``stop``: found by the check before the iteration-20
    checkpoint, which neither rank writes; ``skip``: rank 0 skips the updates rank 1 skips,
    and the fifth skip stops both (a rank stepping alone would leave the ranks unequal)."""
    run_dir = tmp_path / "run"
    nan_on_rank_1 = [
        "+callbacks.nan._target_=tests.helpers.NaNBatches",
        "+callbacks.nan.first=14",
        "+callbacks.nan.rank=1",
        "eval.every_n_iterations=0",
        f"train.on_nan={policy}",
        "train.max_skips=5",
    ]
    output = finish(launch(run_dir, *nan_on_rank_1), EXIT_DIVERGED)
    checkpoint = load_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")
    saved = checkpoint["gan_lab"]
    if policy == "stop":
        assert output.count("stopped: stopping: non-finite d_loss at iteration 14") == 1
        assert saved["iteration"] == 10
    else:
        assert output.count("] stopping: 5 non-finite updates skipped") == 1  # rank 0's
        assert output.count("stopped: stopping: 5 non-finite updates skipped") == 1
        assert (saved["iteration"], saved["skipped"]) == (18, 5)
        assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (run_dir / "done").exists()


# ------------------------------------------------------------------ a lost rank
# gloo notices a peer's closed socket at the next collective; NCCL waits out the strategy's
# timeout (trainer.strategy.timeout, conf/trainer/ddp.yaml). Both end the others non-zero.
LOST_RANK_LIMIT_S = 60


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("victim", [1, 0], ids=["worker", "launcher"])
def test_ddp_lost_rank_ends_the_run(tmp_path, victim):
    """SIGKILL of one rank mid-run: every other rank ends, non-zero, within the limit."""
    run_dir, pids = tmp_path / "run", tmp_path / "pids"
    process = launch(
        run_dir,
        "train.iterations=100000",
        "+callbacks.pid._target_=tests.helpers.RankPid",
        f"+callbacks.pid.dirpath={pids}",
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={tmp_path}/progress",
        "+callbacks.throttle.seconds=0.01",
    )
    progress = tmp_path / "progress"
    deadline = time.monotonic() + 120
    while not (progress.is_file() and (text := progress.read_text()) and int(text) >= 10):
        assert process.poll() is None, "the run ended before a rank could be killed"
        assert time.monotonic() < deadline, "the run did not reach iteration 10"
        time.sleep(0.05)
    ranks = {r: int((pids / f"rank{r}.pid").read_text()) for r in (0, 1)}
    os.kill(ranks[victim], signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = ranks[1 - victim]
    while _running(survivor):
        assert time.monotonic() - killed_at < LOST_RANK_LIMIT_S, (
            f"rank {1 - victim} still runs {LOST_RANK_LIMIT_S} s after rank {victim} was killed"
        )
        time.sleep(0.2)
    if victim == 1:  # the launcher is the survivor, and the test's child: its status is known
        out, err = processes.communicate(process, timeout=30)
        assert process.returncode not in (0, None), (out + err)[-3000:]
        assert "run finished" not in out + err
    else:
        processes.stop(process)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

"""The GAN-aware DDP strategy (benchmarks/ddp_designs.py) against today's trainer=ddp.

Both designs average the same gradients over the ranks, so from one seed they must train the
same weights: the benchmark in docs/benchmarks.md compares their speed only because this holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.ddp_designs import STRATEGIES, GANAwareDDPStrategy
from tests.helpers import run_cli

# A ring MLP small enough that start-up dominates; k=2 so each iteration steps D twice.
RING = [
    "experiment=ring_mlp",
    "model.g.hidden=[32,32]",
    "model.d.hidden=[32,32]",
    "data.batch_size=32",
    "train.k_d_steps=2",
    "train.iterations=20",
    "train.log_every=5",
    "eval=none",
    "logger=csv",
    "callbacks=default",
    "train.sample_every=1000",
    "train.checkpoint_every=1000",
    "trainer.enable_progress_bar=false",
    "trainer=ddp_cpu",
]
# Measured on CPU (gloo, 2 ranks): the designs end bit for bit equal; for 2 ranks DDP's
# x/2 + y/2 and this strategy's (x + y)/2 are the same floats. The tolerance leaves room for
# a backend that sums in another order (NCCL's ring) over 20 iterations of Adam.
ATOL = 1e-5


def train(tmp_path: Path, design: str) -> dict:
    """One 20-iteration DDP run of ``design``: each rank's parameters, G losses and strategy."""
    run_dir, dumps, timer = (tmp_path / design / name for name in ("run", "dumps", "timer"))
    run_cli(
        *RING,
        f"trainer.strategy._target_={STRATEGIES[design]}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.dump._target_=tests.helpers.DumpRank",
        f"+callbacks.dump.dirpath={dumps}",
        "+callbacks.timer._target_=benchmarks.ddp_designs.IterationTimer",
        f"+callbacks.timer.dirpath={timer}",
        "+callbacks.timer.warmup=0",
        timeout=150,
    )
    ranks = [torch.load(dumps / f"rank{r}.pt") for r in (0, 1)]
    records = [json.loads((timer / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"ranks": ranks, "strategies": {record["strategy"] for record in records}}


@pytest.mark.slow  # two 2-process runs: 27 s on the idle 2-core CPU machine, 45 s under load
@pytest.mark.timeout(330)  # two runs of up to 150 s each (run_cli's own bound fails first)
def test_gan_aware_strategy_trains_the_weights_find_unused_parameters_trains(tmp_path):
    """Same seed, data and updates under both strategies: every G and D parameter ends equal
    (ATOL), each run's two ranks hold equal parameters although they drew different data and
    noise, and the per-rank G losses of every iteration agree."""
    gan_aware = train(tmp_path, "gan_aware")
    find_unused = train(tmp_path, "find_unused")
    assert gan_aware["strategies"] == {"GANAwareDDPStrategy"}
    assert find_unused["strategies"] == {"DDPStrategy"}

    for run in (gan_aware, find_unused):
        rank0, rank1 = run["ranks"]
        assert rank0["g_losses"] != rank1["g_losses"]  # the ranks' data and noise differ
        for key, value in rank0["parameters"].items():
            assert torch.equal(value, rank1["parameters"][key]), key

    for rank in (0, 1):
        ours, theirs = gan_aware["ranks"][rank], find_unused["ranks"][rank]
        assert ours["parameters"].keys() == theirs["parameters"].keys()
        nets = {key.split(".")[0] for key in ours["parameters"]}
        assert {"generator", "discriminator"} <= nets
        for key, value in ours["parameters"].items():
            assert torch.allclose(value, theirs["parameters"][key], rtol=0, atol=ATOL), key
        assert len(ours["g_losses"]) == 20
        assert ours["g_losses"] == pytest.approx(theirs["g_losses"], abs=ATOL)


def test_gan_aware_strategy_is_selected_on_top_of_the_ddp_trainer_config(make_config):
    """trainer=ddp_cpu with only the strategy's _target_ changed validates and builds a
    2-process trainer with the strategy (trainer=ddp's find_unused_parameters is accepted and
    has no effect); options of DistributedDataParallel, which it never builds, are refused."""
    from gan_lab.build import build_trainer
    from gan_lab.validation import validate

    cfg = make_config(
        "experiment=ring_mlp",
        "trainer=ddp_cpu",
        f"trainer.strategy._target_={STRATEGIES['gan_aware']}",
    )
    validate(cfg)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.strategy, GANAwareDDPStrategy)
    assert trainer.world_size == 2
    with pytest.raises(TypeError, match="static_graph"):
        GANAwareDDPStrategy(static_graph=True)

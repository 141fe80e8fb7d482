"""Two DDP designs for the GAN's manual optimization, timed against each other.

    python -m benchmarks.ddp_designs [--design gan_aware find_unused] [--device cpu|cuda]
        [--workloads ring_wide digits] [--iterations N] [--warmup N] [--repeats N]
        [--devices N] [--out JSON] [-- hydra overrides for every run ...]

``find_unused`` is today's ``trainer=ddp``: Lightning's ``DDPStrategy(find_unused_parameters=
True)`` wraps the whole GANModule in DistributedDataParallel. Every ``manual_backward`` then
walks the autograd graph for parameters that took no part, and the reducer all-reduces the
gradients of both nets (the net not being stepped contributes zeros).

``gan_aware`` is ``GANAwareDDPStrategy`` below: the module is not wrapped; rank 0's parameters
and buffers are broadcast once at setup (as DDP does when it wraps) and its buffers once per
iteration (as DDP does before each forward), and each ``optimizer.step()`` first averages the
gradients of that optimizer's parameters over the ranks, in one all-reduce of one flat buffer.
It is selected on top of ``trainer=ddp`` / ``trainer=ddp_cpu`` with
``trainer.strategy._target_=benchmarks.ddp_designs.GANAwareDDPStrategy``.

The harness runs ``python -m gan_lab.train`` once per design and repeat, alternating
A B A B, each in its own process group, because Lightning's subprocess launcher re-runs the
command line for every rank: timing inside one Python process would have each rank re-run the
harness. Per run it reports the whole process's wall time (start-up, the rank launch and the
data included) and, from ``IterationTimer`` on rank 0, the time per iteration from the start
of iteration ``warmup`` to the end of the last; the first pair is warm-up, not reported. Every
run also saves each rank's final parameters, so the JSON says whether the ranks agreed and
whether the two designs trained the same weights.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.optim import Optimizer

from benchmarks.bench import StepTimer
from benchmarks.bench import machine_info as bench_machine_info

ROOT = Path(__file__).resolve().parents[1]
# In the order each pair runs; ratios are first/second: the candidate over today's design.
STRATEGIES = {
    "gan_aware": "benchmarks.ddp_designs.GANAwareDDPStrategy",
    "find_unused": "lightning.pytorch.strategies.DDPStrategy",
}
# Workloads where the all-reduce is not lost in the compute: wide MLPs on small batches (about
# 0.5 M parameters per net, 2.1 MB of fp32 gradients) and the digits DCGAN preset as shipped.
WORKLOADS = {
    "ring_wide": [
        "experiment=ring_mlp",
        "model.g.hidden=[512,512,512]",
        "model.d.hidden=[512,512,512]",
        "data.batch_size=64",
    ],
    "digits": ["experiment=digits_dcgan"],
}


# ----------------------------------------------------------------------------- the strategy


def _coalesced(tensors: Iterable[Tensor]) -> list[list[Tensor]]:
    """``tensors`` grouped by dtype and device: each group can be one flat buffer."""
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return list(groups.values())


@torch.no_grad()
def broadcast_from_rank_0(tensors: Iterable[Tensor]) -> None:
    """Rank 0's values in every rank's ``tensors``, one broadcast per dtype."""
    for group in _coalesced(tensors):
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, src=0)
        for tensor, synced in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            tensor.copy_(synced)


@torch.no_grad()
def average_gradients(parameters: Sequence[Tensor], world_size: int) -> None:
    """Each parameter's ``.grad`` becomes its mean over the ranks: one all-reduce per dtype.

    Every rank passes the same parameters in the same order (an optimizer's, which ranks build
    alike), so the flat buffers line up. A parameter without a gradient on this rank sends
    zeros and receives the mean, as DDP's reducer treats a parameter unused on some ranks only;
    all ranks then step it alike.
    """
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        elif parameter.grad.is_sparse:
            raise ValueError("GANAwareDDPStrategy averages dense gradients only")
    for group in _coalesced(parameters):
        grads = [parameter.grad for parameter in group]
        flat = _flatten_dense_tensors(grads)
        # Sum, then divide: gloo has no AVG reduction. For 2 ranks (x + y) / 2 equals DDP's
        # x / 2 + y / 2 bit for bit (halving is exact), so the designs can be compared exactly.
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            grad.copy_(averaged)


class GANAwareDDPStrategy(DDPStrategy):
    """DDP for alternating updates: no DistributedDataParallel wrapper; each optimizer step
    averages the gradients of its own parameters over the ranks, in one all-reduce.

    A GAN's D step leaves G without gradients and its G step leaves D's unused, so a wrapped
    module needs ``find_unused_parameters`` (a graph walk per backward) and all-reduces the
    idle net's zeros too. Here a step sends just the stepping net's gradients, once, right
    before ``optimizer.step()``; the launch, process group, ``reduce``/``broadcast`` and
    samplers are DDPStrategy's own.
    """

    def __init__(
        self,
        *args: Any,
        find_unused_parameters: bool | None = None,
        broadcast_buffers: bool = True,
        **kwargs: Any,
    ) -> None:
        # find_unused_parameters configures DDP's reducer, which is never built here; it is
        # accepted so that trainer=ddp's node works with only its _target_ changed.
        del find_unused_parameters
        # DDPStrategy hands unknown keywords to DistributedDataParallel; with no wrapper they
        # would be dropped without a word, so they are refused.
        known = inspect.signature(DDPStrategy.__init__).parameters
        if unknown := sorted(set(kwargs) - set(known)):
            raise TypeError(
                f"GANAwareDDPStrategy does not wrap the module in DistributedDataParallel, so "
                f"its options {unknown} have nothing to configure"
            )
        super().__init__(*args, **kwargs)
        self.broadcast_buffers = broadcast_buffers

    def configure_ddp(self) -> None:
        # Called by DDPStrategy.setup when fitting, after the module is on its device and before
        # the optimizers are built. Left unwrapped, self.model stays the LightningModule:
        # training_step is called directly, and pre_backward / post_backward / teardown, which
        # act on a DistributedDataParallel only, do nothing. No communication hook is
        # registered (DDPStrategy's _register_ddp_hooks expects a wrapper).
        assert self.model is not None
        # Ranks seed alike, but a rank that built its nets from another RNG state (or loaded
        # other weights) must start from rank 0's, as DDP's constructor makes it.
        broadcast_from_rank_0([*self.model.parameters(), *self.model.buffers()])

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        # DDP (broadcast_buffers=True) sends rank 0's buffers (BatchNorm running statistics,
        # fixed_z) before each forward of the wrapper, i.e. once per iteration here.
        if self.broadcast_buffers and self.world_size > 1:
            assert self.model is not None
            buffers = list(self.model.buffers())
            if buffers:
                broadcast_from_rank_0(buffers)
        return super().training_step(*args, **kwargs)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Any,
        model: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Before the precision plugin's step: it runs the (manual-optimization no-op) closure,
        # on_before_optimizer_step and any unscaling or clipping on the averaged gradients.
        if self.world_size > 1:
            optimizer = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer's own
            parameters = [
                parameter
                for group in optimizer.param_groups
                for parameter in group["params"]
                if parameter.requires_grad
            ]
            average_gradients(parameters, self.world_size)
        return super().optimizer_step(optimizer, closure, model, **kwargs)


# ----------------------------------------------------------------------------- measurement


class IterationTimer(StepTimer):
    """``make bench``'s StepTimer on each rank, written down with the rank's final parameters
    at the end of training: ``<dirpath>/rank<r>.json`` and ``rank<r>.pt``."""

    def __init__(self, dirpath: str, warmup: int) -> None:
        super().__init__(warmup)
        self.dirpath = Path(dirpath)
        self.timed = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        self.timed += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timed = self.timed - self.warmup
        seconds = self.end - self.start
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "timed_iterations": timed,
            "seconds": seconds,
            "ms_per_iteration": 1000 * seconds / timed if timed > 0 else None,
        }
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        weights = {k: v.detach().cpu() for k, v in pl_module.named_parameters()}
        torch.save(weights, self.dirpath / f"rank{trainer.global_rank}.pt")


def train_command(
    design: str, overrides: Sequence[str], run_dir: Path, args: argparse.Namespace
) -> list[str]:
    """``python -m gan_lab.train`` for one run of ``design``: DDP over ``args.devices``, no
    evaluation, no sample grid or checkpoint inside the budget, IterationTimer added."""
    trainer = "ddp" if args.device == "cuda" else "ddp_cpu"
    never = args.warmup + args.iterations + 1
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        *overrides,
        f"trainer={trainer}",
        f"trainer.strategy._target_={STRATEGIES[design]}",
        f"train.iterations={args.warmup + args.iterations}",
        "eval=none",
        "callbacks=default",
        f"train.sample_every={never}",
        f"train.checkpoint_every={never}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.ddp_timer._target_=benchmarks.ddp_designs.IterationTimer",
        f"+callbacks.ddp_timer.dirpath={run_dir / 'timer'}",
        f"+callbacks.ddp_timer.warmup={args.warmup}",
        *args.overrides,
    ]
    if args.devices is not None:
        command.append(f"trainer.devices={args.devices}")
    return command


def run_once(command: list[str], run_dir: Path, timeout: float) -> dict[str, Any]:
    """Run ``command`` in its own process group (a rank left behind is killed with it); its
    wall seconds, rank 0's timer record and every rank's final parameters."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\nexited {process.returncode}:\n{output[-4000:]}")
    timer = run_dir / "timer"
    record = json.loads((timer / "rank0.json").read_text())
    ranks = [torch.load(path) for path in sorted(timer.glob("rank*.pt"))]
    shutil.rmtree(run_dir)
    return {"wall_s": wall, **record, "parameters": ranks}


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """The largest absolute difference between two parameter dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The designs of ``args.design`` in turn, ``repeats + 1`` times; the first round dropped."""
    runs: dict[str, list[dict[str, Any]]] = {design: [] for design in args.design}
    for repeat in range(args.repeats + 1):
        for design in args.design:
            run_dir = Path(tempfile.mkdtemp(prefix=f"ddp_{design}_"))
            command = train_command(design, WORKLOADS[name], run_dir, args)
            result = run_once(command, run_dir, args.timeout)
            print(
                f"{name} {design} repeat {repeat}: {result['ms_per_iteration']:.2f} ms/iteration,"
                f" {result['wall_s']:.2f} s wall",
                flush=True,
            )
            runs[design].append(result)
    row: dict[str, Any] = {"workload": name, "overrides": [*WORKLOADS[name], *args.overrides]}
    for design, results in runs.items():
        kept = results[1:]
        row[design] = {
            "world_size": results[0]["world_size"],
            "strategy": results[0]["strategy"],
            "ms_per_iteration_median": round(
                statistics.median(r["ms_per_iteration"] for r in kept), 3
            ),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in kept), 3),
            "ms_per_iteration": [round(r["ms_per_iteration"], 3) for r in kept],
            "wall_s": [round(r["wall_s"], 3) for r in kept],
            # Every rank of every run ends with the same parameters (gradients were averaged).
            "ranks_max_difference": max(
                max_difference(r["parameters"][0], other)
                for r in results
                for other in r["parameters"][1:]
            )
            if results[0]["world_size"] > 1
            else 0.0,
        }
    if len(args.design) == 2:
        a, b = args.design
        pairs = list(zip(runs[a][1:], runs[b][1:], strict=True))
        row["ratio_of"] = f"{a}/{b}"
        row["ms_per_iteration_ratios"] = sorted(
            round(x["ms_per_iteration"] / y["ms_per_iteration"], 3) for x, y in pairs
        )
        row["wall_ratios"] = sorted(round(x["wall_s"] / y["wall_s"], 3) for x, y in pairs)
        row["ms_per_iteration_ratio_median"] = statistics.median(row["ms_per_iteration_ratios"])
        row["wall_ratio_median"] = statistics.median(row["wall_ratios"])
        # Same seed, data and updates: the designs differ only in how gradients are averaged.
        row["designs_max_difference"] = max(
            max_difference(x["parameters"][0], y["parameters"][0])
            for x, y in zip(runs[a], runs[b], strict=True)
        )
    return row


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    info = bench_machine_info(args)
    # Another job on the machine slows one design's runs more than the other's: the load at
    # the start and end of the call says whether the figures can be trusted.
    info["load_average_end"] = os.getloadavg()
    if args.device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="trainer.devices (default: the trainer config's: 2 on CPU, every GPU on CUDA)",
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations per run")
    parser.add_argument("--repeats", type=int, default=5, help="kept runs per design")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--out", default="benchmarks/results/ddp_designs_cpu.json")
    parser.add_argument("overrides", nargs="*", help="hydra overrides for every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start, load_at_start = time.perf_counter(), os.getloadavg()
    rows = [bench(name, args) for name in args.workloads]
    result = {
        "machine": {**machine_info(args), "load_average_start": load_at_start},
        "settings": {
            "design": args.design,
            "devices": args.devices,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "overrides": args.overrides,
        },
        "total_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    for row in rows:
        for design in args.design:
            cell = row[design]
            print(
                f"{row['workload']:<10} {design:<12} {cell['ms_per_iteration_median']:>9.2f} "
                f"ms/iteration  {cell['wall_s_median']:>7.2f} s wall  "
                f"ranks differ by {cell['ranks_max_difference']:.1e}"
            )
        if "ratio_of" in row:
            print(
                f"{row['workload']:<10} {row['ratio_of']}: per iteration "
                f"{row['ms_per_iteration_ratio_median']:.3f}, wall {row['wall_ratio_median']:.3f};"
                f" designs differ by {row['designs_max_difference']:.1e}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"total {result['total_seconds']} s; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""``make bench``: gan_lab (GANModule + Lightning Trainer) against a plain PyTorch loop.

    python -m benchmarks.bench [--quick] [--device cpu|cuda] [--workloads ...] [--override k=v ...]

Every workload runs two paths interleaved A B A B ... in one process; the first pair is warm-up
and is discarded, the table reports medians of the rest.

Training workloads: each repeat is one fresh ``Trainer.fit`` (gan_lab) or one fresh loop (plain)
built from the same composed Hydra config and seed, so both start from identical networks and
optimizers. Timed: from the start of iteration ``warmup`` to the end of the last iteration
(gan_lab: ``on_train_batch_start`` of that batch to ``on_train_batch_end`` of the last, via
``StepTimer``). That includes all of Lightning's per-step work (data fetch, logging at
``train.log_every``, the progress bar, hooks) but not the one-time setup of ``fit``. One
"sample" is one element of a real minibatch (batch_size x k_d_steps per iteration).

Inference workloads: sampling 10,000 images (``GANModule.generate``) and FID features of 10,000
images (``FeatureDistance.add_real``, what evaluation runs) against hand-written batched loops.

Peak memory per path: the largest RSS seen by a 5 ms sampler while the path ran (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

import gan_lab.config  # noqa: F401 - registers the run schema
from gan_lab.build import build_datamodule, build_module, build_trainer

CONF_DIR = str(gan_lab.config.CONF_DIR)

TRAINING = {
    "dcgan28_b64": ["experiment=fashion_dcgan", "data.batch_size=64"],
    "dcgan28_b128": ["experiment=fashion_dcgan", "data.batch_size=128"],
    "mlp_ring_b512": ["experiment=ring_mlp", "data.batch_size=512"],
}
# gan_lab against gan_lab: the default in-memory stream (A) and the DataLoader path (B).
DATA_PATH = {"data_path_b64": ["experiment=fashion_dcgan", "data.batch_size=64"]}
INFERENCE = ("sampling_10k", "fid_features_10k")
WORKLOADS = [*TRAINING, *DATA_PATH, *INFERENCE]

# ----------------------------------------------------------------------------- measurement


@dataclass
class Measurement:
    """One timed repeat: ``items`` samples or images in ``seconds``."""

    items: int
    seconds: float
    peak_mem_mb: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds


class PeakMemory:
    """Peak RSS (CPU, sampled every 5 ms) or peak CUDA allocation while the block runs."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.PAGE / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (the module's
    device synchronised at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        sync(pl_module.device)
        self.end = time.perf_counter()


def compose_config(overrides: list[str], output_dir: str, args: argparse.Namespace) -> DictConfig:
    """gan_lab/conf/train.yaml as a normal run composes it, plus the bench's and the user's
    overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"paths.output_dir={output_dir}",
                f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
                "logger=csv",  # logging on at train.log_every, as in a normal run
                # Sample grids / checkpoints / evaluation fire every 250+ iterations, never
                # inside a repeat; they are left out so every repeat does the same work.
                "callbacks=none",
                "eval=none",
                f"trainer.enable_progress_bar={str(args.progress_bar).lower()}",
                *overrides,
                *args.override,
            ],
        )


def _autocast(cfg: DictConfig, device: torch.device) -> torch.autocast:
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# ----------------------------------------------------------------------------- training


class TrainWorkload:
    """One GAN training setting, run through gan_lab and through a plain PyTorch loop."""

    def __init__(self, overrides: list[str], args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.tmp = tempfile.mkdtemp(prefix="gan_lab_bench_")
        overrides = [*overrides, f"train.iterations={args.warmup + args.iterations}"]
        if "experiment=fashion_dcgan" in overrides and args.device == "cuda":
            overrides.append("data.device_resident=true")  # the whole set lives on the GPU
        self.cfg = compose_config(overrides, self.tmp, args)
        # Built once: the dataset is loaded and cached by the first fit and reused after.
        self.datamodule = build_datamodule(self.cfg)
        self.samples_per_iteration = int(self.cfg.data.batch_size) * self.cfg.train.k_d_steps
        self._pool: torch.Tensor | None = None

    def run_a(self) -> Measurement:
        """gan_lab: the real GANModule in a Trainer built as ``gan_lab.train`` builds it."""
        L.seed_everything(self.cfg.seed, verbose=False)
        module = build_module(self.cfg, self.datamodule.sample_shape)
        trainer = build_trainer(self.cfg)
        timer = StepTimer(self.args.warmup)
        trainer.callbacks.append(timer)
        with PeakMemory(self.device) as mem:
            trainer.fit(module, datamodule=self.datamodule)
        items = self.args.iterations * self.samples_per_iteration
        return Measurement(items, timer.end - timer.start, mem.peak_mb)

    def _real_pool(self) -> torch.Tensor:
        """The plain loop's data: already in memory, in [-1, 1], on the device."""
        if self._pool is None:
            if self.datamodule.kind == "image":
                data = self.datamodule.images("train")
                data = data.float().div_(127.5).sub_(1.0) if data.dtype == torch.uint8 else data
            else:  # toy data: a fixed pool of samples
                n = 64 * self.samples_per_iteration
                data = self.datamodule.sample(n, torch.Generator().manual_seed(0))
            self._pool = data.to(self.device)
        return self._pool

    def run_b(self) -> Measurement:
        """Plain PyTorch: the same nets (same seed), loss, optimizers, batch size; no Lightning."""
        cfg, device, args = self.cfg, self.device, self.args
        L.seed_everything(cfg.seed, verbose=False)
        built = build_module(cfg, self.datamodule.sample_shape)
        generator, discriminator = built.generator.to(device), built.discriminator.to(device)
        loss, prior = built.loss, built.prior
        if device.type == "cuda" and cfg.train.channels_last:  # as GANModule.on_fit_start
            generator.to(memory_format=torch.channels_last)
            discriminator.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            generator.compile()
            discriminator.compile()
        fused = {"fused": True} if device.type == "cuda" else {}
        optimizer_g = instantiate(cfg.optimizer.g, **fused)(generator.parameters())
        optimizer_d = instantiate(cfg.optimizer.d, **fused)(discriminator.parameters())
        data, batch_size = self._real_pool(), int(cfg.data.batch_size)
        log_every, autocast = int(cfg.train.log_every), _autocast(cfg, device)
        logged: list[float] = []
        start = 0.0
        with PeakMemory(device) as mem:
            for iteration in range(args.warmup + args.iterations):
                if iteration == args.warmup:
                    sync(device)
                    start = time.perf_counter()
                for _ in range(cfg.train.k_d_steps):
                    real = data[torch.randint(len(data), (batch_size,), device=device)]
                    with autocast:
                        with torch.no_grad():
                            fake = generator(prior.sample(batch_size, device=device))
                        d_loss = loss.d_loss(discriminator(real), discriminator(fake))
                    optimizer_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    optimizer_d.step()
                    loss.after_d_step(discriminator)
                # The idiomatic fast hand-written G step: D's weights get no gradient.
                discriminator.requires_grad_(False)
                with autocast:
                    fake = generator(prior.sample(batch_size, device=device))
                    g_loss = loss.g_loss(discriminator(fake))
                optimizer_g.zero_grad(set_to_none=True)
                g_loss.backward()
                optimizer_g.step()
                discriminator.requires_grad_(True)
                if (iteration + 1) % log_every == 0:  # what a hand-written loop logs
                    logged += [d_loss.item(), g_loss.item()]
            sync(device)
            seconds = time.perf_counter() - start
        items = args.iterations * self.samples_per_iteration
        return Measurement(items, seconds, mem.peak_mb)


class DataPathWorkload:
    """gan_lab on Fashion-MNIST: in-memory tensor stream (A) against the DataLoader path (B)."""

    def __init__(self, overrides: list[str], args: argparse.Namespace) -> None:
        self.in_memory = TrainWorkload([*overrides, "data.in_memory=true"], args)
        self.loader = TrainWorkload([*overrides, "data.in_memory=false"], args)
        self.cfg = self.in_memory.cfg

    def run_a(self) -> Measurement:
        return self.in_memory.run_a()

    def run_b(self) -> Measurement:
        return self.loader.run_a()


# ----------------------------------------------------------------------------- inference


class SamplingWorkload:
    """``GANModule.generate(n)`` against a hand-written batched loop under inference_mode."""

    batch_size = 1024

    def __init__(self, args: argparse.Namespace) -> None:
        self.n, self.device = args.num_images, torch.device(args.device)
        self.cfg = compose_config(TRAINING["dcgan28_b64"], tempfile.mkdtemp(), args)
        L.seed_everything(self.cfg.seed, verbose=False)
        datamodule = build_datamodule(self.cfg)
        self.module = build_module(self.cfg, datamodule.sample_shape).to(self.device)

    def _timed(self, fn: Any) -> Measurement:
        with PeakMemory(self.device) as mem, _autocast(self.cfg, self.device):
            sync(self.device)
            start = time.perf_counter()
            images = fn()
            sync(self.device)
            seconds = time.perf_counter() - start
        assert len(images) == self.n
        return Measurement(self.n, seconds, mem.peak_mb)

    def run_a(self) -> Measurement:
        return self._timed(lambda: self.module.generate(self.n, batch_size=self.batch_size))

    def run_b(self) -> Measurement:
        generator, prior = self.module.generator, self.module.prior

        @torch.inference_mode()
        def plain() -> torch.Tensor:
            generator.eval()
            z = prior.sample(self.n, device=self.device)
            images = torch.cat([generator(chunk) for chunk in z.split(self.batch_size)])
            generator.train()
            return images

        return self._timed(plain)


class FeatureWorkload:
    """The feature pass of n images, the features and logits every feature metric is computed
    from: ``FeatureDistance.extract`` against one plain pass of the same classifier's ``embed``
    and ``head`` in batches of 500. (What is computed from the features is timed by
    ``python -m benchmarks.eval_components``.)"""

    batch_size = 500

    def __init__(self, args: argparse.Namespace) -> None:
        from gan_lab.metrics.classifier import ClassifierFeatures, classifier_weights_for
        from gan_lab.metrics.fid import FeatureDistance

        self.n, self.device = args.num_images, torch.device(args.device)
        self.cfg = compose_config(TRAINING["dcgan28_b64"], tempfile.mkdtemp(), args)
        weights = classifier_weights_for("fashion_mnist")
        self.extractor = ClassifierFeatures(weights).to(self.device)
        self.make_distance = lambda: FeatureDistance(ClassifierFeatures(weights)).to(self.device)
        generator = torch.Generator().manual_seed(0)
        self.images = (torch.rand(self.n, 1, 28, 28, generator=generator) * 2 - 1).to(self.device)

    def run_a(self) -> Measurement:
        distance = self.make_distance()
        with PeakMemory(self.device) as mem:
            sync(self.device)
            start = time.perf_counter()
            distance.extract(self.images, batch_size=self.batch_size)
            sync(self.device)
            seconds = time.perf_counter() - start
        return Measurement(self.n, seconds, mem.peak_mb)

    @torch.inference_mode()
    def run_b(self) -> Measurement:
        cnn = self.extractor.classifier
        with PeakMemory(self.device) as mem:
            sync(self.device)
            start = time.perf_counter()
            features, logits = [], []
            for batch in self.images.split(self.batch_size):
                if batch.shape[-1] != cnn.resolution:
                    size = (cnn.resolution, cnn.resolution)
                    batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True)
                features.append(cnn.embed(batch))
                logits.append(cnn.head(features[-1]))
            torch.cat(features), torch.cat(logits)
            sync(self.device)
            seconds = time.perf_counter() - start
        return Measurement(self.n, seconds, mem.peak_mb)


# ----------------------------------------------------------------------------- driver


def build_workload(name: str, args: argparse.Namespace) -> tuple[Any, str, str]:
    """The workload object and the names of its two paths."""
    if name in TRAINING:
        return TrainWorkload(TRAINING[name], args), "gan_lab", "plain"
    if name in DATA_PATH:
        return DataPathWorkload(DATA_PATH[name], args), "in_memory", "dataloader"
    if name == "sampling_10k":
        return SamplingWorkload(args), "gan_lab", "plain"
    if name == "fid_features_10k":
        return FeatureWorkload(args), "gan_lab", "plain"
    raise ValueError(f"unknown workload {name!r}; expected one of {WORKLOADS}")


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload A B A B ...; medians of the repeats after the warm-up pair."""
    try:
        workload, a, b = build_workload(name, args)
    except (ImportError, FileNotFoundError) as err:
        return {"workload": name, "skipped": f"classifier extractor not available ({err})"}
    runs: dict[str, list[Measurement]] = {a: [], b: []}
    for _ in range(args.repeats + 1):
        runs[a].append(workload.run_a())
        runs[b].append(workload.run_b())
    row: dict[str, Any] = {"workload": name, "paths": [a, b]}
    cfg = workload.cfg
    row["batch_size"] = int(cfg.data.batch_size)
    row["precision"] = str(cfg.trainer.precision)
    row["compile"] = bool(cfg.train.compile)
    for path, measured in runs.items():
        kept = measured[1:]
        row[f"{path}_per_s"] = round(statistics.median(m.rate for m in kept), 1)
        row[f"{path}_runs"] = [round(m.rate, 1) for m in kept]
        row[f"{path}_peak_mem_mb"] = round(max(m.peak_mem_mb for m in kept), 1)
    row["ratio"] = round(row[f"{a}_per_s"] / row[f"{b}_per_s"], 3)
    row["ratio_of"] = f"{a}/{b}"
    return row


def _format(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"{row['workload']:<18} skipped: {row['skipped']}"
    a, b = row["paths"]
    return (
        f"{row['workload']:<18} {a:>9} {row[f'{a}_per_s']:>10.1f}/s  {b:>10} "
        f"{row[f'{b}_per_s']:>10.1f}/s  {row['ratio_of']:>20} {row['ratio']:>6.3f}  "
        f"peak MB {row[f'{a}_peak_mem_mb']:>6.0f} / {row[f'{b}_peak_mem_mb']:<6.0f}"
    )


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "device": args.device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": sys.version.split()[0],
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to test the harness")
    parser.add_argument("--out", default="benchmarks/results/cpu.json")
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)
    parser.add_argument("--override", nargs="*", default=[], help="config overrides for all")
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations per run")
    parser.add_argument("--repeats", type=int, default=5, help="kept repeats per path")
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument(
        "--progress-bar",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Lightning's progress bar in the gan_lab path (on in a normal run)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.repeats, args.num_images = 2, 1, 1, 200
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_float32_matmul_precision("high")  # TF32 on CUDA for both paths alike
    start = time.perf_counter()
    rows = []
    for name in args.workloads:
        rows.append(bench(name, args))
        print(_format(rows[-1]), flush=True)
    result = {
        "machine": machine_info(args),
        "settings": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "num_images": args.num_images,
            "progress_bar": args.progress_bar,
            "override": args.override,
        },
        "total_seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"total {result['total_seconds']} s; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""gan_lab's training path (GANModule + Lightning Trainer) against a plain PyTorch loop.

    python -m benchmarks.bench [--quick] [--device cpu|cuda] [--out benchmarks/results/cpu.json]

Each training workload runs the same nets (same seed), losses, optimizers, batch size and
in-memory data both ways, interleaved A B A B ...; the first `warmup` iterations of every run
are not timed. Reported: median samples/s (real + fake images through D per iteration do not
count; one "sample" = one real minibatch element of the iteration), the ratio gan_lab / plain,
and the process's peak memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

import gan_lab.config  # noqa: F401 - registers the schema
from gan_lab.train import build_datamodule, build_module, build_trainer

CONF = str(Path(__file__).resolve().parents[1] / "conf")

WORKLOADS = {
    "dcgan28_b64": ["experiment=fashion_dcgan", "data.batch_size=64"],
    "dcgan28_b128": ["experiment=fashion_dcgan", "data.batch_size=128"],
    # The DataLoader path (data.in_memory=false) of the same run, to compare with the default.
    "dcgan28_b64_dataloader": [
        "experiment=fashion_dcgan",
        "data.batch_size=64",
        "data.in_memory=false",
    ],
    "mlp_ring_b512": ["experiment=ring_mlp", "data.batch_size=512"],
}


def make_config(overrides: list[str], out: str, device: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"paths.output_dir={out}",
                "logger=csv",  # logging on, as in a normal run
                "callbacks=none",
                "eval=none",
                "trainer.enable_progress_bar=false",
                f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
                *overrides,
            ],
        )


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.iteration == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_gan_lab(cfg, iterations: int, warmup: int) -> float:
    """Seconds for `iterations - warmup` iterations through the real Trainer."""
    L.seed_everything(0, verbose=False)
    cfg.train.iterations = iterations
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    trainer = build_trainer(cfg)
    timer = _Timer(warmup)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.end - timer.start


def run_plain(cfg, iterations: int, warmup: int, device: str) -> float:
    """The same work as a hand-written loop: no Lightning, no logging."""
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    generator = copy.deepcopy(module.generator).to(device)
    discriminator = copy.deepcopy(module.discriminator).to(device)
    loss, prior = module.loss, module.prior
    optimizer_g = module.optimizer_g_factory(generator.parameters())
    optimizer_d = module.optimizer_d_factory(discriminator.parameters())
    datamodule.setup("fit")
    stream = iter(datamodule.train_dataloader())
    start = 0.0
    for iteration in range(iterations):
        if iteration == warmup:
            _sync()
            start = time.perf_counter()
        batch = next(stream).to(device, non_blocking=True)
        for real in batch.unbind(0):
            with torch.no_grad():
                fake = generator(prior.sample(real.shape[0], device=device))
            d_loss = loss.d_loss(discriminator(real), discriminator(fake))
            optimizer_d.zero_grad(set_to_none=True)
            d_loss.backward()
            optimizer_d.step()
            loss.after_d_step(discriminator)
        discriminator.requires_grad_(False)
        g_loss = loss.g_loss(discriminator(generator(prior.sample(batch.shape[1], device=device))))
        optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer_g.step()
        discriminator.requires_grad_(True)
    _sync()
    return time.perf_counter() - start


def bench_training(
    name: str, overrides: list[str], repeats: int, iterations: int, warmup: int, device: str
) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = make_config(overrides, out, device)
        batch = cfg.data.batch_size * cfg.train.k_d_steps
        timed = iterations - warmup
        gan_lab_rates, plain_rates = [], []
        for _ in range(repeats):  # interleaved: A B A B ...
            gan_lab_rates.append(
                batch * timed / run_gan_lab(copy.deepcopy(cfg), iterations, warmup)
            )
            plain_rates.append(batch * timed / run_plain(cfg, iterations, warmup, device))
    gan_lab_median, plain_median = statistics.median(gan_lab_rates), statistics.median(plain_rates)
    return {
        "workload": name,
        "gan_lab_samples_per_s": round(gan_lab_median, 1),
        "plain_samples_per_s": round(plain_median, 1),
        "ratio": round(gan_lab_median / plain_median, 3),
        "repeats": repeats,
        "timed_iterations": timed,
        "gan_lab_runs": [round(r, 1) for r in gan_lab_rates],
        "plain_runs": [round(r, 1) for r in plain_rates],
    }


def bench_sampling(n: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = make_config(WORKLOADS["dcgan28_b64"], out, device)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.sample_shape).to(device)
        module.generate(1000)  # warm-up
        _sync()
        start = time.perf_counter()
        module.generate(n, batch_size=1000)
        _sync()
        seconds = time.perf_counter() - start
    return {"workload": f"sample_{n}_dcgan28", "samples_per_s": round(n / seconds, 1)}


def bench_features(n: int, device: str) -> dict:
    from gan_lab.metrics.classifier import ClassifierFeatures, classifier_weights_for

    extractor = ClassifierFeatures(classifier_weights_for("fashion_mnist")).to(device).eval()
    images = torch.rand(n, 1, 28, 28, device=device) * 2 - 1
    with torch.inference_mode():
        extractor(images[:500])
        _sync()
        start = time.perf_counter()
        for chunk in images.split(1000):
            extractor(chunk)
        _sync()
    seconds = time.perf_counter() - start
    return {"workload": f"fid_features_{n}_classifier", "samples_per_s": round(n / seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to test the harness")
    parser.add_argument("--out", default="benchmarks/results/cpu.json")
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--override", nargs="*", default=[], help="config overrides for every run")
    args = parser.parse_args(argv)
    repeats, iterations, warmup, n = (1, 4, 2, 200) if args.quick else (5, 110, 10, 10_000)
    rows = [
        bench_training(name, ov, repeats, iterations, warmup, args.device)
        for name, ov in WORKLOADS.items()
    ]
    rows += [bench_sampling(n, args.device), bench_features(n, args.device)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peak_rss_mb": round(peak_mb, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if args.device == "cuda"
        else None,
        "rows": rows,
    }
    print(f"{'workload':<28}{'gan_lab/s':>12}{'plain/s':>12}{'ratio':>8}")
    for row in rows:
        if "ratio" in row:
            print(
                f"{row['workload']:<28}{row['gan_lab_samples_per_s']:>12}"
                f"{row['plain_samples_per_s']:>12}{row['ratio']:>8}"
            )
        else:
            print(f"{row['workload']:<28}{row['samples_per_s']:>12}")
    print(f"peak RSS {result['peak_rss_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

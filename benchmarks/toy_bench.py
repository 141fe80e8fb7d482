"""PacGAN's 2-D mixture benchmark: our shipped configs and the plain GAN beside published rows.

    python -m benchmarks.toy_bench [--seeds 5] [--jobs 1] [--out docs/toy_benchmark.md]
    python -m benchmarks.toy_bench --from-json docs/toy_benchmark.json   # re-render only
    python -m benchmarks.toy_bench --only grid_best --merge   # re-measure one preset's rows

Every row of ours comes from this one harness: compose ``experiment=<name> seed=<s>``, fit,
draw 2,500 samples (the EMA generator when the config enables it) and score them with
``gan_lab.metrics.toy.mode_metrics`` (Lin et al. 2018's protocol). Every run's numbers also go
to a JSON beside the Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gan_lab.config import CONF_DIR  # importing it registers the run schema
from gan_lab.metrics.toy import mode_metrics
from gan_lab.train import fit

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("toy/modes", "toy/high_quality", "toy/reverse_kl")
# (task, experiment preset, row label)
RUNS = [
    ("ring", "ring_mlp", "GAN (ours, `ring_mlp`)"),
    ("ring", "ring_best", "**ours, `ring_best`**"),
    ("grid", "grid_mlp", "GAN (ours, `grid_mlp`)"),
    ("grid", "grid_best", "**ours, `grid_best`**"),
]
# PacGAN Table 1 (10 trials, mean +- s.e.) and VEEGAN Table 1 (unrolled GAN, no s.e., trials
# not given); the last cell is the number of trials.
PUBLISHED = {
    "ring": [
        ("GAN (PacGAN paper)", "6.3 ± 0.5", "98.2 ± 0.2", "0.45 ± 0.09", "10"),
        ("PacGAN4 (PacGAN paper)", "7.8 ± 0.1", "95.9 ± 1.4", "0.07 ± 0.02", "10"),
        ("Unrolled GAN (VEEGAN paper)", "7.6", "35.6", "–", "–"),
    ],
    "grid": [
        ("GAN (PacGAN paper)", "17.3 ± 0.8", "94.8 ± 0.7", "0.70 ± 0.07", "10"),
        ("PacGAN4 (PacGAN paper)", "24.8 ± 0.2", "93.6 ± 0.6", "0.04 ± 0.01", "10"),
        ("Unrolled GAN (VEEGAN paper)", "23.6", "16", "–", "–"),
    ],
}
N_SAMPLES = 2500


def run_one(
    experiment: str, seed: int, overrides: tuple[str, ...] = ()
) -> tuple[dict[str, float], float]:
    """Train ``experiment`` with ``seed``; return its toy metrics and the fit's wall time."""
    with tempfile.TemporaryDirectory() as out:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    f"experiment={experiment}",
                    f"seed={seed}",
                    f"paths.output_dir={out}",
                    # Scoring happens here; no sample plots, checkpoints or log files needed.
                    "logger=none",
                    "callbacks=none",
                    "trainer.enable_progress_bar=false",
                    *overrides,
                ],
            )
        start = time.perf_counter()
        run = fit(cfg)
        seconds = time.perf_counter() - start
        # The run's evaluation noise (seeded by its seed), as its own evaluation would draw.
        samples = run.module.generate(N_SAMPLES)
        data = run.datamodule
        return mode_metrics(samples, data.modes, data.std), seconds


def mean_se(values: list[float], digits: int) -> str:
    """Mean ± standard error; a run with no high-quality sample has reverse KL = inf, and the
    mean of the others is shown with how many seeds were infinite."""
    finite = [v for v in values if math.isfinite(v)]
    note = (
        f" (∞ on {len(values) - len(finite)} of {len(values)})" if len(finite) < len(values) else ""
    )
    if not finite:
        return "∞"
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return f"{mean:.{digits}f}{note}"
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return f"{mean:.{digits}f} ± {math.sqrt(var / len(finite)):.{digits}f}{note}"


def table(task: str, results: dict[str, list[tuple[dict[str, float], float]]]) -> list[str]:
    n_modes = 8 if task == "ring" else 25
    lines = [
        f"### {task.capitalize()} ({n_modes} modes)",
        "",
        f"| Model | Modes /{n_modes} | High quality % | Reverse KL | Seeds | s / seed |",
        "|---|---|---|---|---|---|",
    ]
    for label, *cells in PUBLISHED[task]:
        lines.append(f"| {label} | {' | '.join(cells)} | – |")
    for run_task, experiment, label in RUNS:
        if run_task != task or experiment not in results:
            continue
        rows = results[experiment]
        cells = [mean_se([m[key] for m, _ in rows], d) for key, d in zip(KEYS, (1, 1, 3))]
        seconds = mean_se([s for _, s in rows], 0)
        lines.append(f"| {label} | {' | '.join(cells)} | {len(rows)} | {seconds} |")
    lines += ["", "Per seed (modes, HQ %, reverse KL, wall s):", ""]
    for run_task, experiment, _ in RUNS:
        if run_task == task and experiment in results:
            per_seed = "; ".join(
                f"s{i}: {m['toy/modes']:.0f}, {m['toy/high_quality']:.1f}, "
                f"{m['toy/reverse_kl']:.3f}, {s:.0f}"
                for i, (m, s) in enumerate(results[experiment])
            )
            lines.append(f"- `{experiment}`: {per_seed}")
    return [*lines, ""]


def _run_job(
    job: tuple[str, int, tuple[str, ...], int],
) -> tuple[str, int, dict[str, float], float]:
    """Worker entry: quiet logging, ``threads`` torch threads, then ``run_one``."""
    experiment, seed, overrides, threads = job
    torch.set_num_threads(threads)
    with _quiet_lightning():
        metrics, seconds = run_one(experiment, seed, overrides)
    return experiment, seed, metrics, seconds


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Warnings off and Lightning's loggers at ERROR for one run, restored after it: with
    --jobs 1 the runs share the caller's process (a test's, say), whose logging must not
    change."""
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..n-1 per config")
    parser.add_argument("--only", nargs="*", default=None, help="experiment names to run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "toy_benchmark.md")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel, each with cpu_count/jobs threads"
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="re-render the table from a results JSON"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the re-run experiments' rows in the JSON beside --out, keep the rest",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    json_path = args.out.with_suffix(".json")
    if args.from_json is not None:
        render(json.loads(args.from_json.read_text()), args.out)
        return
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    command = " ".join(["python -m benchmarks.toy_bench", *(argv or sys.argv[1:])])
    setup = (
        f"torch {torch.__version__}, {args.jobs} run(s) at a time with {threads} torch "
        f"thread(s) each on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )
    doc = {"command": command, "setup": setup, "runs": {}, "notes": []}
    if args.merge and json_path.is_file():
        doc = json.loads(json_path.read_text())
        # Checked before training: rows timed on different setups must not share a table.
        if doc["setup"] != setup:
            raise SystemExit(
                f"--merge: {json_path} was measured with '{doc['setup']}', this run would be "
                f"'{setup}'; re-run every experiment or pass another --out"
            )

    experiments = [e for _, e, _ in RUNS if not args.only or e in args.only]
    # Seed-major order: an interrupted run still has every config on the first seeds.
    jobs = [
        (experiment, seed, tuple(args.overrides), threads)
        for seed in range(args.seeds)
        for experiment in experiments
    ]
    finished: dict[tuple[str, int], tuple[dict[str, float], float]] = {}

    def record(experiment: str, seed: int, metrics: dict[str, float], seconds: float) -> None:
        finished[experiment, seed] = (metrics, seconds)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        print(f"{experiment} seed={seed}: {shown} ({seconds:.0f} s)", flush=True)

    if args.jobs == 1:
        for job in jobs:
            record(*_run_job(job))
    else:
        # spawn: fresh interpreters, so no forked torch thread pools or Hydra global state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for done in as_completed([pool.submit(_run_job, job) for job in jobs]):
                record(*done.result())
    results = {
        experiment: [finished[experiment, seed] for seed in range(args.seeds)]
        for experiment in experiments
    }

    for experiment, rows in results.items():
        doc["runs"][experiment] = [
            {"seed": i, "metrics": m, "seconds": s} for i, (m, s) in enumerate(rows)
        ]
        if command != doc["command"]:
            doc.setdefault("commands", {})[experiment] = command
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1))
    render(doc, args.out)


def render(doc: dict, out: Path) -> None:
    """Write the report of a results JSON (as ``main`` saves it) to ``out``."""
    results = {e: [(r["metrics"], r["seconds"]) for r in rows] for e, rows in doc["runs"].items()}
    write_report(
        results, doc["command"], doc["setup"], out, doc.get("notes", []), doc.get("commands", {})
    )


def write_report(
    results: dict[str, list[tuple[dict[str, float], float]]],
    command: str,
    setup: str,
    out: Path,
    notes: Sequence[str] = (),
    commands: dict[str, str] | None = None,
) -> None:
    """Print the Markdown report and write it to ``out``; ``notes`` (from the JSON) follow it.

    ``commands`` names the experiments whose rows a later ``--merge`` run re-measured.
    """
    lines = [
        "# 2-D mixture benchmark (mode collapse)",
        "",
        "Protocol of PacGAN (Lin et al. 2018): 2,500 samples per run; a sample is high quality",
        "within 3σ of its nearest mode; a mode is covered with ≥ 1 high-quality sample; reverse",
        "KL = KL(mode histogram of the high-quality samples ‖ uniform). Ours: mean ± s.e. over",
        "seeds 0..n-1; published rows from PacGAN's Table 1 and VEEGAN's Table 1. Note that exact",
        "samples of the data score 1 − e^(−4.5) = 98.9 % high quality in 2-D.",
        "",
        f"Command: `{command}` (`make toy-bench`); {setup}; "
        "`s / seed` is the wall time of one run's training.",
        "",
    ]
    for experiment, merged_by in (commands or {}).items():
        lines += [f"Rows of `{experiment}` re-measured with `{merged_by}`.", ""]
    for task in ("ring", "grid"):
        lines += table(task, results)
    for note in notes:
        lines += [f"Note: {note}", ""]
    text = "\n".join(lines)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()

"""Sweep report: ``python -m gan_lab.report MULTIRUN_DIR``.

Collects every job's overrides (``.hydra/overrides.yaml``) and final metrics (its ``done``
record, gan_lab.run_dir), groups jobs that differ only in ``seed`` and writes ``report.md``,
``report.csv`` (mean ± std over seeds) and ``report.png`` (the primary metric over iterations,
one line per configuration) into the sweep directory.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NoReturn

import yaml

from gan_lab.errors import MissingFileError, UsageError, reported_as_one_line
from gan_lab.run_dir import read_done

PRIMARY = "val/primary"


def collect(sweep_dir: Path) -> list[dict]:
    """One record per finished job: its overrides minus seed, seed, final metrics, run dir."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        run_dir = overrides_file.parent.parent
        if (done := read_done(run_dir)) is None:
            continue  # unfinished job: re-launch the sweep to resume it
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        config = tuple(o for o in overrides if not o.startswith("seed="))
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "0")
        metrics = done.metrics
        jobs.append({"config": " ".join(config), "seed": seed, "metrics": metrics, "dir": run_dir})
    return jobs


def summarise(jobs: list[dict]) -> tuple[list[str], list[dict]]:
    """Rows of mean ± std per configuration, over the metrics every job reports."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        groups[job["config"]].append(job)
    keys = sorted(
        {k for job in jobs for k in job["metrics"] if k.startswith(("val/", "toy/", "theory/"))}
    )
    rows = []
    for config, members in groups.items():
        row: dict = {"config": config or "(defaults)", "seeds": len(members)}
        for key in keys:
            values = [float(m["metrics"][key]) for m in members if key in m["metrics"]]
            row[key] = _mean_std(values)
        rows.append(row)
    rows.sort(key=lambda r: r.get(PRIMARY, (float("inf"), 0))[0])
    return keys, rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    # A job with no high-quality toy sample has reverse KL = inf: keep it visible, not an error.
    if not all(math.isfinite(v) for v in values):
        return math.inf, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_report(sweep_dir: Path) -> str:
    """Write report.md / report.csv / report.png; returns the Markdown table."""
    jobs = collect(sweep_dir)
    if not jobs:
        raise MissingFileError(
            f"{sweep_dir}: no finished jobs (no <job>/done file); pass the folder of a multirun "
            "(multirun/<date_time>), and re-launch unfinished sweeps to finish them"
        )
    keys, rows = summarise(jobs)
    header = ["config", "seeds", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["config"], str(row["seeds"])]
        cells += [f"{row[k][0]:.4g} ± {row[k][1]:.2g}" if k in row else "" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (sweep_dir / "report.md").write_text(f"# Sweep report: {sweep_dir}\n\n{table}")
    with (sweep_dir / "report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config", "seeds"] + [f"{k} {s}" for k in keys for s in ("mean", "std")])
        for row in rows:
            cells = [row["config"], row["seeds"]]
            for k in keys:
                cells += list(row[k]) if k in row else ["", ""]
            writer.writerow(cells)
    _plot(jobs, sweep_dir / "report.png")
    return table


def _plot(jobs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    colors: dict[str, str] = {}
    for job in jobs:
        metrics_csv = job["dir"] / "metrics.csv"
        if not metrics_csv.is_file():
            continue
        points = [
            (int(row["step"]), float(row[PRIMARY]))
            for row in csv.DictReader(metrics_csv.open())
            if row.get(PRIMARY)
        ]
        if points:
            label = job["config"] if job["config"] not in colors else None
            line = ax.plot(*zip(*points), marker="o", label=label, color=colors.get(job["config"]))
            colors.setdefault(job["config"], line[0].get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel(PRIMARY)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are gan_lab's one-line ``UsageError`` (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; {self.format_usage().strip()}")


def main(argv: list[str] | None = None) -> None:
    """CLI entry: write the report and print its table; a user error is one line on stderr."""
    parser = _Parser(
        prog="python -m gan_lab.report",
        description="Summarise a Hydra multirun of gan_lab.train: report.md, report.csv "
        "(mean ± std over seeds) and report.png, written into MULTIRUN_DIR.",
    )
    parser.add_argument("sweep_dir", metavar="MULTIRUN_DIR", type=Path)
    with reported_as_one_line("gan_lab.report"):
        args = parser.parse_args(argv)
        if not args.sweep_dir.is_dir():
            raise MissingFileError(f"{args.sweep_dir}: no such directory (pass a multirun dir)")
        print(write_report(args.sweep_dir))


if __name__ == "__main__":
    main()

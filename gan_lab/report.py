"""Study report: ``python -m gan_lab.report MULTIRUN_DIR``.

Reads every job of a Hydra multirun (``<sweep>/<N>/``: ``.hydra/overrides.yaml``, the ``done``
record of gan_lab.run_dir, ``metrics.csv``), groups jobs that differ only in ``seed`` into
configurations and writes into the sweep directory:

- ``report.md``: per configuration the job counts, the final and the best-over-training
  ``val/primary`` side by side (a GAN's final FID can be far from its best) and the other final
  metrics, each as mean ± 95 % CI half-width over seeds; then paired differences between
  configurations on the seeds they share;
- ``report.csv``: the same, one row per configuration;
- ``report.png``: ``val/primary`` against iteration, the mean over seeds with its 95 % CI band.

Non-finite values are left out of the statistics and counted beside them (gan_lab.study_stats).
Numbers are compared only under one evaluation protocol (the ``protocol`` of each ``done``
record, gan_lab.metrics.protocol): where jobs differ in it, each configuration is split by
protocol, its rows are marked P1, P2, ..., a section says how the protocols differ, and no
paired difference is taken across protocols.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypedDict

import yaml

from gan_lab.errors import MissingFileError, UsageError, reported_as_one_line
from gan_lab.run_dir import DoneRecord, read_done
from gan_lab.study_stats import (
    MAX_ALL_PAIRS,
    Estimate,
    PairedDifference,
    comparison_pairs,
    estimate,
    paired_difference,
)

PRIMARY = "val/primary"
OTHER_METRIC_PREFIXES = ("val/", "toy/", "theory/")
# More lines than this make the plot unreadable; the table still lists every configuration.
MAX_PLOTTED = 10
LEGEND = (
    "± is the half-width of the 95 % confidence interval of the mean over seeds (Student t, "
    "n − 1 df); no ± with one seed. Lower is better; rows are sorted by mean final val/primary, "
    "those with a non-finite final run last. "
    "*best*: each run's best val/primary over its evaluations, *best at*: the median iteration "
    "of it. Non-finite values (inf/nan) are left out of means and intervals and counted: in "
    "*non-finite* for the final val/primary (a finished run without one counts there too), "
    "as (k non-finite) elsewhere. *failed*: jobs without a `done` record."
)


class Job(TypedDict):
    """One job of the sweep, finished or not."""

    config: str  # its overrides minus seed=, space-separated; "(defaults)" when none
    overrides: tuple[str, ...]  # the same, as a tuple
    seed: str
    dir: Path
    finished: bool  # has a done record
    metrics: dict[str, float]  # final metrics ({} when unfinished)
    best: tuple[float, int | None] | None  # best val/primary and its iteration, if known
    curve: dict[int, float]  # val/primary per evaluated iteration (metrics.csv)
    protocol: dict[str, Any] | None  # the evaluation protocol of its metrics, if recorded
    protocol_label: str  # "P1", "P2", ... where the sweep's jobs differ in it, else ""


@dataclass
class ConfigSummary:
    """Statistics over the seeds of one configuration."""

    config: str  # all its overrides (report.csv), and its protocol label if any
    label: str  # the overrides not common to every configuration (report.md, report.png)
    protocol_label: str  # "P<n>" where the sweep's jobs differ in protocol, else ""
    finished: int  # done, final val/primary finite
    non_finite: int  # done, final val/primary inf/nan or absent
    failed: int  # no done record
    final: Estimate
    best: Estimate
    best_iteration: float | None  # median over runs
    metrics: dict[str, Estimate]
    final_by_seed: dict[str, float]
    best_by_seed: dict[str, float]


def collect(sweep_dir: Path) -> list[Job]:
    """One record per job that has ``.hydra/overrides.yaml``, finished or not."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        run_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        config = tuple(o for o in overrides if not o.startswith("seed="))
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "0")
        done = read_done(run_dir)
        curve = _read_curve(run_dir / "metrics.csv")
        jobs.append(
            Job(
                config=" ".join(config) or "(defaults)",
                overrides=config,
                seed=seed,
                dir=run_dir,
                finished=done is not None,
                metrics=done.metrics if done is not None else {},
                best=_best(done, curve),
                curve=curve,
                protocol=done.protocol if done is not None else None,
                protocol_label="",
            )
        )
    label_protocols(jobs)
    return jobs


def label_protocols(jobs: list[Job]) -> None:
    """Where the finished jobs differ in evaluation protocol, label each job with its
    protocol's ``P<n>`` (in order of first appearance) and append it to the job's ``config``,
    so that one configuration under two protocols becomes two rows; an unfinished job takes
    the label of its configuration's finished jobs where they agree."""
    ids: dict[str | None, dict[str, Any] | None] = {}
    for job in jobs:
        if job["finished"]:
            ids.setdefault(_protocol_id(job), job["protocol"])
    if len(ids) < 2:
        return
    labels = {pid: f"P{n}" for n, pid in enumerate(ids, 1)}
    by_config: dict[str, set[str]] = defaultdict(set)
    for job in jobs:
        if job["finished"]:
            job["protocol_label"] = labels[_protocol_id(job)]
            by_config[job["config"]].add(job["protocol_label"])
    for job in jobs:
        if not job["finished"] and len(by_config[job["config"]]) == 1:
            job["protocol_label"] = next(iter(by_config[job["config"]]))
    for job in jobs:
        if job["protocol_label"]:
            job["config"] += f" [{job['protocol_label']}]"


def protocols_of(jobs: list[Job]) -> dict[str, dict[str, Any] | None]:
    """Label -> protocol, P1 first; empty where the jobs share one protocol."""
    found: dict[str, dict[str, Any] | None] = {}
    for job in jobs:
        if job["finished"] and job["protocol_label"]:
            found.setdefault(job["protocol_label"], job["protocol"])
    return dict(sorted(found.items(), key=lambda item: int(item[0][1:])))


def _protocol_id(job: Job) -> str | None:
    return (job["protocol"] or {}).get("id")


def _read_curve(metrics_csv: Path) -> dict[int, float]:
    if not metrics_csv.is_file():
        return {}
    with metrics_csv.open(newline="") as file:
        # Only evaluation rows fill val/primary; a step logged twice keeps its last value.
        return {
            int(float(row["step"])): float(row[PRIMARY])
            for row in csv.DictReader(file)
            if row.get(PRIMARY) and row.get("step")
        }


def _best(done: DoneRecord | None, curve: dict[int, float]) -> tuple[float, int | None] | None:
    # The checkpoint callback's record is exact (it sees every evaluation, also ones a resume
    # dropped from metrics.csv); records from before it existed fall back to the CSV.
    if done is None:
        return None
    if done.best and done.best.get("metric") == PRIMARY and done.best.get("value") is not None:
        return float(done.best["value"]), done.best.get("iteration")
    finite = [(value, step) for step, value in curve.items() if math.isfinite(value)]
    return min(finite) if finite else None


def summarise(jobs: list[Job]) -> list[ConfigSummary]:
    """Per-configuration statistics, best (lowest mean final val/primary) first."""
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job["config"]].append(job)
    keys = sorted(
        {
            key
            for job in jobs
            for key in job["metrics"]
            if key.startswith(OTHER_METRIC_PREFIXES) and key != PRIMARY
        }
    )
    common = common_overrides(jobs)
    summaries = [
        _summarise_config(config, _label(members[0], common), members, keys)
        for config, members in groups.items()
    ]
    # A configuration with a non-finite final run has a true mean of inf (or nan): it ranks after
    # every configuration without one, whatever the mean of its finite runs.
    summaries.sort(
        key=lambda s: (s.final.mean is None, s.non_finite > 0, s.final.mean or 0.0, s.config)
    )
    return summaries


def common_overrides(jobs: list[Job]) -> tuple[str, ...]:
    """The overrides every job has (but seed), which the table states once instead of per row."""
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if jobs else set()
    return tuple(o for o in jobs[0]["overrides"] if o in shared) if jobs else ()


def _label(job: Job, common: tuple[str, ...]) -> str:
    overrides = job["overrides"]
    if not overrides:
        label = "(defaults)"
    else:
        label = " ".join(o for o in overrides if o not in common) or "(the common overrides)"
    return f"{label} [{job['protocol_label']}]" if job["protocol_label"] else label


def _summarise_config(
    config: str, label: str, members: list[Job], keys: list[str]
) -> ConfigSummary:
    done = [job for job in members if job["finished"]]
    finals = {job["seed"]: float(job["metrics"].get(PRIMARY, math.nan)) for job in done}
    bests = {job["seed"]: job["best"] for job in done if job["best"] is not None}
    iterations = [it for value, it in bests.values() if math.isfinite(value) and it is not None]
    n_finite = sum(math.isfinite(v) for v in finals.values())
    return ConfigSummary(
        config=config,
        label=label,
        protocol_label=members[0]["protocol_label"],
        finished=n_finite,
        non_finite=len(done) - n_finite,
        failed=len(members) - len(done),
        final=estimate(finals.values()),
        best=estimate(value for value, _ in bests.values()),
        best_iteration=statistics.median(iterations) if iterations else None,
        metrics={
            key: estimate(job["metrics"][key] for job in done if key in job["metrics"])
            for key in keys
        },
        final_by_seed=finals,
        best_by_seed={seed: value for seed, (value, _) in bests.items()},
    )


@dataclass
class Comparison:
    """Configuration ``a`` minus ``b`` on their shared seeds, final and best val/primary."""

    a: str
    b: str
    final: PairedDifference
    best: PairedDifference | None


def compare(summaries: list[ConfigSummary]) -> tuple[list[Comparison], list[str]]:
    """Paired comparisons (see study_stats.comparison_pairs) and notes on what was left out."""
    # Only configurations with 2+ finite seeds can be paired; the reference of the vs-best rule
    # is the best of those, not a lucky 1-seed configuration.
    eligible = [s for s in summaries if s.final.n >= 2]
    skipped = len(summaries) - len(eligible)
    notes = []
    if len(summaries) == 1:
        notes.append("No paired comparisons: the sweep has one configuration.")
    elif all(s.finished + s.non_finite + s.failed == 1 for s in summaries):
        notes.append(
            "No paired comparisons: every configuration ran one seed (as an Optuna search does, "
            "one run per trial)."
        )
    elif len(eligible) < 2:
        notes.append(
            "No paired comparisons: fewer than two configurations have 2 or more seeds with a "
            "finite val/primary."
        )
    elif skipped:
        notes.append(f"{skipped} configuration(s) with fewer than 2 finite seeds not compared.")
    if len(eligible) > MAX_ALL_PAIRS:
        notes.append(
            f"{len(eligible)} configurations: each compared with the best one, "
            f"`{eligible[0].label}`, not all pairs."
        )
    by_name = {s.config: s for s in eligible}
    comparisons = []
    for a, b in comparison_pairs([s.config for s in eligible]):
        final = paired_difference(by_name[a].final_by_seed, by_name[b].final_by_seed)
        a_label, b_label = by_name[a].label, by_name[b].label
        if by_name[a].protocol_label != by_name[b].protocol_label:
            notes.append(
                f"`{a_label}` and `{b_label}` were evaluated under different protocols: "
                "not compared."
            )
            continue
        if final is None:
            notes.append(f"`{a_label}` and `{b_label}` share fewer than 2 seeds: not compared.")
            continue
        best = paired_difference(by_name[a].best_by_seed, by_name[b].best_by_seed)
        comparisons.append(Comparison(a_label, b_label, final, best))
    return comparisons, notes


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _cell(est: Estimate, show_non_finite: bool = True, runs: int | None = None) -> str:
    text = _num(est.mean)
    if est.half_width is not None:
        text += f" ± {est.half_width:.2g}"
    if show_non_finite and est.non_finite:
        text += f" ({est.non_finite} non-finite)"
    # A run whose final value is inf can still have a finite best: then the two cells of a row
    # are means over different runs, which the reader must see.
    if runs is not None and est.mean is not None and est.n != runs:
        text += f" (n={est.n})"
    return text


def _difference(diff: PairedDifference | None) -> str:
    if diff is None:
        return "n/a"
    d = diff.diff
    flag = ", CI excludes 0" if diff.excludes_zero else ""
    return f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}]{flag}, lower on {diff.lower}/{d.n} seeds"


def markdown(
    summaries: list[ConfigSummary],
    common: tuple[str, ...],
    comparisons: list[Comparison],
    notes: list[str],
    unfinished: Sequence[str] = (),
    protocols: dict[str, dict[str, Any] | None] | None = None,
) -> str:
    """The study table (first, so that its rows are the text's first `|` lines), its legend,
    the overrides common to every row, and the paired comparisons, as Markdown."""
    keys = list(summaries[0].metrics)
    header = ["config", "finished", "non-finite", "failed", f"final {PRIMARY}", f"best {PRIMARY}"]
    header += ["best at", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        cells = [s.label, str(s.finished), str(s.non_finite), str(s.failed)]
        cells += [_cell(s.final, show_non_finite=False), _cell(s.best, runs=s.final.n)]
        cells += [_num(s.best_iteration), *(_cell(s.metrics[key]) for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", LEGEND]
    if unfinished:
        dirs = ", ".join(unfinished)
        lines += ["", f"Job dirs without `done` (crashed, diverged, killed, running): {dirs}"]
    if common and len(summaries) > 1:
        lines += ["", "Every configuration also has: " + " ".join(f"`{o}`" for o in common)]
    if protocols:
        lines += ["", *protocol_section(protocols)]
    lines += ["", f"## Paired differences of {PRIMARY} on shared seeds", ""]
    if comparisons:
        lines += [
            "A − B over the seeds both ran to a finite value: mean [95 % CI] (paired t), and on "
            "how many seeds A was lower; negative means A is better.",
            "",
        ]
    for c in comparisons:
        lines.append(
            f"- `{c.a}` − `{c.b}`: final {_difference(c.final)}; best {_difference(c.best)}"
        )
    lines += [f"- {note}" if comparisons else note for note in notes]
    return "\n".join(lines) + "\n"


def protocol_section(protocols: dict[str, dict[str, Any] | None]) -> list[str]:
    """Markdown lines: the sweep's evaluation protocols and where each differs from P1."""
    lines = [
        "## Evaluation protocols differ",
        "",
        "These jobs' metrics were computed under different protocols (gan_lab.metrics.protocol):"
        " numbers of rows marked with different P<n> are not comparable, and are not compared.",
        "",
    ]
    (first_label, first), *others = protocols.items()
    lines.append(f"- {first_label}: `{(first or {}).get('id', 'not recorded')}`")
    for label, protocol in others:
        differences = _differences(_flat(first), _flat(protocol))
        shown = "; ".join(f"{key}: {a} → {b}" for key, (a, b) in differences.items())
        lines.append(f"- {label}: `{(protocol or {}).get('id', 'not recorded')}`: {shown}")
    return lines


def _flat(protocol: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in (protocol or {}).items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        elif key not in ("id", "gan_lab_version"):
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {key: (a.get(key), b.get(key)) for key in {**a, **b} if a.get(key) != b.get(key)}


def write_report(sweep_dir: Path) -> str:
    """Write report.md / report.csv / report.png; returns the Markdown that ``main`` prints."""
    jobs = collect(sweep_dir)
    if not any(job["finished"] for job in jobs):
        raise MissingFileError(
            f"{sweep_dir}: no finished jobs (no <job>/done file); pass the folder of a multirun "
            "(multirun/<date_time>), and re-launch unfinished sweeps to finish them"
        )
    summaries = summarise(jobs)
    unfinished = [job["dir"].name for job in jobs if not job["finished"]]
    protocols = protocols_of(jobs)
    text = markdown(summaries, common_overrides(jobs), *compare(summaries), unfinished, protocols)
    (sweep_dir / "report.md").write_text(
        f"# Sweep report: {sweep_dir}\n\n{text}\n![{PRIMARY} over iterations](report.png)\n"
    )
    _write_csv(summaries, sweep_dir / "report.csv")
    _plot(jobs, summaries, sweep_dir / "report.png")
    return text


def _write_csv(summaries: list[ConfigSummary], path: Path) -> None:
    keys = list(summaries[0].metrics)
    columns = ["mean", "ci_low", "ci_high", "n", "non_finite"]
    header = ["config", "label", "finished", "non_finite", "failed"]
    header += [f"{PRIMARY} {kind} {c}" for kind in ("final", "best") for c in columns]
    header += ["best_iteration_median", *(f"{key} {c}" for key in keys for c in columns)]

    def fields(est: Estimate) -> list:
        # Unknown (no finite value, or no CI with one seed) is an empty field, NaN to pandas.
        values = [est.mean, est.low, est.high, est.n, est.non_finite]
        return ["" if v is None else v for v in values]

    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for s in summaries:
            row = [s.config, s.label, s.finished, s.non_finite, s.failed, *fields(s.final)]
            row += [*fields(s.best), "" if s.best_iteration is None else s.best_iteration]
            for key in keys:
                row += fields(s.metrics[key])
            writer.writerow(row)


def mean_curve(jobs: list[Job], config: str) -> list[tuple[int, Estimate]]:
    """val/primary over iterations for one configuration: at each evaluated iteration, the mean
    and 95 % CI over its finished runs' finite values; iterations with none are left out."""
    # Unfinished runs would pull the mean towards early iterations; they are only counted.
    curves = [job["curve"] for job in jobs if job["finished"] and job["config"] == config]
    steps = sorted({step for curve in curves for step in curve})
    points = [(step, estimate(c[step] for c in curves if step in c)) for step in steps]
    return [(step, point) for step, point in points if point.mean is not None]


def _plot(jobs: list[Job], summaries: list[ConfigSummary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for s in summaries[:MAX_PLOTTED]:
        if not (points := mean_curve(jobs, s.config)):
            continue
        x = [step for step, _ in points]
        (line,) = ax.plot(x, [p.mean for _, p in points], marker="o", label=s.label)
        # nan where one seed has a value: fill_between leaves a gap there.
        low = [math.nan if p.low is None else p.low for _, p in points]
        high = [math.nan if p.high is None else p.high for _, p in points]
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    handles, _ = ax.get_legend_handles_labels()
    band = Patch(color="gray", alpha=0.2, label="band: 95 % CI over seeds (t; where n ≥ 2)")
    ax.legend(handles=[*handles, band], fontsize=7)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{PRIMARY} (mean over seeds; inf/nan skipped)")
    if len(summaries) > MAX_PLOTTED:
        ax.set_title(f"best {MAX_PLOTTED} of {len(summaries)} configurations", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are gan_lab's one-line ``UsageError`` (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; {self.format_usage().strip()}")


def main(argv: list[str] | None = None) -> None:
    """CLI entry: write the report and print its Markdown; a user error is one line on stderr."""
    parser = _Parser(
        prog="python -m gan_lab.report",
        description="Summarise a Hydra multirun of gan_lab.train: report.md, report.csv (mean "
        "and 95 %% CI over seeds of the final and best val/primary and the other metrics, "
        "paired differences on shared seeds) and report.png, written into MULTIRUN_DIR.",
    )
    parser.add_argument("sweep_dir", metavar="MULTIRUN_DIR", type=Path)
    with reported_as_one_line("gan_lab.report"):
        args = parser.parse_args(argv)
        if not args.sweep_dir.is_dir():
            raise MissingFileError(f"{args.sweep_dir}: no such directory (pass a multirun dir)")
        print(write_report(args.sweep_dir))


if __name__ == "__main__":
    main()

"""gan_lab.report and gan_lab.study_stats on hand-built sweep dirs (no training), checked
against statistics computed by hand.

The hand computations use Student t quantiles from a table: t_{0.975,2} = 4.302653 (3 seeds),
t_{0.975,1} = 12.706205 (2 seeds). Half-width = t * s / sqrt(n).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from gan_lab import report
from gan_lab.report import collect, compare, mean_curve, summarise, write_report
from gan_lab.run_dir import DoneRecord, write_done
from gan_lab.study_stats import (
    Estimate,
    comparison_pairs,
    estimate,
    paired_difference,
    t_half_width,
)

T_2DF = 4.302653
T_1DF = 12.706205
# 3 seeds with sample standard deviation 1: the half-width every 1-2-3-like triple has.
HW_S1_N3 = T_2DF * 1 / math.sqrt(3)  # 2.48414
INF = math.inf
MINIMAX_0 = [(100, 5.0), (200, 4.0), (300, 3.0)]


def write_job(
    sweep: Path,
    number: int,
    overrides: list[str],
    final: float | None,
    best: dict | None = None,
    evaluations: list[tuple[int, float]] = (),
    protocol: dict | None = None,
) -> None:
    """A job dir as a multirun leaves it; ``final=None`` leaves no ``done`` (a failed job)."""
    run_dir = sweep / str(number)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    with (run_dir / "metrics.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "train/d_loss", "val/primary"])
        for step, value in evaluations:
            writer.writerow([step - 1, 0.69, ""])  # a training row: val/primary empty
            writer.writerow([step, "", value])
    if final is not None:
        metrics = {
            "val/primary": final,
            "toy/reverse_kl": final / 10,
            "train/d_loss": 0.69,  # not a study metric: left out of the table
            "best/val/primary": 0.0,  # neither
        }
        record = DoneRecord(iterations=300, metrics=metrics, best=best, protocol=protocol)
        write_done(run_dir, record)


def best_at(value: float, iteration: int) -> dict:
    return {"metric": "val/primary", "value": value, "iteration": iteration}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """3 configurations x 3 seeds, with numbers that are easy to average by hand.

    - loss=hinge: final 1, 2, 3; best (from ``done.best``) 0.5 @100, 1.5 @200, 2.5 @200,
      earlier and lower than the final values.
    - loss=minimax: final 3, 5, 7; no usable ``done.best`` (absent, or for another metric), so
      best = the minimum of metrics.csv = the final value, at iteration 300.
    - loss=wgan: seed 0 finished with val/primary = inf (best 6 @100), seed 1 finished at 4
      (best 4 @300), seed 2 failed (no done).
    """
    jobs = [
        ("hinge", 0, 1.0, best_at(0.5, 100), [(100, 0.5), (200, 0.8), (300, 1.0)]),
        ("hinge", 1, 2.0, best_at(1.5, 200), [(100, 1.8), (200, 1.5), (300, 2.0)]),
        ("hinge", 2, 3.0, best_at(2.5, 200), [(100, 2.9), (200, 2.5), (300, 3.0)]),
        ("minimax", 0, 3.0, {"metric": "val/fid", "value": 0.1, "iteration": 100}, MINIMAX_0),
        ("minimax", 1, 5.0, None, [(100, 7.0), (200, 6.0), (300, 5.0)]),
        ("minimax", 2, 7.0, None, [(100, 9.0), (200, 8.0), (300, 7.0)]),
        ("wgan", 0, INF, best_at(6.0, 100), [(100, 6.0), (200, INF), (300, INF)]),
        ("wgan", 1, 4.0, best_at(4.0, 300), [(100, 5.0), (200, 4.5), (300, 4.0)]),
        ("wgan", 2, None, None, [(100, 7.0)]),
    ]
    for number, (loss, seed, final, best, evaluations) in enumerate(jobs):
        overrides = ["experiment=ring_mlp", f"loss={loss}", f"seed={seed}"]
        write_job(tmp_path, number, overrides, final, best, evaluations)
    return tmp_path


def test_estimate_and_half_width_by_hand():
    three = estimate([1.0, 2.0, 3.0])  # mean 2, s = 1
    assert three.mean == pytest.approx(2.0) and three.n == 3
    assert three.half_width == pytest.approx(2.484, abs=1e-3)
    assert (three.low, three.high) == pytest.approx((2 - 2.484, 2 + 2.484), abs=1e-3)
    assert t_half_width([4.0, 6.0]) == pytest.approx(T_1DF * math.sqrt(2) / math.sqrt(2))
    one = estimate([5.0])  # one seed: a mean, no interval
    assert (one.mean, one.half_width, one.low, one.n) == (5.0, None, None, 1)
    with_inf = estimate([INF, math.nan, 1.0])  # non-finite values are counted, not averaged
    assert (with_inf.mean, with_inf.n, with_inf.non_finite) == (1.0, 1, 2)
    assert estimate([INF]) == Estimate(mean=None, half_width=None, n=0, non_finite=1)


def test_paired_difference_by_hand():
    a = {"0": 1.0, "1": 2.0, "2": 3.0, "3": 0.0}
    b = {"0": 3.0, "1": 5.0, "2": 7.0, "4": 0.0}  # seeds 3 and 4 are not shared
    diff = paired_difference(a, b)  # d = -2, -3, -4: mean -3, s = 1
    assert diff.diff.n == 3 and diff.lower == 3 and diff.excludes_zero
    assert diff.diff.mean == pytest.approx(-3.0)
    assert (diff.diff.low, diff.diff.high) == pytest.approx((-3 - HW_S1_N3, -3 + HW_S1_N3))
    # d = -1, +1, 0: mean 0, the CI straddles 0, lower on 1 of 3.
    mixed = paired_difference({"0": 1, "1": 3, "2": 2}, {"0": 2, "1": 2, "2": 2})
    assert mixed.lower == 1 and not mixed.excludes_zero
    assert paired_difference({"0": 1.0, "1": INF}, {"0": 2.0, "1": 1.0}) is None  # 1 finite seed


def test_all_pairs_up_to_six_configurations_then_each_against_the_best():
    assert comparison_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert len(comparison_pairs(list("abcdef"))) == 15
    assert comparison_pairs(list("abcdefg")) == [("a", other) for other in "bcdefg"]


def test_config_statistics_match_hand_computation(sweep):
    hinge, minimax, wgan = summarise(collect(sweep))
    # wgan's one finite final (4) is below minimax's mean (5), but its other run is inf.
    assert [s.label for s in (hinge, minimax, wgan)] == ["loss=hinge", "loss=minimax", "loss=wgan"]
    assert (hinge.finished, hinge.non_finite, hinge.failed) == (3, 0, 0)
    assert (wgan.finished, wgan.non_finite, wgan.failed) == (1, 1, 1)
    # hinge: final 1, 2, 3 -> 2 ± 2.484; best 0.5, 1.5, 2.5 -> 1.5 ± 2.484, median iteration 200.
    assert hinge.final.mean == pytest.approx(2.0)
    assert hinge.final.half_width == pytest.approx(HW_S1_N3, abs=1e-4)
    assert hinge.best.mean == pytest.approx(1.5)
    assert hinge.best.half_width == pytest.approx(HW_S1_N3, abs=1e-4)
    assert hinge.best_iteration == 200
    # minimax: final 3, 5, 7 (s = 2) -> 5 ± 4.968; best from metrics.csv = final, at 300.
    assert minimax.final.mean == pytest.approx(5.0)
    assert minimax.final.half_width == pytest.approx(T_2DF * 2 / math.sqrt(3), abs=1e-4)
    assert minimax.best.mean == pytest.approx(5.0) and minimax.best_iteration == 300
    # wgan: final over the finite run only; best 6 and 4 (s = sqrt 2) -> 5 ± 12.706.
    assert (wgan.final.mean, wgan.final.half_width, wgan.final.non_finite) == (4.0, None, 1)
    assert wgan.best.mean == pytest.approx(5.0)
    assert wgan.best.half_width == pytest.approx(T_1DF, abs=1e-4)
    assert wgan.best_iteration == 200  # median of 100 and 300
    # Other metrics: toy/* yes, train/* and best/* no; reverse KL = final / 10.
    assert list(hinge.metrics) == ["toy/reverse_kl"]
    assert hinge.metrics["toy/reverse_kl"].half_width == pytest.approx(HW_S1_N3 / 10, abs=1e-5)
    assert (wgan.metrics["toy/reverse_kl"].mean, wgan.metrics["toy/reverse_kl"].non_finite) == (
        pytest.approx(0.4),
        1,
    )


def test_mean_curve_skips_non_finite_points_and_failed_runs(sweep):
    jobs = collect(sweep)
    hinge = dict(mean_curve(jobs, "experiment=ring_mlp loss=hinge"))
    assert hinge[300].mean == pytest.approx(2.0)
    assert hinge[300].half_width == pytest.approx(HW_S1_N3, abs=1e-4)
    wgan = dict(mean_curve(jobs, "experiment=ring_mlp loss=wgan"))
    # Iteration 100: seeds 0 and 1 (6, 5), not the failed seed 2 (7): 5.5 ± 12.706 * 0.7071 / √2.
    assert wgan[100].mean == pytest.approx(5.5)
    assert wgan[100].half_width == pytest.approx(T_1DF * 0.5, abs=1e-4)
    # Iteration 200: seed 0 is inf, skipped: one value, no band.
    assert (wgan[200].mean, wgan[200].half_width) == (4.5, None)


def test_paired_comparisons_on_shared_seeds(sweep):
    comparisons, notes = compare(summarise(collect(sweep)))
    (comparison,) = comparisons  # wgan has one finite seed: not compared
    assert (comparison.a, comparison.b) == ("loss=hinge", "loss=minimax")
    # Final: d = 1-3, 2-5, 3-7 = -2, -3, -4 -> -3 [-5.484, -0.516], lower on 3/3.
    final = comparison.final
    assert final.diff.mean == pytest.approx(-3.0) and final.lower == 3 and final.diff.n == 3
    assert (final.diff.low, final.diff.high) == pytest.approx((-5.4841, -0.5159), abs=1e-4)
    assert final.excludes_zero
    # Best: d = 0.5-3, 1.5-5, 2.5-7 = -2.5, -3.5, -4.5 -> -3.5 [-5.984, -1.016].
    best = comparison.best
    assert best.diff.mean == pytest.approx(-3.5)
    assert (best.diff.low, best.diff.high) == pytest.approx((-5.9841, -1.0159), abs=1e-4)
    assert notes == ["1 configuration(s) with fewer than 2 finite seeds not compared."]


def test_more_than_six_configurations_are_compared_with_the_best(tmp_path):
    for config in range(7):
        for seed in range(2):
            write_job(tmp_path, 2 * config + seed, [f"lr={config}", f"seed={seed}"], config + seed)
    comparisons, notes = compare(summarise(collect(tmp_path)))
    assert [(c.a, c.b) for c in comparisons] == [("lr=0", f"lr={i}") for i in range(1, 7)]
    assert notes == ["7 configurations: each compared with the best one, `lr=0`, not all pairs."]


def test_one_seed_configurations_say_they_are_not_compared(tmp_path):
    for trial in range(3):  # an Optuna search: one run per trial
        write_job(tmp_path, trial, [f"optimizer.g.lr={trial}"], float(trial))
    text = write_report(tmp_path)
    assert "No paired comparisons: every configuration ran one seed" in text
    assert " − " not in text.split("## Paired")[1]  # no comparison line
    assert "±" not in text.split("\n\n")[0]  # one seed: no intervals in the table


def test_report_files_and_markdown(sweep):
    text = write_report(sweep)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0].startswith("| config | finished | non-finite | failed | final val/primary")
    assert table[2:] == [
        "| loss=hinge | 3 | 0 | 0 | 2 ± 2.5 | 1.5 ± 2.5 | 200 | 0.2 ± 0.25 |",
        "| loss=minimax | 3 | 0 | 0 | 5 ± 5 | 5 ± 5 | 300 | 0.5 ± 0.5 |",
        "| loss=wgan | 1 | 1 | 1 | 4 | 5 ± 13 (n=2) | 200 | 0.4 (1 non-finite) |",
    ]
    assert "± is the half-width of the 95 % confidence interval" in text
    assert "Every configuration also has: `experiment=ring_mlp`" in text
    assert "Job dirs without `done` (crashed, diverged, killed, running): 8" in text
    assert (
        "- `loss=hinge` − `loss=minimax`: final -3 [-5.48, -0.516], CI excludes 0, lower on 3/3 "
        "seeds; best -3.5 [-5.98, -1.02], CI excludes 0, lower on 3/3 seeds"
    ) in text
    assert text in (sweep / "report.md").read_text()

    rows = {row["label"]: row for row in csv.DictReader((sweep / "report.csv").open())}
    hinge, wgan = rows["loss=hinge"], rows["loss=wgan"]
    assert hinge["config"] == "experiment=ring_mlp loss=hinge"
    assert float(hinge["val/primary final mean"]) == pytest.approx(2.0)
    assert float(hinge["val/primary final ci_low"]) == pytest.approx(2 - HW_S1_N3, abs=1e-4)
    assert float(hinge["val/primary best ci_high"]) == pytest.approx(1.5 + HW_S1_N3, abs=1e-4)
    assert float(hinge["best_iteration_median"]) == 200
    assert (wgan["finished"], wgan["non_finite"], wgan["failed"]) == ("1", "1", "1")
    assert wgan["val/primary final ci_low"] == ""  # one finite seed: no interval
    assert wgan["toy/reverse_kl non_finite"] == "1"
    assert (sweep / "report.png").read_bytes().startswith(b"\x89PNG")


def test_cli_prints_the_report_and_errors_are_one_line(sweep, tmp_path, capsys):
    report.main([str(sweep)])
    assert capsys.readouterr().out.startswith("| config |")
    for args, status in (([str(tmp_path / "nope")], 1), ([], 2)):
        with pytest.raises(SystemExit) as exit_info:
            report.main(args)
        assert exit_info.value.code == status
        stderr = capsys.readouterr().err
        assert stderr.startswith("gan_lab.report: error: ") and stderr.count("\n") == 1


def test_numbers_under_different_protocols_are_split_and_not_compared(tmp_path):
    """loss=minimax ran seeds 0-1 under one protocol and seeds 2-3 with fewer generated samples:
    its two halves are separate rows, never averaged together or compared with each other."""
    from gan_lab.metrics.protocol import with_id

    base = {"suite": "features", "reference": {"split": "train", "size": 10000}}
    p1, p2 = with_id({**base, "num_fake": 10000}), with_id({**base, "num_fake": 5000})
    jobs = [
        ("hinge", 0, 1.0, p1),
        ("hinge", 1, 2.0, p1),
        ("minimax", 0, 3.0, p1),
        ("minimax", 1, 5.0, p1),
        ("minimax", 2, 30.0, p2),
        ("minimax", 3, 50.0, p2),
        ("minimax", 4, None, None),  # failed: its configuration's protocols disagree
    ]
    for number, (loss, seed, final, protocol) in enumerate(jobs):
        overrides = [f"loss={loss}", f"seed={seed}"]
        write_job(
            tmp_path, number, overrides, final, evaluations=[(300, final or 0)], protocol=protocol
        )
    summaries = {s.label: s for s in summarise(collect(tmp_path))}
    # The failed job belongs to neither protocol: it is counted in an unmarked row of its own.
    assert set(summaries) == {
        "loss=hinge [P1]",
        "loss=minimax [P1]",
        "loss=minimax [P2]",
        "loss=minimax",
    }
    assert summaries["loss=minimax"].failed == 1 and summaries["loss=minimax"].finished == 0
    assert summaries["loss=minimax [P1]"].final.mean == pytest.approx(4.0)
    assert summaries["loss=minimax [P2]"].final.mean == pytest.approx(40.0)
    text = write_report(tmp_path)
    assert "- `loss=hinge [P1]` − `loss=minimax [P1]`: final -2.5 [-8.85, +3.85]" in text
    assert "`loss=minimax [P2]` were evaluated under different protocols: not compared" in text
    assert "## Evaluation protocols differ" in text
    assert f"- P1: `{p1['id']}`" in text
    assert f"- P2: `{p2['id']}`: num_fake: 10000 → 5000" in text
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert sorted(row["label"] for row in rows) == [
        "loss=hinge [P1]",
        "loss=minimax",
        "loss=minimax [P1]",
        "loss=minimax [P2]",
    ]


def test_protocol_ids_ignore_the_gan_lab_version():
    from gan_lab.metrics.protocol import protocol_id

    protocol = {"suite": "features", "num_fake": 10000}
    assert protocol_id({**protocol, "gan_lab_version": "0.1.0"}) == protocol_id(
        {**protocol, "gan_lab_version": "0.2.0"}
    )
    assert protocol_id(protocol) != protocol_id({**protocol, "num_fake": 50000})

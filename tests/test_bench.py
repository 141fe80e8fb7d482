"""The benchmark harness runs end to end on tiny sizes (speed is judged only by `make bench`)."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench import WORKLOADS, main


@pytest.mark.slow  # every workload (~6 s); a two-workload run is in make test
def test_bench_quick_writes_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--no-progress-bar", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [row["workload"] for row in result["rows"]] == WORKLOADS
    assert result["settings"]["iterations"] == 2
    for row in result["rows"]:
        assert "skipped" not in row, row  # the committed classifier weights are in the package
        a, b = row["paths"]
        assert row[f"{a}_per_s"] > 0 and row[f"{b}_per_s"] > 0
        assert row["ratio"] == round(row[f"{a}_per_s"] / row[f"{b}_per_s"], 3)
        assert row[f"{a}_peak_mem_mb"] > 0 and row[f"{b}_peak_mem_mb"] > 0
    assert result["machine"]["device"] == "cpu"


def test_bench_honours_workloads_and_overrides(tmp_path):
    # gpu.sh relies on --workloads and --override reaching the composed config.
    out = tmp_path / "bench.json"
    main(
        ["--quick", "--workloads", "mlp_ring_b512", "--override", "data.batch_size=32"]
        + ["--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert [row["workload"] for row in result["rows"]] == ["mlp_ring_b512"]
    assert result["rows"][0]["batch_size"] == 32
    assert result["settings"]["override"] == ["data.batch_size=32"]


def test_eval_components_times_each_part(capsys):
    from benchmarks import eval_components

    eval_components.main(["--n", "60", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "extract the real features",
        "real k-NN radii (k = 3, 5)",
        "extract the generated features and logits",
        "precision, recall, density, coverage",
        "Inception Score (10 splits)",
        "all of one evaluation's metrics",
    ]
    assert all(line.endswith("s of 1") for line in lines)

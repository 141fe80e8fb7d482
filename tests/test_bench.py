"""The benchmark harness runs end to end on tiny sizes (speed is judged only by `make bench`)."""

from __future__ import annotations

import json

from benchmarks.bench import WORKLOADS, main


def test_bench_quick_writes_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    names = [row["workload"] for row in result["rows"]]
    assert names[: len(WORKLOADS)] == list(WORKLOADS)
    for row in result["rows"][: len(WORKLOADS)]:
        assert row["gan_lab_samples_per_s"] > 0 and row["plain_samples_per_s"] > 0
        assert row["ratio"] == round(row["gan_lab_samples_per_s"] / row["plain_samples_per_s"], 3)
    assert result["peak_rss_mb"] > 0

"""The toy benchmark harness runs end to end and writes its table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.toy_bench import main, mean_se
from tests import processes

ROOT = Path(__file__).resolve().parents[1]

TINY = ["train.iterations=2", "data.batch_size=8", "model.g.hidden=[4]", "model.d.hidden=[4]"]


def test_bench_writes_table(tmp_path, capsys):
    out = tmp_path / "toy.md"
    main(
        [
            "--seeds",
            "2",
            "--only",
            "ring_mlp",
            "--out",
            str(out),
            *TINY,
        ]
    )
    text = out.read_text()
    assert "| GAN (ours, `ring_mlp`) |" in text
    assert "| PacGAN4 (PacGAN paper) | 7.8 ± 0.1 |" in text
    assert "train.iterations=2" in text  # the command that produced it
    assert text.count("s0:") == 1 and "s1:" in text
    assert "ring_mlp seed=1" in capsys.readouterr().out
    # The raw numbers are kept; re-rendering them gives the same table without training.
    again = tmp_path / "again.md"
    main(["--from-json", str(out.with_suffix(".json")), "--out", str(again)])
    assert again.read_text() == text


def test_mean_se_reports_infinite_seeds():
    assert mean_se([1.0, 3.0], 1) == "2.0 ± 1.0"
    assert mean_se([1.0, 3.0, float("inf")], 1) == "2.0 ± 1.0 (∞ on 1 of 3)"
    assert mean_se([float("inf")], 1) == "∞"


@pytest.mark.slow  # two spawned workers; the one-worker path runs in make test
def test_bench_parallel_jobs(tmp_path):
    # Two spawned workers; the table keeps seed order whatever order the runs finish in. From the
    # command line, in a process group of its own: a hung worker is killed with it.
    out = tmp_path / "toy.md"
    args = ["--jobs", "2", "--seeds", "2", "--only", "grid_mlp", "--out", str(out), *TINY]
    processes.run([sys.executable, "-m", "benchmarks.toy_bench", *args], timeout=100, cwd=ROOT)
    text = out.read_text()
    assert "| GAN (ours, `grid_mlp`) |" in text
    assert text.index("s0:") < text.index("s1:")
    assert "2 run(s) at a time" in text


def test_merge_replaces_only_the_rerun_rows(tmp_path):
    out = tmp_path / "toy.md"
    main(["--seeds", "1", "--only", "ring_mlp", "grid_mlp", "--out", str(out), *TINY])
    saved = json.loads(out.with_suffix(".json").read_text())
    main(["--seeds", "1", "--only", "grid_mlp", "--merge", "--out", str(out), *TINY])
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["runs"]["ring_mlp"] == saved["runs"]["ring_mlp"]
    assert set(merged["runs"]) == {"ring_mlp", "grid_mlp"}
    text = out.read_text()
    assert "| GAN (ours, `ring_mlp`) |" in text and "| GAN (ours, `grid_mlp`) |" in text
    assert "Rows of `grid_mlp` re-measured with `python -m benchmarks.toy_bench" in text
    assert "Rows of `ring_mlp`" not in text


def test_merge_refuses_rows_from_another_setup_before_training(tmp_path):
    out = tmp_path / "toy.md"
    out.with_suffix(".json").write_text(
        json.dumps({"command": "x", "setup": "another machine", "runs": {}})
    )
    with pytest.raises(SystemExit, match="another machine"):
        # A full-size run: it would take minutes if the check came after training.
        main(["--only", "grid_best", "--merge", "--out", str(out)])

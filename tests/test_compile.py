"""`train.compile=true` (torch.compile of G and D) trains like eager mode."""

from __future__ import annotations

import shutil

import pytest

from gan_lab.train import fit

CONFIG = [
    "experiment=ring_mlp",
    "model.g.hidden=[32]",
    "model.d.hidden=[32]",
    "data.batch_size=64",
    "train.iterations=3",
    "trainer.deterministic=true",
]


@pytest.mark.slow  # torch.compile of G and D on CPU: ~20 s of compiling
@pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None,
    reason="torch.compile on CPU needs a C compiler",
)
def test_compiled_losses_match_eager(make_config):
    eager = fit(make_config(*CONFIG)).metrics
    compiled_run = fit(make_config(*CONFIG, "train.compile=true"))
    assert compiled_run.module.generator._compiled_call_impl is not None  # really compiled
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert compiled_run.metrics[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5), key

"""The Python API: ``gan_lab.load``, ``gan_lab.train`` and ``gan_lab.evaluate`` from a script or
a notebook, and Lightning's ``GANModule.load_from_checkpoint``."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gan_lab
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.gan_module import GANModule
from gan_lab.train import fit
from tests import processes
from tests.conftest import QUICK, compose_config
from tests.helpers import write_fake_fashion

TOY = ["experiment=ring_mlp", "model.g.hidden=[8]", "model.d.hidden=[8]"]
SMALL_DCGAN = [
    "experiment=fashion_dcgan",
    "model.g.base_channels=8",
    "model.d.base_channels=8",
    "data.batch_size=4",
    "eval=none",
]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """(last.ckpt of a 4-iteration ring run, 8 samples its trained module generated)."""
    run_dir = tmp_path_factory.mktemp("ring")
    quick = [o for o in QUICK if not o.startswith("callbacks")]
    run = fit(compose_config([*quick, *TOY, "train.iterations=4"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt", run.module.generate(8)


def _python(code: str, cwd: Path) -> str:
    """``python -c code`` in a fresh process (no test fixtures, no data config), its stdout."""
    result = processes.run(
        [sys.executable, "-c", code],
        timeout=90,
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    return result.stdout.strip()


def test_load_gives_the_trained_generator_in_eval_mode(ring_run):
    ckpt, trained = ring_run
    rng = torch.get_rng_state()
    module = gan_lab.load(ckpt)
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the caller's RNG alone
    assert not module.training and module.iteration == 4
    torch.testing.assert_close(module.generate(8), trained)
    assert module.generate(z=module.prior.sample(5)).shape == (5, 2)
    # Lightning's spelling cannot build the nets (their config sits above GANModule): it
    # points to gan_lab.load instead of failing on a missing constructor argument.
    with pytest.raises(TypeError, match=r"use gan_lab.load\("):
        GANModule.load_from_checkpoint(ckpt, map_location="cpu")


def test_load_without_the_data_on_disk(tmp_path):
    """A DCGAN checkpoint of Fashion-MNIST and an MLP checkpoint load, and generate, in a fresh
    process after the data folder is gone."""
    root = tmp_path / "fashion"
    root.mkdir()
    write_fake_fashion(root)
    quick = [o for o in QUICK if not o.startswith("callbacks")]
    dcgan_dir, mlp_dir = tmp_path / "dcgan", tmp_path / "mlp"
    fit(compose_config([*quick, *SMALL_DCGAN, f"data.root={root}"], dcgan_dir))
    fit(compose_config([*quick, *TOY], mlp_dir))
    shutil.rmtree(root)
    ckpts = [str(d / "checkpoints" / "last.ckpt") for d in (dcgan_dir, mlp_dir)]
    code = f"import gan_lab\nfor c in {ckpts!r}: print(tuple(gan_lab.load(c).generate(16).shape))"
    assert _python(code, cwd=tmp_path).splitlines() == ["(16, 1, 28, 28)", "(16, 2)"]


def test_checkpoint_without_a_sample_shape_still_loads(ring_run, tmp_path):
    """Checkpoints written before the sample shape was stored take it from the data config."""
    ckpt, trained = ring_run
    checkpoint = load_checkpoint_file(ckpt)
    del checkpoint["gan_lab"]["sample_shape"]
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    torch.testing.assert_close(gan_lab.load(older).generate(8), trained)


def test_train_and_evaluate_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [*QUICK, *TOY, "callbacks=default", "train.iterations=3"]
    metrics = gan_lab.train(overrides)
    [run_dir] = (tmp_path / "outputs").glob("*/*")  # the CLI's default run dir, under cwd
    assert metrics["train/iteration"] == 3.0 and "val/primary" in metrics
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluated = gan_lab.evaluate(ckpt)
    assert evaluated["iteration"] == 3
    assert evaluated["val/primary"] == pytest.approx(metrics["val/primary"], rel=1e-5)
    # An explicit output_dir, and the module stays a module.
    assert gan_lab.train(overrides, output_dir=tmp_path / "run")["train/iteration"] == 3.0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert importlib.import_module("gan_lab.train") is gan_lab.train
    assert callable(gan_lab.train) and callable(gan_lab.evaluate)


def test_import_gan_lab_is_light():
    """``import gan_lab`` loads neither Lightning nor Hydra until an API name is used."""
    code = "import sys, gan_lab; print('lightning' in sys.modules or 'hydra' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    """README's "From Python" block, run as written; only the placeholder run dir is filled in."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [code] = re.findall(r"## From Python\n.*?```python\n(.*?)```", readme, re.S)
    placeholder = '"outputs/<date>/<time>/checkpoints/last.ckpt"'
    assert placeholder in code
    found = 'str(next(Path("outputs").glob("*/*/checkpoints/last.ckpt")))'
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"Path": Path}
    exec(compile(code.replace(placeholder, found), "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (16, 2)
    assert namespace["metrics"]["iteration"] == 100 and "toy/modes" in namespace["metrics"]

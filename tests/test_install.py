"""gan_lab as a user installs it: the wheel ships every config and the classifier weights, the
installed ``gan-train`` and ``gan-evaluate`` work from any directory, and a user's own config
folder extends the shipped groups through Hydra's search path (README, "Install with pip" and
"Your own configs")."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.config import CONF_DIR
from tests import processes
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = ROOT / "gan_lab" / "metrics" / "weights"

# README's example of a user's config folder: a preset built on a shipped one, and an option of
# their own in a shipped group. Shipped names come first in the search path, so the user's
# files take new names (a my_conf/loss/hinge.yaml would be ignored).
USER_CONFIGS = {
    "experiment/my_ring.yaml": """\
# @package _global_
defaults:
  - ring_mlp
  - override /loss: my_hinge

name: my_ring
""",
    "loss/my_hinge.yaml": "_target_: gan_lab.losses.HingeLoss\n",
}
USER_RUN = ["hydra.searchpath=[file://my_conf]", "experiment=my_ring"]


def build_wheel(dest: Path) -> Path:
    """gan_lab's wheel, built into ``dest`` as ``pip wheel .`` builds it.

    From a copy of the sources: setuptools writes build/ and gan_lab.egg-info/ into the tree it
    builds, and the checkout must not change. No build isolation, so no download: this venv's
    setuptools builds it.
    """
    source = dest / "source"
    shutil.copytree(
        ROOT / "gan_lab", source / "gan_lab", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        ROOT / "hydra_plugins",
        source / "hydra_plugins",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    processes.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dest, source],
        timeout=90,
    )
    (wheel,) = dest.glob("gan_lab-*.whl")
    return wheel


def write_user_configs(folder: Path) -> Path:
    """README's ``my_conf/`` under ``folder``; returns its path."""
    my_conf = folder / "my_conf"
    for name, text in USER_CONFIGS.items():
        (my_conf / name).parent.mkdir(parents=True, exist_ok=True)
        (my_conf / name).write_text(text)
    return my_conf


def assert_ran_with_user_configs(run_dir: Path) -> None:
    """The run's config is the user's preset over the shipped one, in the run dir and in the
    checkpoint (what gan-evaluate rebuilds the run from)."""
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    assert (choices.experiment, choices.loss) == ("my_ring", "my_hinge")
    assert config.name == "my_ring"
    assert config.loss._target_ == "gan_lab.losses.HingeLoss"
    assert config.data._target_ == "gan_lab.data.toy.Ring"  # from the shipped ring_mlp
    stored = load_checkpoint_file(run_dir / "checkpoints" / "last.ckpt")["gan_lab"]["config"]
    assert (stored["name"], stored["loss"]["_target_"]) == ("my_ring", "gan_lab.losses.HingeLoss")


def test_wheel_ships_every_config_and_the_classifier_weights(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    configs = {
        f"gan_lab/conf/{path.relative_to(CONF_DIR).as_posix()}" for path in CONF_DIR.rglob("*.yaml")
    }
    weights = {f"gan_lab/metrics/weights/{p.name}" for p in WEIGHTS_DIR.iterdir() if p.is_file()}
    # Nested groups too (hydra/launcher/), not just the top-level ones.
    assert "gan_lab/conf/hydra/launcher/local_parallel.yaml" in configs
    assert sorted(configs - names) == []
    assert "gan_lab/conf/__init__.py" in names  # Hydra finds the configs as pkg://gan_lab.conf
    classifiers = {"digits_classifier.pt", "fashion_mnist_classifier.pt"}
    assert classifiers <= {Path(w).name for w in weights}  # the glob found the weights
    assert sorted(weights - names) == []
    # The local_gpus launcher and the optuna_study sweeper, where Hydra looks for plugins;
    # hydra_plugins stays a namespace package shared with the other plugins.
    assert "hydra_plugins/gan_lab_launchers/local_gpus_launcher.py" in names
    assert "hydra_plugins/gan_lab_sweepers/optuna_study_sweeper.py" in names
    assert "hydra_plugins/__init__.py" not in names


def test_user_config_folders_extend_the_shipped_ones(tmp_path: Path) -> None:
    """Two folders in one search path, one run: README's relative ``file://my_conf``, found from
    the working directory, and an absolute one (a team's shared configs, say); the preset in
    the first picks an option from the second."""
    my_conf = write_user_configs(tmp_path)
    team_conf = tmp_path / "shared" / "team_conf"
    (team_conf / "loss").mkdir(parents=True)
    (my_conf / "loss" / "my_hinge.yaml").rename(team_conf / "loss" / "my_hinge.yaml")
    run_cli(
        f"hydra.searchpath=[file://my_conf,file://{team_conf}]",
        "experiment=my_ring",
        "train.iterations=3",
        "trainer.enable_progress_bar=false",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert_ran_with_user_configs(tmp_path / "run")


def make_venv(path: Path, wheel: Path) -> Path:
    """A new venv at ``path`` with ``wheel`` installed, borrowing this venv's dependencies
    (torch, Lightning, Hydra ...) instead of downloading them; returns its bin/ folder."""
    processes.run([sys.executable, "-m", "venv", "--without-pip", path], timeout=60)
    python = path / "bin" / "python"
    # This venv's pip installs into the new one (--python, pip >= 22.3), before the .pth below
    # exists: with it, pip would see this venv's editable gan_lab as the one installed.
    processes.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
        + ["install", "--no-deps", "--no-index", wheel],
        timeout=90,
    )
    purelib = processes.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], timeout=30
    ).stdout.strip()
    # Plain path lines, not `import site; site.addsitedir(...)`: the .pth files of this venv are
    # then not processed, so its editable-install finder never runs and the checkout's gan_lab
    # cannot shadow the wheel's. The new site-packages stays first on sys.path.
    Path(purelib, "borrowed_dependencies.pth").write_text(
        "".join(f"{folder}\n" for folder in site.getsitepackages())
    )
    return path / "bin"


def run_installed(
    command: Sequence[str | Path], cwd: Path, timeout: float = 100
) -> subprocess.CompletedProcess:
    """An installed command, in its own process group, as a user's shell would start it: no
    PYTHONPATH, no W&B account."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    return processes.run([str(word) for word in command], timeout=timeout, cwd=cwd, env=env)


# A wheel build and install, then six CLI start-ups (each imports torch, Lightning and Hydra,
# ~5 s alone on 2 cores), three of them short training runs (one a sweep job) and one an
# evaluation: ~57 s measured on 2 cores; the rest is headroom for a machine busy with other tests.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_installed_wheel_trains_and_evaluates_from_an_empty_directory(tmp_path: Path) -> None:
    bin_dir = make_venv(tmp_path / "venv", build_wheel(tmp_path / "dist"))
    empty = tmp_path / "empty"
    empty.mkdir()

    where = run_installed(
        [bin_dir / "python", "-c", "import gan_lab; print(gan_lab.__file__)"], empty
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout

    help_text = run_installed([bin_dir / "gan-train", "--help"], empty).stdout
    groups = [p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name[0] not in "_."]
    for group in set(groups) - {"hydra"}:  # Hydra's own groups are in --hydra-help
        assert re.search(rf"^{group}: ", help_text, re.MULTILINE), (group, help_text)
    assert re.search(r"^experiment: .*\bring_mlp\b", help_text, re.MULTILINE), help_text

    run_installed([bin_dir / "gan-train", "experiment=ring_mlp", "train.iterations=5"], empty)
    (ckpt,) = empty.glob("outputs/*/*/checkpoints/last.ckpt")
    metrics = json.loads(run_installed([bin_dir / "gan-evaluate", f"ckpt={ckpt}"], empty).stdout)
    assert metrics["iteration"] == 5
    assert "toy/modes" in metrics

    # A sweep through the installed local_gpus launcher (a fake GPU, CPU training): its job is
    # a fresh interpreter, which must find the installed gan_lab too.
    run_installed(
        [bin_dir / "gan-train", "-m", "hydra/launcher=local_gpus", "hydra.launcher.gpus=[7]"]
        + [f"hydra.launcher.lock_dir={tmp_path / 'locks'}", "hydra.sweep.dir=sweep"]
        + ["experiment=ring_mlp", "train.iterations=5"],
        empty,
    )
    assert OmegaConf.load(empty / "sweep" / "0" / ".hydra" / "config.yaml").slot.gpus == ["7"]
    assert (empty / "sweep" / "0" / "done").is_file()

    # README's own-configs command with the installed package, whose configs are
    # pkg://gan_lab.conf (an editable install reads them as a folder instead).
    user = tmp_path / "user"
    write_user_configs(user)
    run_installed([bin_dir / "gan-train", *USER_RUN, "train.iterations=5"], user)
    (run_dir,) = user.glob("outputs/*/*")
    assert_ran_with_user_configs(run_dir)

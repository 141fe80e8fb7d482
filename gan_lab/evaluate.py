"""Recompute every metric of a checkpoint: ``python -m gan_lab.evaluate ckpt=PATH [key=value ...]``.

Writes ``metrics.json`` and ``samples.png`` next to the checkpoint; ``save_samples=N`` also
writes ``samples.npz`` (array ``samples``, shape (N, ...), in data space) for outside tools.
Overrides apply to the run's stored config: ``group=option`` replaces a config group as the
training CLI would (``eval=inception``), ``key=value`` sets a value
(``eval.evaluator.num_fake=50000``). A run trained with ``eval=none`` gets the default eval group.
Evaluation noise is seeded by the run's seed, so the numbers of a checkpoint are those its
training logged at that iteration (same settings) and the same on every call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_lab.build import build_datamodule, build_module
from gan_lab.callbacks.samples import image_grid, toy_plot
from gan_lab.checkpoint_io import load_checkpoint_file

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def evaluate(
    ckpt: str | Path, overrides: list[str] | None = None, save_samples: int = 0
) -> dict[str, Any]:
    """Rebuild the run from the checkpoint's stored config and compute its metrics."""
    ckpt = Path(ckpt)
    checkpoint = load_checkpoint_file(ckpt)
    stored = checkpoint.get("gan_lab", {}).get("config")
    if stored is None:
        raise RuntimeError(f"checkpoint {ckpt} has no gan_lab config; was it written by gan_lab?")
    cfg = run_config(stored, overrides or [], plot_dir=ckpt.parent / "theory")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.eval()
    iteration = module.iteration
    metrics: dict[str, Any] = {"checkpoint": str(ckpt), "iteration": iteration}
    if cfg.eval.evaluator is not None:
        evaluator = instantiate(cfg.eval.evaluator)
        metrics.update(evaluator(module, datamodule, iteration))
    out = ckpt.parent
    if datamodule.kind == "toy":
        toy_plot(
            module.generate(2000),
            datamodule.real_samples(2000),
            out / "samples.png",
            f"{ckpt.name}: iteration {iteration}",
        )
    else:
        from torchvision.utils import save_image

        save_image(image_grid(module.generate(z=module.fixed_z)), out / "samples.png")
    if save_samples:
        np.savez_compressed(
            out / "samples.npz", samples=module.generate(save_samples).cpu().numpy()
        )
        metrics["samples_npz"] = str(out / "samples.npz")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_config(stored: dict, overrides: list[str], plot_dir: Path) -> DictConfig:
    """The stored run config with ``group=option`` switches, then ``key=value`` overrides."""
    cfg = OmegaConf.create(stored)
    packages = {o: _package_of(o) for o in overrides}
    switches = {package: o for o, package in packages.items() if package}
    values = [o for o, package in packages.items() if not package]
    trained_without_eval = OmegaConf.select(cfg, "eval.evaluator") is None
    if trained_without_eval and "eval" not in switches:
        print(
            "[gan_lab] this run was trained with eval=none: computing the default eval group's"
            " metrics (pass eval=<option> to choose another)",
            file=sys.stderr,
        )
        switches["eval"] = None
    if switches:
        # Hydra composes the groups (their defaults lists and packages included); their
        # interpolations resolve against the stored run, e.g. ${paths.output_dir}.
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose("train", overrides=[o for o in switches.values() if o])
        for package in switches:
            OmegaConf.update(cfg, package, OmegaConf.select(composed, package), merge=False)
    if OmegaConf.select(cfg, "eval.evaluator") is not None:
        cfg.eval.evaluator.plot_dir = str(plot_dir)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(values))


def _package_of(override: str) -> str | None:
    """``eval=inception`` -> "eval", ``optimizer@optimizer.g=sgd_momentum`` -> "optimizer.g";
    None for a ``key=value`` override (its key names no folder of conf/)."""
    key = override.split("=", 1)[0]
    group, _, package = key.partition("@")
    return (package or group) if (CONF_DIR / group).is_dir() else None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("ckpt=")), None)
    if ckpt is None:
        raise SystemExit(
            "usage: python -m gan_lab.evaluate ckpt=PATH [save_samples=N] [key=value ...]"
        )
    save = next((int(a.split("=", 1)[1]) for a in args if a.startswith("save_samples=")), 0)
    overrides = [a for a in args if not a.startswith(("ckpt=", "save_samples="))]
    metrics = evaluate(ckpt, overrides, save)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

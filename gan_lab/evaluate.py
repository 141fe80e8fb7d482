"""Recompute every metric of a checkpoint, and export its samples.

    python -m gan_lab.evaluate ckpt=PATH [device=auto|cpu|cuda[:N]] [save_samples=N]
                               [save_images=N] [trust_checkpoint=true]
                               [group=option ...] [key=value ...]
    gan-evaluate ckpt=PATH ...                     (the same, as an installed console script)
    gan_lab.evaluate("PATH", overrides=[...])      (from Python: returns the metrics dict)

Writes beside the checkpoint, named after it (so best.ckpt and last.ckpt of one run keep their
own results): ``<stem>.metrics.json`` (the metrics and their ``protocol``: extractor weights,
reference split/size/fingerprint, sample counts, preprocessing; gan_lab.metrics.protocol) and
``<stem>.samples.png``; ``save_samples=N`` adds
``<stem>.samples.npz`` (array ``samples``, shape (N, ...), in data space); ``save_images=N``
writes N generated images as PNG files into ``<stem>.images/`` (image data only), for outside
FID tools such as torch-fidelity or clean-fid. ``device=auto`` (default) uses a GPU when there
is one.

Overrides apply to the run's stored config: ``group=option`` replaces a config group as the
training CLI would (``eval=inception``), ``key=value`` sets a key the run's config has
(``eval.evaluator.num_fake=50000``; ``+key=value`` adds a new one). A run trained with
``eval=none`` gets the default eval group. Evaluation noise is seeded by the run's seed, so the
numbers of a checkpoint are those its training logged at that iteration (same settings) and the
same on every call. Arguments, the checkpoint and the overrides are checked before any data is
loaded; a mistake ends with one line and exit status 2 (usage) or 1.

The checkpoint is opened with ``torch.load(weights_only=True)``, so nothing in it can run;
``trust_checkpoint=true`` unpickles everything (a foreign file from a source you trust).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_lab.build import build_datamodule
from gan_lab.callbacks.samples import image_grid, toy_plot
from gan_lab.checkpoint_io import load_checkpoint_file
from gan_lab.config import CONF_DIR
from gan_lab.config_nodes import target_of
from gan_lab.data import to_pixels
from gan_lab.errors import UsageError, reported_as_one_line
from gan_lab.loading import resolve_device, restore_module, stored_config
from gan_lab.validation import validate

USAGE = (
    "usage: python -m gan_lab.evaluate ckpt=PATH [device=auto|cpu|cuda[:N]] [save_samples=N] "
    "[save_images=N] [trust_checkpoint=true] [group=option ...] [key=value ...]"
)
log = logging.getLogger(__name__)


def evaluate(
    ckpt: str | Path,
    overrides: list[str] | None = None,
    save_samples: int = 0,
    save_images: int = 0,
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Rebuild the run from the checkpoint's stored config and compute its metrics.

    Raises a ``UserError`` (gan_lab.errors) for a missing or foreign checkpoint, an override
    naming no key of the run, or a config value that breaks a rule, before loading any data.
    """
    ckpt = Path(ckpt)
    target = resolve_device(device)
    checkpoint = load_checkpoint_file(ckpt, trust=trust_checkpoint)
    out = Outputs.beside(ckpt)
    cfg = run_config(stored_config(checkpoint, ckpt), overrides or [], plot_dir=out.theory)
    validate(cfg)  # before the data: a bad value fails in a second
    datamodule = build_datamodule(cfg)  # instantiated; its data loads on first use
    if save_images and datamodule.kind == "toy":
        raise UsageError(
            f"save_images={save_images}: {type(datamodule).__name__} is not image data; "
            "use save_samples=N (an .npz array) instead"
        )
    validate(cfg, datamodule)  # may clamp eval.evaluator.num_real to the data, as training did
    evaluator = instantiate(cfg.eval.evaluator) if cfg.eval.evaluator is not None else None
    module = restore_module(cfg, checkpoint, datamodule.sample_shape).to(target).eval()
    iteration = module.iteration
    metrics: dict[str, Any] = {"checkpoint": str(ckpt), "iteration": iteration}
    if evaluator is not None:
        metrics.update(evaluator(module, datamodule, iteration))
        metrics["protocol"] = evaluator.protocol
    if datamodule.kind == "toy":
        toy_plot(
            module.generate(2000),
            datamodule.real_samples(2000),
            out.samples_png,
            f"{ckpt.name}: iteration {iteration}",
        )
    else:
        from torchvision.utils import save_image

        save_image(image_grid(module.generate(z=module.fixed_z).cpu()), out.samples_png)
    metrics["samples_png"] = str(out.samples_png)
    if save_samples:
        samples = module.generate(save_samples).cpu().numpy()
        np.savez_compressed(out.samples_npz, samples=samples)
        metrics["samples_npz"] = str(out.samples_npz)
    if save_images:
        _write_pngs(module, save_images, out.images)
        metrics["images_dir"] = str(out.images)
    out.metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


@dataclass(frozen=True)
class Outputs:
    """Where the results of one checkpoint go: beside it, named after it (``best.ckpt`` ->
    ``best.metrics.json``, ``best.samples.png``, ...)."""

    metrics_json: Path
    samples_png: Path
    samples_npz: Path
    images: Path
    theory: Path

    @classmethod
    def beside(cls, ckpt: Path) -> Outputs:
        stem = ckpt.parent / ckpt.name.removesuffix(".ckpt")
        suffixes = (".metrics.json", ".samples.png", ".samples.npz", ".images", ".theory")
        return cls(*(Path(f"{stem}{suffix}") for suffix in suffixes))


def _write_pngs(module: Any, n: int, folder: Path, batch_size: int = 500) -> None:
    """N generated images as 8-bit PNGs ``000000.png`` ... (the format FID tools read)."""
    from torchvision.io import write_png

    folder.mkdir(parents=True, exist_ok=True)
    pixels = to_pixels(module.generate(n, batch_size=batch_size).cpu())
    for index, image in enumerate(pixels):
        write_png(image, str(folder / f"{index:06d}.png"))


def run_config(stored: DictConfig | dict, overrides: list[str], plot_dir: Path) -> DictConfig:
    """The stored run config with ``group=option`` switches, then ``key=value`` overrides."""
    cfg = OmegaConf.create(stored)
    packages = {o: _package_of(o) for o in overrides}
    switches = {package: o for o, package in packages.items() if package}
    values = [o for o, package in packages.items() if not package]
    trained_without_eval = OmegaConf.select(cfg, "eval.evaluator") is None
    if trained_without_eval and "eval" not in switches:
        log.warning(
            "this run was trained with eval=none: computing the default eval group's metrics "
            "(pass eval=<option> to choose another)"
        )
        switches["eval"] = None
    if switches:
        # Hydra composes the groups (their defaults lists and packages included); their
        # interpolations resolve against the stored run, e.g. ${paths.output_dir}.
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                composed = compose("train", overrides=[o for o in switches.values() if o])
        except HydraException as err:  # an unknown option: Hydra's message lists the valid ones
            raise UsageError(str(err).split("Config search path")[0]) from err
        for package in switches:
            OmegaConf.update(cfg, package, OmegaConf.select(composed, package), merge=False)
    if OmegaConf.select(cfg, "eval.evaluator") is not None:
        cfg.eval.evaluator.plot_dir = str(plot_dir)
        _fill_new_evaluator_settings(cfg)
    for value in values:
        _check_key(cfg, value)
    dotlist = [v.removeprefix("+") for v in values]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))


def _fill_new_evaluator_settings(cfg: DictConfig) -> None:
    """A run stored before an evaluator setting existed (e.g. ``precision_recall_k``) gets the
    value the eval group gives it now, with a note, instead of failing to build its evaluator."""
    target = target_of(cfg, "eval.evaluator")
    if not dataclasses.is_dataclass(target):
        return
    stored = cfg.eval.evaluator
    required = [
        f.name
        for f in dataclasses.fields(target)
        if f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in stored
    ]
    if not required:
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        current = OmegaConf.select(compose("train"), "eval.evaluator") or {}
    filled = {name: current[name] for name in required if name in current}
    for name, value in filled.items():
        stored[name] = value
    if filled:
        log.warning(
            "this run's config predates %s: using the eval group's values",
            ", ".join(f"eval.evaluator.{name}={value}" for name, value in filled.items()),
        )


def _check_key(cfg: DictConfig, override: str) -> None:
    """A ``key=value`` override must name a key of the run's config (``+key=`` adds one), so a
    typo fails here, not as an unexpected argument after the data has loaded."""
    if "=" not in override:
        raise UsageError(f"{override!r}: overrides are key=value or group=option; {USAGE}")
    key = override.split("=", 1)[0]
    if key.startswith("+"):
        return
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and name in node:
        return
    known = f"; {parent or 'the config'} has: {', '.join(map(str, node))}" if node else ""
    raise UsageError(
        f"{key}: the run's config has no such key{known} (use +{key}=VALUE to add one)"
    )


def _package_of(override: str) -> str | None:
    """``eval=inception`` -> "eval", ``optimizer@optimizer.g=sgd_momentum`` -> "optimizer.g";
    None for a ``key=value`` override (its key names no folder of gan_lab/conf/)."""
    key = override.split("=", 1)[0]
    group, _, package = key.partition("@")
    return (package or group) if (CONF_DIR / group).is_dir() else None


def _int_option(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{name}={text}: must be an integer >= 0")
    return value


def _bool_option(name: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise UsageError(f"{name}={text}: must be true or false")
    return text.lower() == "true"


def parse_args(args: list[str]) -> dict[str, Any]:
    """Command-line arguments -> keyword arguments of ``evaluate``; exits 0 after ``--help``."""
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        raise SystemExit(0)
    kwargs: dict[str, Any] = {"overrides": []}
    for arg in args:
        name, sep, text = arg.partition("=")
        if not sep:
            raise UsageError(f"{arg!r}: arguments are key=value; {USAGE}")
        if name == "ckpt":
            kwargs["ckpt"] = text
        elif name == "device":
            kwargs["device"] = text
        elif name in ("save_samples", "save_images"):
            kwargs[name] = _int_option(name, text)
        elif name == "trust_checkpoint":
            kwargs[name] = _bool_option(name, text)
        else:
            kwargs["overrides"].append(arg)
    if not kwargs.get("ckpt"):
        raise UsageError(f"ckpt=PATH is required; {USAGE}")
    return kwargs


def main(argv: list[str] | None = None) -> None:
    """CLI entry: evaluate, print the metrics as JSON; a user error is one line on stderr."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    with reported_as_one_line("gan_lab.evaluate"):
        metrics = evaluate(**parse_args(list(sys.argv[1:] if argv is None else argv)))
    print(json.dumps(metrics, indent=2))


class _EvaluateModule(ModuleType):
    """This module, callable: ``gan_lab.evaluate(ckpt, ...)`` is ``evaluate`` (see
    gan_lab.train's ``_TrainModule`` for why a callable module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _EvaluateModule

if __name__ == "__main__":
    main()

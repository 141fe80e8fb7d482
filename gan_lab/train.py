"""CLI entry point and run orchestration: compose the config, build (gan_lab.build), validate,
fit, report where the results went.

    python -m gan_lab.train [group=option ...] [key=value ...]     (or gan-train ...)
    gan_lab.train(["experiment=ring_mlp", "train.iterations=500"])  (Python: the final metrics)

Called, this module is the Python API: ``gan_lab.train(overrides, output_dir=None)`` is ``run``.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import hydra
import lightning as L
from hydra import compose, initialize_config_dir
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_lab import build
from gan_lab.callbacks.checkpoint import best_evaluation
from gan_lab.callbacks.evaluation import evaluation_protocol
from gan_lab.config import CONF_DIR  # importing it registers the run schema
from gan_lab.console import run_log
from gan_lab.data.base import GANDataModule
from gan_lab.errors import one_line, reported_as_one_line
from gan_lab.gan_module import GANModule
from gan_lab.resume import Start, config_digest, plan
from gan_lab.run_dir import DoneRecord, write_done
from gan_lab.run_lock import claim_run_dir
from gan_lab.stopping import Diverged, StoppedEarly, exit_status, stop_signals
from gan_lab.validation import validate

# Named, not __name__: under ``python -m gan_lab.train`` this module is __main__.
log = logging.getLogger("gan_lab.train")


@dataclass
class Run:
    """What a fit leaves behind; ``module.stopped`` says whether it ended before its budget."""

    trainer: L.Trainer
    module: GANModule
    datamodule: GANDataModule
    metrics: dict[str, float]


def fit(cfg: DictConfig, start: Start | None = None) -> Run:
    """Fit one GAN as the config says, from ``start`` (by default ``gan_lab.resume.plan``)."""
    start = plan(cfg) if start is None else start
    with run_log():
        validate(cfg)  # every declared value, before any part is built
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build.build_datamodule(cfg)
        validate(cfg, datamodule)
        module = build.build_module(cfg, datamodule.sample_shape)
        module.lineage = start.lineage
        trainer = build.build_trainer(cfg)
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        ckpt_path = str(start.checkpoint) if start.checkpoint is not None else None
        if trainer.is_global_zero:
            log.info(
                "training %s: %s vs %s, %s, on %s, %d iterations (k_d_steps=%d)%s; "
                "run directory %s",
                cfg.name,
                type(module.generator).__name__,
                type(module.discriminator).__name__,
                type(module.loss).__name__,
                type(datamodule).__name__,
                cfg.train.iterations,
                cfg.train.k_d_steps,
                f", {'warm start' if start.warm else 'resuming'} from {ckpt_path} at "
                f"iteration {start.iteration}"
                if ckpt_path
                else "",
                cfg.paths.output_dir,
            )
        try:
            with stop_signals(lambda: module.iteration):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except StoppedEarly as error:
            module.request_stop(error)  # kept if the module had asked for a stop first
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    _finish_wandb()
    return Run(trainer, module, datamodule, metrics)


def _finish_wandb() -> None:
    # Several runs in one process (tests, Hydra's basic launcher) each need their own W&B run.
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, print where the results went, return the final logged metrics.

    The run holds its run dir's lock (gan_lab/run_lock.py) from the start to the end. A run
    that stops before its budget raises ``gan_lab.stopping.StoppedEarly`` (``Diverged`` or
    ``Interrupted``) after saving what it could; no ``done`` record is written for it.
    """
    with claim_run_dir(cfg.paths.output_dir):
        start = plan(cfg)
        if start.finished is not None:
            return start.finished.metrics
        run = fit(cfg, start)
        stopped = run.module.stopped
        # A signal during the last iteration still leaves a finished run (and exits 130/143, so
        # a sweep stops); a diverged run is never done.
        finished = run.module.iteration >= cfg.train.iterations and not isinstance(
            stopped, Diverged
        )
        if run.trainer.is_global_zero and finished:
            _report(cfg, run.metrics)
            record = DoneRecord(
                iterations=run.module.iteration,
                metrics=run.metrics,
                config_digest=config_digest(run.module.config),
                config=run.module.config,
                best=best_evaluation(run.trainer),
                protocol=evaluation_protocol(run.trainer),
                **run.module.lineage,  # started_from, resumes
            )
            write_done(cfg.paths.output_dir, record)
    if stopped is not None:
        raise stopped
    return run.metrics


def _report(cfg: DictConfig, metrics: dict[str, float]) -> None:
    out = Path(cfg.paths.output_dir)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if "/" in k)
    # One record, so that the console (Hydra's handler) and train.log both hold the whole
    # summary once; a print would reach only the console.
    log.info(
        "run finished\n"
        f"run directory : {out}\n"
        f"samples       : {out / 'samples'}\n"
        f"checkpoints   : {out / 'checkpoints'}\n"
        f"metrics       : {out / 'metrics.csv'}\n"
        f"final metrics : {shown}"
    )


def run(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, float]:
    """Train from Python as ``gan-train OVERRIDES`` would; return the final logged metrics.

    The run writes into ``output_dir``, by default a fresh ``outputs/<date>/<time>`` under the
    current directory (the CLI's ``hydra.run.dir``). A user error raises a ``UserError``
    (gan_lab.errors) naming the key and the fix. Multirun sweeps are the CLI's (``-m``).
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    if output_dir is None:
        output_dir = cfg.hydra.run.dir  # resolves ${now:...} as Hydra would
    with open_dict(cfg):
        del cfg.hydra  # ${hydra:...} resolves only inside a Hydra app
        cfg.paths.output_dir = str(Path(output_dir).resolve())
    return train(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """CLI entry; returns ``optimized_metric``'s final value so Hydra sweepers can optimise it.

    A user error (gan_lab.errors.UserError) ends the run with one line and a non-zero status;
    ``HYDRA_FULL_ERROR=1`` shows its traceback.
    """
    with reported_as_one_line("gan_lab.train"):
        try:
            metrics = train(cfg)
        except StoppedEarly as stop:
            if rank_zero_only.rank == 0:  # under DDP every rank stops alike; one reports
                print(f"gan_lab.train: stopped: {one_line(stop)}", file=sys.stderr, flush=True)
            if (status := exit_status(stop)) is None:
                # The sweeper gets NaN for the diverged job (Optuna records a failed trial).
                return math.nan if cfg.optimized_metric else None
            raise SystemExit(status) from None
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


class _TrainModule(ModuleType):
    """This module, callable: ``gan_lab.train([...])`` runs training (``run``).

    The module and the function share one name, so the module itself is made callable (module
    ``__class__`` assignment, Python >= 3.5): importing ``gan_lab.train`` anywhere cannot then
    shadow the API function, nor the function shadow the module.
    """

    def __call__(
        self, overrides: Sequence[str] = (), output_dir: str | Path | None = None
    ) -> dict[str, float]:
        return run(overrides, output_dir)


sys.modules[__name__].__class__ = _TrainModule

if __name__ == "__main__":
    main()

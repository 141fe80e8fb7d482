"""Resumable Optuna studies for Hydra sweeps (``hydra/sweeper=optuna_study``; the
``hparams_search=ring_optuna`` preset uses it).

Hydra's Optuna sweeper keeps its study in memory and numbers its jobs from 0 at every launch:
a killed search starts over, and a re-launch would run its new trials in the old trials' run
dirs. This sweeper keeps the stock sweep loop and adds, before it:

- the study in ``storage`` (``<sweep dir>/optuna.db``), loaded when it exists;
- the trials a killed sweep left RUNNING, run again first, in their own run dirs, with the
  overrides they started with, resuming their checkpoints (``ckpt_path=last``);
- ``n_trials`` counts the study's trials in all: a re-launch runs only the ones still missing;
- job number = trial number, so trial N always runs in ``<sweep dir>/N``;
- the sampler of a re-launch seeded ``seed + trials held``, so that it does not draw the first
  launch's parameters again;
- ``optimized_metric`` checked against what the runs log, before any trial.

One sweep per study at a time: a RUNNING trial found at start-up is taken for one a killed sweep
left. The sweeper holds its sweep dir's lock (gan_lab.run_lock) while it runs, so a second
launch into the same dir is refused; a study in a shared database must not be swept from two
sweep dirs at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf, open_dict
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from gan_lab import run_dir as run_files
from gan_lab.errors import UserError, reported_as_one_line
from gan_lab.run_lock import RunDirInUse, RunLock
from gan_lab.validation import check_optimized_metric

log = logging.getLogger(__name__)

# The config keys check_optimized_metric reads: a search that varies one of them has no single
# config to check before its trials.
_METRIC_SOURCES = ("data", "eval", "experiment", "optimized_metric")


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """Hydra's ``OptunaSweeperImpl`` on a persistent study, re-launchable (module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        with reported_as_one_line("gan_lab.train"):
            self._check_metric(arguments)
            with claimed_sweep_dir(Path(str(self.config.hydra.sweep.dir))):
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage,
                    sampler=self.sampler,
                    directions=self._get_directions(),
                    load_if_exists=True,
                )
                # gan_lab.train returns NaN for a diverged run: a failed trial, not a crash.
                self.launcher = DivergedAsFailed(self.launcher)
                self._rerun_unfinished(study)
                held = len(study.trials)
                to_run = max(0, self.n_trials - held)
                log.info(
                    "study %s holds %d trials; n_trials=%d: %d to run",
                    study.study_name,
                    held,
                    self.n_trials,
                    to_run,
                )
                self.n_trials = to_run
                self.sampler = self._reseeded_sampler(held)
                try:
                    super().sweep(arguments)  # loads the same study, runs the new trials
                except ValueError:
                    # The stock loop's last step, the best trial, fails when none completed.
                    if self.storage is None or study.get_trials(
                        deepcopy=False, states=(TrialState.COMPLETE,)
                    ):
                        raise
                    raise UserError(
                        f"study {study.study_name}: no trial completed (each failed or "
                        "diverged), so there are no best parameters; see the trials' train.log "
                        f"in {self.config.hydra.sweep.dir}"
                    ) from None

    def _check_metric(self, arguments: list[str]) -> None:
        """``check_optimized_metric`` on the multirun's config, which holds the command line's
        overrides except its sweeps; skipped where the trials set a key the check reads (a
        sweep, or any entry of hydra.sweeper.params): then no one config says what they log."""
        parser = OverridesParser.create()
        per_trial = [
            *parser.parse_overrides(self._parse_sweeper_params_config()),
            *(
                override
                for override in parser.parse_overrides(arguments)
                if override.is_sweep_override()
            ),
        ]
        keys = {override.get_key_element().lstrip("+~") for override in per_trial}
        varied = sorted(key for key in keys if key.split(".")[0].split("@")[0] in _METRIC_SOURCES)
        if varied:
            log.info("optimized_metric not checked at start-up: the trials set %s", varied)
            return
        check_optimized_metric(self.config)

    def _configure_trials(
        self,
        trials: list[Trial],
        search_space_distributions: dict[str, BaseDistribution],
        fixed_params: dict[str, Any],
    ) -> Sequence[Sequence[str]]:
        numbers = [trial.number for trial in trials]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise UserError(
                f"study {self.study_name}: trials {numbers} of one batch are not consecutive, so "
                "another process adds trials to this study; one sweep per study at a time"
            )
        # The stock loop launches these with initial_job_idx=self.job_idx, read right after this
        # call: job N (run dir <sweep dir>/N) is trial N, whatever earlier launches ran.
        self.job_idx = numbers[0]
        return super()._configure_trials(trials, search_space_distributions, fixed_params)

    def _rerun_unfinished(self, study: optuna.Study) -> None:
        """Run the trials a killed sweep left RUNNING again, each in its own job (its number),
        and record their results. Every RUNNING trial is a killed sweep's: this one holds the
        sweep dir's lock, and no other sweeps the study (module docstring)."""
        unfinished = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not unfinished:
            return
        log.info(
            "trials %s were running when the sweep stopped: running them again first",
            [trial.number for trial in unfinished],
        )
        objectives = len(study.directions)
        for batch in consecutive_batches(unfinished, self.n_jobs):
            overrides = [self._rerun_overrides(trial) for trial in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            failures = [
                error
                for trial, ret in zip(batch, returns)
                if (error := tell(study, trial.number, ret, objectives)) is not None
            ]
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                log.error(
                    "Failed %d times out of %d with max_failure_rate=%s.",
                    len(failures),
                    len(returns),
                    self.max_failure_rate,
                )
                for ret in returns:
                    ret.return_value  # noqa: B018 - raises a failed job's own error, as stock
                raise failures[0]

    def _rerun_overrides(self, trial: FrozenTrial) -> list[str]:
        """The trial's overrides as the stock sweeper formed them (its parameters, then the fixed
        ones, kept as user attributes), plus ``ckpt_path=last`` where its run dir holds a run:
        that resumes its checkpoint, or returns its result if it had finished. (A fresh run
        into such a dir would be refused; where the dir holds none, a fresh run is the same.)"""
        params = {**trial.params, **trial.user_attrs}
        overrides = [f"{name}={value}" for name, value in params.items()]
        if not any(name.lstrip("+~") == "ckpt_path" for name in params):
            run_dir = self._run_dir(overrides, trial.number)
            if (
                run_files.last_checkpoint(run_dir).is_file()
                or run_files.done_path(run_dir).is_file()
            ):
                overrides.append("ckpt_path=last")
        return overrides

    def _run_dir(self, overrides: list[str], job_num: int) -> Path:
        # Composed as the launcher composes the job, so a custom hydra.sweep.subdir counts too.
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.num = job_num
        return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)

    def _reseeded_sampler(self, offset: int) -> Any:
        """The sampler, seeded with ``seed + offset`` when the study already holds ``offset``
        trials: seeded as at the first launch, it would draw the first launch's parameters
        again (TPE samples its first trials at random)."""
        node = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        if offset == 0 or node is None or node.get("_partial_") or node.get("seed") is None:
            return self.sampler
        return instantiate(node, seed=node.seed + offset)


@contextmanager
def claimed_sweep_dir(sweep_dir: Path) -> Iterator[None]:
    """Create ``sweep_dir`` and hold its lock for the sweep; refuse it while another live
    process holds it."""
    lock = RunLock(sweep_dir)
    try:
        lock.acquire()
    except RunDirInUse as error:
        holder = error.owner.describe() if error.owner is not None else "another process"
        raise UserError(
            f"hydra.sweep.dir={sweep_dir}: {holder} is sweeping there; one sweep per sweep dir "
            "at a time: wait for it to end, or pick another hydra.sweep.dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def consecutive_batches(trials: Sequence[FrozenTrial], size: int) -> list[list[FrozenTrial]]:
    """``trials`` in batches of at most ``size`` consecutive numbers: a launch numbers its
    jobs on from its first one."""
    batches: list[list[FrozenTrial]] = []
    for trial in trials:
        last = batches[-1] if batches else None
        if last is not None and len(last) < size and last[-1].number + 1 == trial.number:
            last.append(trial)
        else:
            batches.append([trial])
    return batches


class _Diverged:
    """What a diverged job returns to the sweep loop: no value (``float()`` fails, so the stock
    loop records a FAIL trial), and a reason its warning shows."""

    def __float__(self) -> float:
        raise TypeError(str(self))

    def __str__(self) -> str:
        return "no value: the run diverged (non-finite loss); a failed trial"


DIVERGED = _Diverged()


class DivergedAsFailed:
    """The sweep's launcher, with each job that returned NaN (gan_lab.train's diverged run)
    returning ``DIVERGED`` instead.

    Optuna 2.10 refuses to be told NaN, and the stock loop then tells FAIL with the NaN still
    attached, which raises out of the sweep: one diverged trial ended the whole search. With
    ``DIVERGED`` the stock loop records a FAIL trial, and its ``max_failure_rate`` check (which
    re-raises only the errors of jobs that crashed) lets the search go on; a diverged
    configuration is a result, not a broken sweep.
    """

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for ret in returns:
            # return_value re-raises the error of a job that did not complete.
            value = ret.return_value if ret.status == JobStatus.COMPLETED else None
            if isinstance(value, float) and math.isnan(value):
                ret.return_value = DIVERGED
        return returns

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)


def tell(study: optuna.Study, number: int, ret: JobReturn, objectives: int) -> Exception | None:
    """Record job ``ret``'s result for trial ``number``: COMPLETE with its values, or FAIL
    (returned, as the stock sweeper counts it towards max_failure_rate; a diverged run is a FAIL
    trial, not a failure of the sweep)."""
    if ret.status == JobStatus.COMPLETED and ret.return_value is DIVERGED:
        study.tell(number, state=TrialState.FAIL)
        log.warning("trial %d: %s", number, DIVERGED)
        return None
    try:
        study.tell(number, returned_values(ret.return_value, objectives))
    except Exception as error:
        study.tell(number, state=TrialState.FAIL)
        log.warning("Failed experiment: %s", error)
        return error
    return None


def returned_values(value: Any, objectives: int) -> list[float]:
    """A job's return value as the study's objective values (the stock sweeper's rules)."""
    try:
        values = [float(value)] if objectives == 1 else [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise ValueError(f"Return value must be float-castable. Got '{value}'.") from error
    if len(values) != objectives:
        raise ValueError(f"Expected {objectives} values, got {len(values)}: {value}")
    return values

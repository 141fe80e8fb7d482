"""``hydra/sweeper=optuna_study``: Hydra's Optuna sweeper with a study that survives a kill.

Thin on purpose: Hydra imports every module under ``hydra_plugins`` at start-up, and Optuna
takes seconds to import, so this one only hands its settings to gan_lab.optuna_study, imported
when a sweep is set up (as the stock OptunaSweeper imports its ``_impl``).
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


class OptunaStudySweeper(OptunaSweeper):
    """The stock Optuna sweeper on a study kept in ``storage`` (``<sweep dir>/optuna.db``):
    re-launched, it re-runs the trials a kill left unfinished, then runs new ones until the
    study holds ``n_trials``; trial N runs in job N (run dir ``<sweep dir>/N``).

    Takes the stock sweeper's settings (gan_lab/conf/hydra/sweeper/optuna_study.yaml).
    """

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from gan_lab.optuna_study import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

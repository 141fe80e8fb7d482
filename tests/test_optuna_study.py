"""Resumable Optuna studies (gan_lab/optuna_study.py, ``hparams_search=ring_optuna``): a killed
search continues where it stopped, trial N runs in run dir N, and an optimized_metric no run
logs fails before any trial; the metric keys the evaluation suites declare are what they log.

Optuna is imported inside the tests: it takes seconds, which every collection would pay."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gan_lab.build import build_datamodule, build_module
from gan_lab.errors import ConfigError, UserError
from gan_lab.metrics.evaluation import Evaluator
from gan_lab.run_lock import RunLock
from gan_lab.stopping import EXIT_SIGINT
from gan_lab.validation import check_optimized_metric
from tests import processes
from tests.test_interruptions import finish, wait_for
from tests.test_sweeps import TINY

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "optimizer.g.lr",
    "optimizer.d.lr",
    "optimizer.g.betas",
    "optimizer.d.betas",
    "train.k_d_steps",
    "loss",
}


def launch(sweep_dir: Path, *extra: str) -> subprocess.Popen:
    """The ring_optuna search in ``sweep_dir``, every iteration slowed down so that a signal
    lands inside a trial; each job writes its finished iteration to ``<sweep_dir>.progress<N>``."""
    command = [
        sys.executable,
        "-m",
        "gan_lab.train",
        "-m",
        *TINY,
        "hparams_search=ring_optuna",
        "hydra.sweeper.n_trials=4",
        "+callbacks.throttle._target_=tests.helpers.Throttle",
        f"+callbacks.throttle.progress_file={sweep_dir}.progress" + "${hydra:job.num}",
        "+callbacks.throttle.seconds=0.1",
        "+callbacks.throttle.at_start=true",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return processes.spawn(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def load_trials(sweep_dir: Path) -> list:
    import optuna

    storage = f"sqlite:///{sweep_dir}/optuna.db"
    return optuna.load_study(study_name="ring_optuna", storage=storage).get_trials()


def files_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``run_dir``: relative path -> (mtime in ns, size)."""
    return {
        str(path.relative_to(run_dir)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
    }


@pytest.mark.timeout(240)  # two sweep launches of ~15 s each on 2 cores, then their checks
@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGKILL"],
)
def test_a_killed_search_resumes_its_cut_trial_and_stops_at_n_trials(tmp_path, sig):
    """Stopped during trial 2, the same command again runs trial 2 again first, in dir 2, with
    its parameters (from its checkpoint where the stop saved one), then trial 3 only: the study
    holds n_trials=4 in all, trials 0 and 1 are not run again, and trial N's dir is N."""
    import optuna

    sweep = tmp_path / "sweep"
    process = launch(sweep)
    wait_for(process, Path(f"{sweep}.progress2"), 2)
    os.killpg(process.pid, sig)
    finish(process, EXIT_SIGINT if sig == signal.SIGINT else -signal.SIGKILL)
    states = [trial.state for trial in load_trials(sweep)]
    running, complete = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE
    assert states == [complete, complete, running]
    assert not (sweep / "2" / "done").exists()
    saved = (sweep / "2" / "checkpoints" / "last.ckpt").is_file()
    assert saved == (sig == signal.SIGINT)  # TINY checkpoints only at its end or on a stop
    finished = {job: files_of(sweep / job) for job in ("0", "1")}

    output = finish(launch(sweep), 0)

    trials = load_trials(sweep)
    assert [trial.state for trial in trials] == [complete] * 4, output[-3000:]
    assert {job: files_of(sweep / job) for job in ("0", "1")} == finished
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == ["0", "1", "2", "3"]
    for trial in trials:
        run_dir = sweep / str(trial.number)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert {f"{name}={value}" for name, value in trial.params.items()} <= set(overrides)
        assert set(trial.params) == PARAMS
        # Betas come as strings (Optuna's categorical takes scalars) and reach the run as lists.
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert len(config["optimizer"]["g"]["betas"]) == len(config["optimizer"]["d"]["betas"]) == 2
        done = json.loads((run_dir / "done").read_text())
        assert done["metrics"]["val/primary"] == pytest.approx(trial.value)
    resumed = json.loads((sweep / "2" / "done").read_text())["resumes"]
    overrides_2 = yaml.safe_load((sweep / "2" / ".hydra" / "overrides.yaml").read_text())
    assert ("ckpt_path=last" in overrides_2) == saved
    assert len(resumed) == int(saved)  # trained on from the checkpoint the stop saved
    # The re-launch's sampler is seeded on from the first launch's, not drawing its first
    # trial's parameters again.
    assert trials[3].params != trials[0].params
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == PARAMS
    assert results["best_value"] == pytest.approx(min(trial.value for trial in trials))


@pytest.mark.parametrize(
    "overrides",
    [["optimized_metric=val/typo"], pytest.param(["eval=none"], marks=pytest.mark.slow)],
    ids=["typo", "eval_none"],
)
def test_an_optimized_metric_no_run_logs_fails_before_any_trial(tmp_path, overrides):
    sweep = tmp_path / "sweep"
    result = processes.run(
        [
            sys.executable,
            "-m",
            "gan_lab.train",
            "-m",
            *TINY,
            "hparams_search=ring_optuna",
            *overrides,
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=100,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("gan_lab.train: error: optimized_metric=val/")
    assert not sweep.exists()  # no study, no trial dir


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["experiment=ring_mlp", "optimized_metric=val/typo"],
            "optimized_metric=val/typo: no run of this config logs it; runs log "
            "best/iteration, best/val/primary, toy/high_quality, toy/modes, toy/reverse_kl, "
            "val/primary and train/ keys",
        ),
        (
            ["experiment=ring_mlp", "eval=none"],
            "optimized_metric=val/primary: no run of this config logs it; no evaluation runs",
        ),
        (
            ["experiment=ring_mlp", "eval.every_n_iterations=0"],
            "optimized_metric=val/primary: no run of this config logs it; no evaluation runs",
        ),
        (
            ["eval=inception", "optimized_metric=val/fid_classifier"],
            "runs log best/iteration, best/val/primary, val/coverage_inception, "
            "val/density_inception, val/fid_inception, val/is_inception, val/is_inception_std, "
            "val/kid_inception, val/kid_inception_std, val/precision_inception, val/primary, "
            "val/recall_inception and train/ keys",
        ),
        (["experiment=ring_mlp", "optimized_metric=null"], "a sweep optimises a logged metric"),
        (
            ["experiment=ring_mlp", "callbacks=none"],
            "optimized_metric=val/primary: no run of this config logs it; no evaluation runs",
        ),
        (["experiment=ring_mlp", "optimized_metric=toy/modes"], None),
        (["experiment=ring_mlp", "optimized_metric=best/val/primary"], None),
        (["experiment=ring_mlp", "optimized_metric=best/iteration"], None),
        (
            ["experiment=ring_mlp", "optimized_metric=best/toy/modes"],
            "runs log best/iteration, best/val/primary, toy/high_quality",
        ),
        (["experiment=ring_mlp", "eval=none", "optimized_metric=train/d_loss"], None),
        (["experiment=gaussian1d_mlp", "optimized_metric=theory/jsd"], None),
        (["optimized_metric=val/fid_classifier"], None),
    ],
)
def test_optimized_metric_is_checked_against_the_declared_keys(make_config, overrides, message):
    cfg = make_config(*overrides, quick=False)  # with the callbacks that evaluate
    if message is None:
        check_optimized_metric(cfg)
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_optimized_metric(cfg)


@pytest.mark.parametrize(
    ("experiment", "loss", "suite"),
    [
        ("ring_mlp", "non_saturating", "modes"),
        ("gaussian1d_mlp", "non_saturating", "gaussian_1d"),  # D estimates D*: every key
        # No D*: the theory of p_g's side only. Slow: 3 s on 2 cores for what the case above
        # and the declaration's comment say.
        pytest.param("gaussian1d_mlp", "hinge", "gaussian_1d", marks=pytest.mark.slow),
    ],
)
def test_the_declared_keys_are_what_the_suites_log(make_config, experiment, loss, suite):
    cfg = make_config(f"experiment={experiment}", f"loss={loss}", "model.g.hidden=[8]")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.sample_shape)
    evaluator = instantiate(cfg.eval.evaluator, plot_dir=None)
    logged = set(evaluator(module, datamodule, 0))
    declared = Evaluator.logged_keys(datamodule.metrics, cfg.eval.evaluator.extractor_name)
    assert datamodule.metrics == suite
    if loss == "hinge":
        assert logged < declared and declared - logged == {
            "theory/value",
            "theory/d_vs_dstar_max_err",
        }
    else:
        assert logged == declared


def test_the_features_suite_declares_keys_by_extractor_name():
    assert Evaluator.logged_keys("features", "inception") == {
        "val/fid_inception",
        "val/kid_inception",
        "val/kid_inception_std",
        "val/precision_inception",
        "val/recall_inception",
        "val/density_inception",
        "val/coverage_inception",
        "val/is_inception",
        "val/is_inception_std",
        "val/primary",
    }
    assert Evaluator.logged_keys("", "classifier") == frozenset()


def test_a_sweep_dir_another_sweep_holds_is_refused(tmp_path):
    from gan_lab.optuna_study import claimed_sweep_dir

    with RunLock(tmp_path, heartbeat_s=0):
        with pytest.raises(UserError, match="one sweep per sweep dir at a time"):
            with claimed_sweep_dir(tmp_path):
                pass
    with claimed_sweep_dir(tmp_path):  # free again once the other sweep let go
        assert (tmp_path / "gan_lab.lock").is_file()
    assert not (tmp_path / "gan_lab.lock").exists()


class _Numbered:
    def __init__(self, number: int) -> None:
        self.number = number


def test_unfinished_trials_launch_in_runs_of_consecutive_numbers():
    from gan_lab.optuna_study import consecutive_batches

    trials = [_Numbered(n) for n in (2, 3, 4, 7, 9, 10)]
    batches = consecutive_batches(trials, 2)
    assert [[trial.number for trial in batch] for batch in batches] == [[2, 3], [4], [7], [9, 10]]


def test_a_batch_of_new_trials_must_be_consecutive_to_be_numbered_as_jobs():
    from gan_lab.optuna_study import ResumableOptunaSweeperImpl

    sweeper = ResumableOptunaSweeperImpl(None, "minimize", None, "s", 4, 2, 0.0, None, None, None)
    with pytest.raises(UserError, match="another process adds trials to this study"):
        sweeper._configure_trials([_Numbered(4), _Numbered(6)], {}, {})


@pytest.mark.parametrize(
    ("params", "arguments", "checked"),
    [
        ({}, ["loss=hinge,minimax"], True),
        ({"loss": "choice(hinge, minimax)"}, [], True),
        ({"data": "choice(ring, gaussian_1d)"}, [], False),  # toy/wasserstein: gaussian_1d's
        ({}, ["data=ring,gaussian_1d"], False),
        ({"eval": "none"}, [], False),  # set per trial: not in the multirun's config
    ],
)
def test_the_metric_is_not_checked_where_the_trials_set_what_decides_it(
    make_config, params, arguments, checked
):
    """A search over the data or eval group has no single config to check: refusing the config
    Hydra composed without the trials' values would refuse a search that works."""
    from gan_lab.optuna_study import ResumableOptunaSweeperImpl

    sweeper = ResumableOptunaSweeperImpl(
        None, "minimize", None, "s", 4, 1, 0.0, None, None, OmegaConf.create(params)
    )
    sweeper.config = make_config("experiment=ring_mlp", "optimized_metric=toy/wasserstein")
    if checked:
        with pytest.raises(ConfigError, match="optimized_metric=toy/wasserstein"):
            sweeper._check_metric(arguments)
    else:
        sweeper._check_metric(arguments)


def test_the_sweeper_node_composes_alone_and_instantiates(tmp_path):
    """``hydra/sweeper=optuna_study`` without the preset: the stock node's settings, this
    sweeper's class, the study in the sweep dir."""
    from hydra import compose, initialize_config_dir

    from gan_lab.config import CONF_DIR
    from gan_lab.optuna_study import ResumableOptunaSweeperImpl

    overrides = ["hydra/sweeper=optuna_study", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        sweeper = instantiate(cfg.hydra.sweeper)
    # Imported after: Hydra's plugin scan (at compose) loads the module anew, so an earlier
    # import could hold a twin of the class.
    from hydra_plugins.gan_lab_sweepers.optuna_study_sweeper import OptunaStudySweeper

    assert cfg.hydra.sweeper.storage == f"sqlite:///{tmp_path}/optuna.db"
    assert (cfg.hydra.sweeper.study_name, cfg.hydra.sweeper.n_trials) == ("gan_lab", 20)
    assert isinstance(sweeper, OptunaStudySweeper)
    assert isinstance(sweeper.sweeper, ResumableOptunaSweeperImpl)


class _Launcher:
    """Stands in for Hydra's launcher: job N returns ``values[N]``."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        return [
            JobReturn(status=JobStatus.COMPLETED, _return_value=self.values[initial_job_idx + i])
            for i in range(len(job_overrides))
        ]


@pytest.mark.parametrize("values", [[math.nan, 0.5], [math.nan, math.nan]], ids=["one", "all"])
def test_a_diverged_trial_is_a_failed_trial_and_the_search_goes_on(tmp_path, capsys, values):
    """gan_lab.train returns NaN for a diverged run. Before, the stock loop told Optuna FAIL
    with the NaN attached, which raised (``Values were told. Values cannot be specified when
    state is TrialState.PRUNED or TrialState.FAIL.``) out of the sweep at the first one."""
    import optuna
    from hydra import compose, initialize_config_dir

    from gan_lab.config import CONF_DIR
    from gan_lab.optuna_study import ResumableOptunaSweeperImpl

    storage = f"sqlite:///{tmp_path}/study.db"
    sweeper = ResumableOptunaSweeperImpl(
        optuna.samplers.RandomSampler(seed=0),
        "minimize",
        storage,
        "s",
        len(values),
        1,
        0.0,
        None,
        None,
        OmegaConf.create({"optimizer.g.lr": "interval(1e-4, 1e-3)"}),
    )
    overrides = ["experiment=ring_mlp", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweeper.config = compose("train", overrides=overrides, return_hydra_config=True)
    sweeper.launcher = _Launcher(values)
    sweeper.hydra_context = object()  # the stock loop only checks that there is one
    if not all(map(math.isnan, values)):
        sweeper.sweep([])
        results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
        assert results["best_value"] == 0.5
    else:
        with pytest.raises(SystemExit):  # one line on stderr, as from the CLI
            sweeper.sweep([])
        assert "no trial completed (each failed or diverged)" in capsys.readouterr().err
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == ["FAIL" if math.isnan(v) else "COMPLETE" for v in values]

"""Bad configs fail at start-up, before any training, with a message naming key and rule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException

from gan_lab.arguments import Count, Interval
from gan_lab.build import build_datamodule, build_module
from gan_lab.data.images import ImageDataModule
from gan_lab.data.toy import Ring
from gan_lab.gan_module import GANModule
from gan_lab.metrics.classifier import classifier_weights_for
from gan_lab.train import fit
from gan_lab.validation import ConfigError, validate

TOY = ["experiment=ring_mlp", "model.g.hidden=[8]", "model.d.hidden=[8]", "data.batch_size=8"]
DIGITS_DCGAN = ["experiment=digits_dcgan", "model.g.base_channels=4", "model.d.base_channels=4"]

# (overrides, key expected in the message, rule expected in the message)
BAD = [
    ([*TOY, "optimizer.g.lr=0"], "optimizer.g.lr=0", "must be > 0"),
    ([*TOY, "optimizer.d.lr=-0.001"], "optimizer.d.lr=-0.001", "must be > 0"),
    ([*TOY, "train.k_d_steps=0"], "train.k_d_steps=0", "must be an integer >= 1"),
    ([*TOY, "train.iterations=0"], "train.iterations=0", "must be an integer >= 1"),
    ([*TOY, "train.log_every=0"], "train.log_every=0", "must be an integer >= 1"),
    ([*TOY, "train.checkpoint_every=-5"], "train.checkpoint_every=-5", "must be an integer >= 1"),
    ([*TOY, "train.nan_check_every=0"], "train.nan_check_every=0", "must be an integer >= 1"),
    ([*TOY, "prior.dim=0"], "prior.dim=0", "must be an integer >= 1"),
    (
        [*TOY, "loss=wasserstein", "loss.clip=null"],
        "loss.clip=None",
        "set loss.clip > 0, regularizer=gradient_penalty or model.d.spectral_norm=true",
    ),
    (
        # R1 penalises D's gradient on real data only: the critic stays unbounded elsewhere.
        [*TOY, "loss=wasserstein", "loss.clip=null", "regularizer=r1"],
        "loss.clip=None",
        "R1Penalty does not make the critic Lipschitz (it acts on real data only)",
    ),
    ([*TOY, "loss=wasserstein", "loss.clip=0"], "loss.clip=0", "must be null or a number > 0"),
    (
        # SN rescales whatever clipping leaves: clipping constrains nothing and shrinks the
        # stored weights, multiplying their effective learning rate (fuzz draw 145 went NaN).
        [*TOY, "loss=wasserstein", "model.d.spectral_norm=true"],
        "loss.clip=0.01",
        "set loss.clip=null with model.d.spectral_norm=true",
    ),
    ([*TOY, "train.on_nan=ignore"], "train.on_nan=ignore", "must be one of stop, skip"),
    ([*TOY, "train.ema_decay=1.5"], "train.ema_decay=1.5", "must be null or a number in (0, 1)"),
    ([*TOY, "model.d.pack=3"], "model.d.pack=3", "divide data.batch_size=8"),
    ([*TOY, "data.batch_size=0"], "data.batch_size=0", "must be an integer >= 1"),
    # The data group is untyped: a word or a fraction is refused by name, not by a TypeError.
    ([*TOY, "data.batch_size=abc"], "data.batch_size=abc", "must be an integer >= 1"),
    ([*TOY, "data.batch_size=7.5"], "data.batch_size=7.5", "must be an integer >= 1"),
    ([*TOY, "model.d.pack=abc"], "model.d.pack=abc", "must be an integer >= 1"),
    ([*TOY, "eval.every_n_iterations=-1"], "eval.every_n_iterations=-1", "integer >= 0"),
    ([*TOY, "eval.every_n_iterations=often"], "eval.every_n_iterations=often", "integer >= 0"),
    ([*TOY, "eval.evaluator.num_fake=0"], "eval.evaluator.num_fake=0", "integer >= 1"),
    (
        [*TOY, "+eval.evaluator.num_rael=500"],
        "eval.evaluator.num_rael=500",
        "Evaluator takes no argument 'num_rael'",
    ),
    (
        [*TOY, "+eval.evaluator.extractor.weight=w.pt"],
        "eval.evaluator.extractor.weight=w.pt",
        "ClassifierFeatures.for_data takes no argument 'weight'; it takes datamodule, weights",
    ),
    (
        # A typo'd weights file would otherwise surface at the first evaluation.
        [*DIGITS_DCGAN, "eval.evaluator.extractor.weights=no/such/classifier.pt"],
        "eval.evaluator.extractor.weights=no/such/classifier.pt",
        "file not found",
    ),
    (
        # No classifier of CIFAR-10's: FID/KID would be skipped, so no val/primary and no
        # best.ckpt. Refused from what the data declares, before its files are even read.
        ["data=cifar10", "data.batch_size=8", "model.g.base_channels=4", "model.d.base_channels=4"],
        "eval.evaluator.extractor=gan_lab.metrics.classifier.ClassifierFeatures.for_data",
        "TorchvisionImages declares no classifier (its class attribute `classifier` is None), so "
        "there are no classifier features for FID/KID and no val/primary: use eval=inception (or "
        "eval=none)",
    ),
    (
        [*DIGITS_DCGAN, "data.batch_size=1000", "train.k_d_steps=2"],
        "data.batch_size=1000",
        "train.k_d_steps * data.batch_size = 2 * 1000 = 2000 is more than the 1438 training "
        "samples",
    ),
    (
        # After num_fake is capped: precision's k-NN balls need k other generated samples.
        [*DIGITS_DCGAN, "eval.evaluator.num_fake=3"],
        "eval.evaluator.precision_recall_k=3",
        "must be at most 2 with num_real and num_fake of this run (1438 real, 3 generated",
    ),
    (
        [*DIGITS_DCGAN, "eval.evaluator.is_splits=11", "eval.evaluator.num_fake=10"],
        "eval.evaluator.is_splits=11",
        "must be at most 10 with num_fake",
    ),
    (
        [*DIGITS_DCGAN, "data.resolution=24"],
        "data.resolution=24",
        "DCGANGenerator supports resolutions 8, 16, 28, 32, 64",
    ),
    (
        # A key no net takes (the nets size themselves from the data) is refused by name.
        [*DIGITS_DCGAN, "+model.g.channels=3"],
        "model.g.channels=3",
        "DCGANGenerator takes no argument 'channels'; it takes latent_dim, sample_shape, "
        "base_channels",
    ),
    (
        ["experiment=ring_mlp", "model=dcgan", "data.batch_size=8"],
        "model.g._target_=gan_lab.nets.dcgan.DCGANGenerator",
        "needs image data (C, H, W), got shape (2,)",
    ),
    ([*TOY, "+loss.margin=1"], "loss.margin=1", "NonSaturatingLoss takes no argument 'margin'"),
    (
        [*TOY, "loss._target_=gan_lab.losses.NoSuchLoss"],
        "loss._target_=gan_lab.losses.NoSuchLoss",
        "cannot be imported",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "rule"), BAD, ids=[b[1] for b in BAD])
def test_bad_config_fails_before_training(make_config, monkeypatch, overrides, key, rule):
    def no_training(*args, **kwargs):
        raise AssertionError("training started although the config is invalid")

    monkeypatch.setattr(GANModule, "training_step", no_training)
    cfg = make_config(*overrides, "logger=csv", "callbacks=default")
    with pytest.raises(ConfigError) as error:
        fit(cfg)
    message = str(error.value)
    assert message.startswith(key + ":"), message
    assert rule in message
    assert "\n" not in message
    written = {p.name for p in Path(cfg.paths.output_dir).rglob("*")}
    assert not written & {"metrics.csv", "last.ckpt"}, written


def test_good_configs_pass(make_config):
    for overrides in (
        TOY,
        DIGITS_DCGAN,
        [*TOY, "loss=wasserstein", "loss.clip=null", "regularizer=gradient_penalty"],
        [*TOY, "loss=wasserstein", "loss.clip=null", "model.d.spectral_norm=true"],
        [*TOY, "loss=wasserstein", "regularizer=r1"],  # clipping keeps the critic Lipschitz
    ):
        validate(make_config(*overrides))


def test_hydra_rejects_unknown_option_listing_choices(make_config):
    with pytest.raises(ConfigCompositionException) as error:
        make_config("loss=hingee")
    message = str(error.value)
    assert "hingee" in message and "Available options" in message and "non_saturating" in message


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.iteratons=5", "iteratons"), ("train.iterations=many", "train.iterations")],
)
def test_hydra_rejects_unknown_key_and_wrong_type(make_config, override, needle):
    with pytest.raises(ConfigCompositionException) as error:
        make_config(override)
    assert needle in str(error.value) or needle in str(error.value.__cause__)


class _Undeclared(Ring):
    """A DataModule that declares no metric suite."""

    metrics = ""


def test_eval_needs_a_declared_metric_suite(make_config):
    with pytest.raises(ConfigError) as error:
        validate(make_config(*TOY, "eval=classifier"), _Undeclared(batch_size=8))
    assert str(error.value).startswith("eval.evaluator=gan_lab.metrics.evaluation.Evaluator:")
    assert "_Undeclared declares no metrics" in str(error.value)
    validate(make_config(*TOY, "eval=none"), _Undeclared(batch_size=8))
    validate(make_config(*TOY, "eval=classifier"), Ring(batch_size=8))


def test_num_real_is_clamped_to_the_real_split_with_one_note(make_config, caplog):
    """digits has 1438 training images and the default eval group asks for 10000: the run
    evaluates on all 1438 and says so once; its stored config records 1438."""
    cfg = make_config(*DIGITS_DCGAN, "callbacks=default")
    assert cfg.eval.evaluator.num_real == 10000
    datamodule = build_datamodule(cfg)
    with caplog.at_level(logging.INFO, logger="gan_lab.validation"):
        validate(cfg, datamodule)
        validate(cfg, datamodule)  # as gan_lab.evaluate does again on the stored config
    notes = [r.getMessage() for r in caplog.records if "num_real" in r.getMessage()]
    assert notes == [
        "eval.evaluator.num_real=10000: the 'train' split of Digits has 1438 samples, so "
        "num_real is clamped to 1438 (FID reads higher on fewer real samples: compare runs at "
        "equal num_real)"
    ]
    assert cfg.eval.evaluator.num_real == 1438
    module = build_module(cfg, datamodule.sample_shape)
    assert module.config["eval"]["evaluator"]["num_real"] == 1438
    assert module.config["callbacks"]["evaluation"]["evaluator"]["num_real"] == 1438


def test_eval_cadence_past_the_budget_notes_the_final_evaluation(make_config, caplog):
    cfg = make_config(*TOY, "train.iterations=4", "eval.every_n_iterations=10")
    with caplog.at_level(logging.INFO, logger="gan_lab.validation"):
        validate(cfg, Ring(batch_size=8))
    assert [r.getMessage() for r in caplog.records] == [
        "eval.every_n_iterations=10 is more than train.iterations=4: only the final evaluation "
        "(iteration 4) runs"
    ]


class _NoClassifierImages(ImageDataModule):
    """In-memory image data that declares no classifier (as CIFAR-10, MNIST, folders)."""

    def __init__(self) -> None:
        super().__init__(batch_size=8)
        self.sample_shape = (1, 8, 8)

    def _load(self, split: str) -> torch.Tensor:
        return torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)


def test_classifier_features_need_data_that_declares_a_classifier(make_config):
    dcgan = [*DIGITS_DCGAN, "data.batch_size=8"]
    with pytest.raises(ConfigError) as error:
        validate(make_config(*dcgan), _NoClassifierImages())
    assert error.value.key == "eval.evaluator.extractor"
    assert "_NoClassifierImages declares no classifier" in str(error.value)
    # Features that do not come from the data's classifier, or no metrics at all, are fine.
    validate(make_config(*dcgan, "eval=inception"), _NoClassifierImages())
    validate(make_config(*dcgan, "eval=none"), _NoClassifierImages())
    weights = f"eval.evaluator.extractor.weights={classifier_weights_for('digits')}"
    validate(make_config(*dcgan, weights), _NoClassifierImages())


def _assert_refused(make_config, base: list[str], rules: dict[str, str]) -> None:
    """Each override added to ``base`` is refused with ``<key>=<value>: <rule>...``."""
    for bad, rule in rules.items():
        with pytest.raises(ConfigError) as error:
            validate(make_config(*base, bad))
        message = f"{bad.removeprefix('+')}: {rule}"
        assert str(error.value).startswith(message), str(error.value)


class PlateauStop(L.Callback):
    """A callback a user adds: its ranges are declared in its signature, nowhere else."""

    def __init__(
        self, patience: Count = 5, min_delta: Annotated[float, Interval(gt=0, lt=1)] = 0.1
    ):
        self.patience, self.min_delta = patience, min_delta


def test_a_new_option_is_validated_by_its_declarations(make_config, tmp_path):
    """A config group gan_lab has never seen (in a folder on Hydra's search path) with an option
    whose class declares its ranges: a bad value is refused by key, with no change to
    gan_lab.validation."""
    group = tmp_path / "extra_conf" / "stopping"
    group.mkdir(parents=True)
    (group / "plateau.yaml").write_text(
        "_target_: tests.test_validation.PlateauStop\npatience: 5\nmin_delta: 0.1\n"
    )
    option = [f"hydra.searchpath=[file://{group.parent}]", "+stopping@callbacks.stop=plateau"]
    validate(make_config(*TOY, *option))
    _assert_refused(
        make_config,
        [*TOY, *option],
        {
            "callbacks.stop.min_delta=1.5": "must be a number in (0, 1)",
            "callbacks.stop.patience=0": "must be an integer >= 1",
            "callbacks.stop.patience=soon": "must be an integer >= 1",
            "+callbacks.stop.paitence=3": "PlateauStop takes no argument",
        },
    )


class WideRing(Ring):
    """A user's data class: a gan_lab base, its own argument, the rest through ``**kwargs``."""

    def __init__(self, width: Annotated[float, Interval(gt=0)] = 2.0, **kwargs) -> None:
        super().__init__(radius=width, **kwargs)


def test_a_subclass_of_a_gan_lab_part_keeps_its_bases_declarations(make_config):
    """``**kwargs`` forwarded to a gan_lab base: the base's ranges and names still apply."""
    data = ["data._target_=tests.test_validation.WideRing", "+data.width=3.0"]
    validate(make_config(*TOY, *data))
    _assert_refused(
        make_config,
        [*TOY, *data],
        {
            "data.width=0": "must be a number > 0",
            "data.batch_size=0": "must be an integer >= 1",
            "data.std=-1": "must be a number > 0",
            "+data.stdev=1": "WideRing takes no argument 'stdev'",
        },
    )

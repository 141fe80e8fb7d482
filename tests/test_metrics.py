"""Toy mode metrics, 1-D fit metrics, FID/KID plumbing for classifier and Inception features."""

from __future__ import annotations

import math
import time

import pytest
import torch

from gan_lab.data.base import METRIC_SUITES
from gan_lab.data.images import Digits
from gan_lab.data.toy import Grid, Ring
from gan_lab.metrics.classifier import ClassifierFeatures, SmallCNN, classifier_weights_for
from gan_lab.metrics.evaluation import Evaluator
from gan_lab.metrics.fid import FeatureDistance
from gan_lab.metrics.inception import INCEPTION_WEIGHTS_FILE, InceptionFeatures
from gan_lab.metrics.toy import gaussian_1d_metrics, mode_metrics


@pytest.mark.parametrize("data", [Ring(), Grid()], ids=["ring", "grid"])
def test_exact_mixture_covers_every_mode(data):
    samples = data.real_samples(2500)
    metrics = mode_metrics(samples, data.modes, data.std)
    assert metrics["toy/modes"] == len(data.modes)
    # For an isotropic 2-D Gaussian P(|x - mu| <= 3 sigma) = 1 - exp(-9/2) = 98.89 %: the most a
    # perfect generator can score under the PacGAN protocol (so ">= 99 %" cannot be demanded).
    assert metrics["toy/high_quality"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.5)
    assert metrics["toy/reverse_kl"] < 0.02


def test_one_mode_generator_is_caught():
    ring = Ring()
    samples = ring.modes[0] + ring.std * torch.randn(
        2500, 2, generator=torch.Generator().manual_seed(0)
    )
    metrics = mode_metrics(samples, ring.modes, ring.std)
    assert metrics["toy/modes"] == 1
    assert metrics["toy/reverse_kl"] == pytest.approx(math.log(8), abs=1e-9)  # KL(delta || uniform)


def test_off_mode_samples_are_low_quality():
    ring = Ring()
    metrics = mode_metrics(torch.zeros(100, 2), ring.modes, ring.std)  # the ring's centre
    assert metrics["toy/high_quality"] == 0 and metrics["toy/modes"] == 0
    assert metrics["toy/reverse_kl"] == math.inf


def test_gaussian_1d_metrics():
    exact = 4.0 + 1.25 * torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    metrics = gaussian_1d_metrics(exact, 4.0, 1.25)
    assert metrics["toy/mean_error"] < 0.02 and metrics["toy/std_error"] < 0.02
    assert metrics["toy/wasserstein"] < 0.02
    shifted = gaussian_1d_metrics(exact + 1.0, 4.0, 1.25)
    assert shifted["toy/wasserstein"] == pytest.approx(1.0, abs=0.02)  # W1 of a shift is the shift


def test_classifier_fid_separates_real_from_noise():
    digits = Digits()
    distance = FeatureDistance(
        ClassifierFeatures(classifier_weights_for("digits")), kid_subset_size=100
    )
    distance.add_real(digits.real_samples(1000, "train"))
    real = distance.compute_fake(digits.real_samples(300, "test"))
    noise = distance.compute_fake(torch.rand(300, 1, 8, 8) * 2 - 1)
    assert real["fid"] < noise["fid"] / 10
    assert real["kid"] < noise["kid"]


def test_inception_plumbing_with_random_weights(tmp_path, monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    # Build the architecture without weights, save a random state dict in the standard format.
    monkeypatch.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(
        fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None
    )
    random_net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    monkeypatch.undo()
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(random_net.state_dict(), path)

    extractor = InceptionFeatures(weights_path=str(path))
    assert torch.equal(
        extractor.inception.state_dict()["Conv2d_1a_3x3.conv.weight"],
        random_net.state_dict()["Conv2d_1a_3x3.conv.weight"],
    )
    distance = FeatureDistance(extractor, kid_subset_size=4)
    distance.add_real(torch.rand(6, 1, 28, 28) * 2 - 1)
    scores = distance.compute_fake(torch.rand(6, 1, 28, 28) * 2 - 1)
    assert math.isfinite(scores["fid"]) and scores["fid"] >= 0


def test_inception_without_weights_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE) as error:
        InceptionFeatures()
    assert time.monotonic() - start < 5  # fails at once; it never tries the network
    assert "eval.inception_weights" in str(error.value) or "weights_path" in str(error.value)


def test_each_dataset_finds_its_committed_classifier():
    from gan_lab.data.images import FashionMNIST

    for datamodule in (FashionMNIST(), Digits()):
        assert isinstance(ClassifierFeatures.for_data(datamodule), ClassifierFeatures)


def test_for_data_picks_weights_by_the_declared_classifier():
    from gan_lab.data import FashionMNIST, Gaussian1D, ImageFolderImages, TorchvisionImages

    class RenamedSet(FashionMNIST):  # a class name the old name-based lookup could not map
        pass

    class NoClassifier(Digits):
        classifier = None

    class UnknownClassifier(Digits):
        classifier = "no_such_set"

    features = ClassifierFeatures.for_data(RenamedSet())
    expected = SmallCNN.load(classifier_weights_for("fashion_mnist")).state_dict()
    got = features.classifier.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    for datamodule in (
        NoClassifier(),
        UnknownClassifier(),  # declared, but no committed weights file
        TorchvisionImages("MNIST"),
        ImageFolderImages("unused"),
        Ring(),
        Gaussian1D(),
    ):
        assert ClassifierFeatures.for_data(datamodule) is None, type(datamodule).__name__


def test_evaluator_computes_the_suite_the_data_declares():
    """Dispatch on the declared ``metrics``: a Ring subclass that declares none is refused by
    name, whatever its class looks like."""
    evaluator = Evaluator(None, "classifier", 10, 10, 10, 10, 3, 5, 10, None)

    class Undeclared(Ring):
        metrics = ""

    with pytest.raises(ValueError) as error:
        evaluator.metrics(None, Undeclared(), 0)
    # The suites the evaluator offers are exactly those a DataModule may declare.
    assert f"Undeclared.metrics = '': declare one of {', '.join(METRIC_SUITES)} (" in str(
        error.value
    )

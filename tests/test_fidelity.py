"""Precision/recall, density/coverage and Inception Score against torch-fidelity, numpy, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import (
    calculate_precision_recall_full,
    calculate_precision_recall_part,
)

from gan_lab.metrics.extractor import FeatureExtractor
from gan_lab.metrics.fid import FeatureDistance
from gan_lab.metrics.fidelity import fidelity_diversity, inception_score, knn_radii

METRICS = ("precision", "recall", "density", "coverage")


def _clouds(n_real: int, n_fake: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real N(0, I) and a shifted, wider fake cloud: every metric lands strictly inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n_real, dim, generator=g)
    fake = 1.2 * torch.randn(n_fake, dim, generator=g) + 0.3
    return real, fake


def _numpy_radii(x: np.ndarray, k: int) -> np.ndarray:
    # prdc's compute_nearest_neighbour_distances: the (k+1)-th smallest of each row, self included.
    return np.partition(cdist(x, x), k, axis=1)[:, k]


def _numpy_prdc(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> dict[str, float]:
    """prdc's formulas (Naeem et al. 2020), with torch-fidelity's <= for precision/recall."""
    dist = cdist(real, fake)  # (real, fake)
    real_pr, fake_pr = _numpy_radii(real, pr_k), _numpy_radii(fake, pr_k)
    real_dc = _numpy_radii(real, dc_k)
    return {
        "precision": float((dist <= real_pr[:, None]).any(axis=0).mean()),
        "recall": float((dist <= fake_pr[None, :]).any(axis=1).mean()),
        "density": float((1.0 / dc_k) * (dist < real_dc[:, None]).sum(axis=0).mean()),
        "coverage": float((dist.min(axis=1) < real_dc).mean()),
    }


def test_precision_recall_match_torch_fidelity():
    real, fake = _clouds(300, 250, 16)
    ours = fidelity_diversity(real, fake, pr_k=3, dc_k=5, chunk_size=64)
    assert 0.0 < ours["precision"] < 1.0 and 0.0 < ours["recall"] < 1.0
    # torch-fidelity's convention: features_1 is generated, features_2 real. float64 so that its
    # float32 cdist rounding cannot flip a near-tie that ours (float64) decides the other way.
    for reference in (calculate_precision_recall_part, calculate_precision_recall_full):
        precision, recall = reference(fake.double(), real.double(), neighborhood=3, batch_size=100)
        assert ours["precision"] == pytest.approx(precision, abs=1e-4)
        assert ours["recall"] == pytest.approx(recall, abs=1e-4)


@pytest.mark.parametrize(("pr_k", "dc_k"), [(3, 5), (1, 2)])
def test_all_four_match_numpy_prdc(pr_k, dc_k):
    real, fake = _clouds(300, 250, 16, seed=1)
    ours = fidelity_diversity(real, fake, pr_k=pr_k, dc_k=dc_k, chunk_size=128)
    reference = _numpy_prdc(real.double().numpy(), fake.double().numpy(), pr_k, dc_k)
    for name in METRICS:
        assert 0.0 < reference[name] < 1.0, name  # non-degenerate, or the comparison proves little
        assert ours[name] == pytest.approx(reference[name], abs=1e-4), name


def test_hand_checked_clouds_pin_the_tie_rules():
    # Real: a 3 x 2 grid with spacing 2. Every real point has >= 2 neighbours at distance 2, so
    # its 1-NN (pr_k=1) and 2-NN (dc_k=2) radii are both exactly 2.
    real = torch.tensor([[0, 0], [2, 0], [4, 0], [0, 2], [2, 2], [4, 2]], dtype=torch.float64)
    # Fake: f0 (1,0) and f3 (0,1) sit between grid points; f1 (4,4) is exactly 2 from (4,2), on
    # that ball's boundary; f2 (4,8) is 6 from everything real. Fake 1-NN radii: f0 and f3 are
    # sqrt(2) apart; f1 and f2 are 4 apart (f0, f3 are 5 from f1), so radii = [sqrt2, 4, 4, sqrt2].
    fake = torch.tensor([[1, 0], [4, 4], [4, 8], [0, 1]], dtype=torch.float64)
    # precision (<=, radius 2): f0 (1 from (0,0)), f1 (2 from (4,2): tie counts), f3 -> 3/4.
    # recall (<=): f0's sqrt2-ball holds (0,0), (2,0); f3's holds (0,0), (0,2); f1's 4-ball holds
    #   (4,2) at 2, (2,2) at sqrt8 and (4,0) at exactly 4 (tie counts) -> all 6 reals: 6/6.
    # density (<, radius 2): f0 is inside the balls of (0,0), (2,0); f3 of (0,0), (0,2); f1 only
    #   on (4,2)'s boundary (not counted); f2 none -> 4 / (k=2 * M=4) = 1/2.
    # coverage (<): nearest fake of (0,0) 1, (2,0) 1, (0,2) 1 are covered; (4,0) 3, (2,2) sqrt5
    #   are not, (4,2) has f1 at exactly 2 (not counted) -> 3/6.
    ours = fidelity_diversity(real, fake, pr_k=1, dc_k=2)
    assert ours["precision"] == pytest.approx(3 / 4, abs=1e-12)
    assert ours["recall"] == pytest.approx(1.0, abs=1e-12)
    assert ours["density"] == pytest.approx(1 / 2, abs=1e-12)
    assert ours["coverage"] == pytest.approx(1 / 2, abs=1e-12)

    radii = knn_radii(fake, (1,))[1]
    assert radii.tolist() == pytest.approx([math.sqrt(2), 4, 4, math.sqrt(2)], abs=1e-12)
    # torch-fidelity decides the two <= ties the same way (cdist is exact on so few points).
    assert calculate_precision_recall_part(fake, real, neighborhood=1) == pytest.approx(
        (3 / 4, 1.0), abs=1e-12
    )


def test_knn_radii_chunking_and_numpy():
    x = torch.randn(37, 5, generator=torch.Generator().manual_seed(2)) + 10  # offset: cancellation
    whole = knn_radii(x, (1, 3, 5), chunk_size=100)
    chunked = knn_radii(x, (1, 3, 5), chunk_size=4)
    x64 = x.double().numpy()
    for k in (1, 3, 5):
        # A 1-row GEMM may take another BLAS kernel than a 4-row one: equal to rounding, no more.
        torch.testing.assert_close(chunked[k], whole[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(whole[k].numpy(), _numpy_radii(x64, k), rtol=0, atol=1e-9)
    assert (whole[1] < whole[3]).all() and (whole[3] < whole[5]).all()


def test_chunked_2000_matches_unchunked():
    real, fake = _clouds(2000, 2000, 8, seed=3)
    whole_radii = knn_radii(real, (3, 5), chunk_size=4096)
    chunked_radii = knn_radii(real, (3, 5), chunk_size=300)
    for k in (3, 5):
        torch.testing.assert_close(chunked_radii[k], whole_radii[k], rtol=0, atol=1e-12)
    whole = fidelity_diversity(real, fake, real_radii=whole_radii, chunk_size=4096)
    # 300 does not divide 2000: the short last chunk is exercised too.
    chunked = fidelity_diversity(real, fake, real_radii=chunked_radii, chunk_size=300)
    inner = fidelity_diversity(real, fake, chunk_size=300)  # real radii computed inside
    assert chunked == whole and inner == whole
    assert all(0.0 < whole[name] < 1.0 for name in METRICS)


def test_bad_arguments_are_refused():
    real, fake = _clouds(10, 10, 3)
    with pytest.raises(ValueError, match="needs at least"):
        knn_radii(real, (10,))
    with pytest.raises(ValueError, match="lacks"):
        fidelity_diversity(real, fake, pr_k=3, dc_k=5, real_radii=knn_radii(real, (3,)))
    with pytest.raises(ValueError, match="features per row"):
        fidelity_diversity(real, fake[:, :2])


def test_inception_score_matches_torch_fidelity():
    # 1003 rows: the splits are unequal, so the split bounds must match torch-fidelity's too.
    logits = 3 * torch.randn(1003, 10, generator=torch.Generator().manual_seed(4))
    mean, std = inception_score(logits, splits=10)
    reference = isc_features_to_metric(logits, splits=10, shuffle=False)
    assert mean == pytest.approx(reference["inception_score_mean"], abs=1e-4)
    assert std == pytest.approx(reference["inception_score_std"], abs=1e-4)
    assert std > 1e-3  # the splits differ, so the std comparison is not 0 == 0


def test_inception_score_hand_checked():
    # Identical rows: p(y|x) = p(y), every KL is 0, IS = exp(0) = 1 in every split.
    same = torch.tensor([[0.3, -1.0, 2.0, 0.5]]).repeat(40, 1)
    assert inception_score(same, splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Confident one-hot over 5 classes, each split holding every class equally: KL(onehot ||
    # uniform) = log 5, so IS = 5 exactly. Logits of 1000 underflow the other probabilities to 0.
    classes = torch.arange(50) % 5
    confident = 1000.0 * torch.nn.functional.one_hot(classes, 5).double()
    assert inception_score(confident, splits=2) == pytest.approx((5.0, 0.0), abs=1e-9)
    # A third class that no row predicts: its p(y) underflows to exactly 0 in every split, where a
    # log(mean(p)) would give 0 * inf = NaN. KL(onehot || (1/2, 1/2, 0)) = log 2, so IS = 2.
    unused = 1000.0 * torch.nn.functional.one_hot(torch.arange(20) % 2, 3).double()
    assert inception_score(unused, splits=2) == pytest.approx((2.0, 0.0), abs=1e-9)


class _Identity(FeatureExtractor):
    """The features are the input: FeatureDistance on given feature arrays."""

    num_features = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_feature_distance_matches_torch_fidelity_on_the_same_features():
    """gan_lab's FID (torchmetrics) against torch-fidelity's, and its k-NN metrics against
    fidelity_diversity, on one pair of feature arrays."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    real, fake = _clouds(600, 500, 16)
    distance = FeatureDistance(_Identity(), kid_subset_size=100)
    distance.set_real_features(real)
    scores = distance.compute_fake(fake)
    stats = [fid_features_to_statistics(x.double()) for x in (real, fake)]
    expected = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert expected > 1  # the clouds differ: not a comparison of zeros
    assert scores["fid"] == pytest.approx(expected, abs=1e-4)
    reference = fidelity_diversity(real, fake, 3, 5)
    assert {key: scores[key] for key in METRICS} == pytest.approx(reference, abs=1e-12)
    assert "is" not in scores  # no logits, no Inception Score

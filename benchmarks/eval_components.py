"""Where a feature evaluation's time goes: 10,000 Fashion-MNIST train images as the reference,
10,000 test images standing in for generated ones, classifier features, this machine's device.

    python -m benchmarks.eval_components [--n 10000] [--repeats 3]

Prints the median time of each part; docs/benchmarks.md has the results.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from gan_lab.data.images import FashionMNIST
from gan_lab.metrics.classifier import ClassifierFeatures, classifier_weights_for
from gan_lab.metrics.fid import FeatureDistance
from gan_lab.metrics.fidelity import fidelity_diversity, inception_score, knn_radii


def timed(label: str, run: Callable[[], Any], repeats: int) -> Any:
    """``run()``'s result; prints the median of ``repeats`` timings."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    print(f"{label}: median {sorted(times)[len(times) // 2]:.2f} s of {repeats}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = FashionMNIST()
    real, fake = data.real_samples(args.n), data.real_samples(args.n, "test")
    distance = FeatureDistance(ClassifierFeatures(classifier_weights_for("fashion_mnist")))
    repeats = args.repeats
    features, _ = timed("extract the real features", lambda: distance.extract(real), repeats)
    radii = timed("real k-NN radii (k = 3, 5)", lambda: knn_radii(features, (3, 5)), repeats)
    distance.set_real_features(features)
    fake_features, logits = timed(
        "extract the generated features and logits", lambda: distance.extract(fake), repeats
    )
    timed(
        "precision, recall, density, coverage",
        lambda: fidelity_diversity(features, fake_features, 3, 5, real_radii=radii),
        repeats,
    )
    timed("Inception Score (10 splits)", lambda: inception_score(logits, 10), repeats)
    timed(
        "all of one evaluation's metrics",
        lambda: distance.compute_fake(fake),
        repeats,
    )


if __name__ == "__main__":
    main()

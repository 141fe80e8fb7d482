"""Sanity of classifier FID: real-vs-real must be small, real-vs-noise large.

python -m gan_lab.metrics.sanity --data fashion_mnist [--n 10000]
"""

from __future__ import annotations

import argparse
import json

import torch

from gan_lab.data.images import Digits, FashionMNIST
from gan_lab.metrics.classifier import ClassifierFeatures, classifier_weights_for
from gan_lab.metrics.fid import FeatureDistance

DATA = {"fashion_mnist": FashionMNIST, "digits": Digits}


def sanity(dataset: str, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    data = DATA[dataset](seed=seed)
    n_test = min(n, data.num_samples("test"))
    distance = FeatureDistance(ClassifierFeatures(classifier_weights_for(dataset)))
    distance.add_real(data.real_samples(n, "train"))
    real = distance.compute_fake(data.real_samples(n_test, "test"))
    generator = torch.Generator().manual_seed(seed)
    noise = distance.compute_fake(
        torch.rand(n_test, *data.sample_shape, generator=generator) * 2 - 1
    )
    return {
        "dataset": dataset,
        "n_train": n,
        "n_test": n_test,
        "fid_classifier_train_vs_test": round(real["fid"], 3),
        "kid_classifier_train_vs_test": round(real["kid"], 5),
        "fid_classifier_train_vs_uniform_noise": round(noise["fid"], 3),
        "kid_classifier_train_vs_uniform_noise": round(noise["kid"], 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", choices=sorted(DATA), default="fashion_mnist")
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(sanity(args.data, args.n), indent=2))


if __name__ == "__main__":
    main()

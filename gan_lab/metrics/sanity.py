"""Sanity of the classifier metrics: real-vs-real FID/KID must be small and precision, recall,
density and coverage high; real-vs-noise the opposite.

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


def sanity(dataset: str, n: int = 10_000, seed: int = 0) -> dict[str, float | int | str]:
    data = DATA[dataset](seed=seed)
    n_test = min(n, data.num_samples("test"))
    distance = FeatureDistance(ClassifierFeatures(classifier_weights_for(dataset)))
    distance.add_real(data.real_samples(n, "train"))
    real = distance.compute_fake(data.real_samples(n_test, "test"))
    generator = torch.Generator().manual_seed(seed)
    noise = distance.compute_fake(
        torch.rand(n_test, *data.sample_shape, generator=generator) * 2 - 1
    )
    result: dict[str, float | int | str] = {"dataset": dataset, "n_train": n, "n_test": n_test}
    for pair, scores in (("train_vs_test", real), ("train_vs_uniform_noise", noise)):
        for metric, value in scores.items():
            result[f"{metric}_classifier_{pair}"] = round(value, 5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", choices=sorted(DATA), default="fashion_mnist")
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(sanity(args.data, args.n), indent=2))


if __name__ == "__main__":
    main()

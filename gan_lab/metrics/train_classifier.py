"""Train the FID feature classifier of a dataset and commit its weights.

python -m gan_lab.metrics.train_classifier --data fashion_mnist
python -m gan_lab.metrics.train_classifier data=digits   (Hydra-style spelling also works)
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from gan_lab.data.images import load_digits, load_fashion_mnist
from gan_lab.metrics.classifier import SmallCNN, classifier_weights_for

# (loader, value range of the raw images, epochs): digits are 0..16, Fashion-MNIST 0..255.
DATASETS = {
    "fashion_mnist": (lambda split: load_fashion_mnist(None, split), 255.0, 6),
    "digits": (load_digits, 16.0, 60),
}


def to_model_input(images, scale: float) -> torch.Tensor:
    x = torch.as_tensor(images).float()[:, None] / scale
    return x * 2 - 1  # the GAN's data space


def train(dataset: str, epochs: int | None = None, seed: int = 0) -> dict:
    """Train, evaluate on the test split, save weights + JSON; returns the JSON record."""
    torch.manual_seed(seed)
    load, scale, default_epochs = DATASETS[dataset]
    epochs = epochs or default_epochs
    (x_train, y_train), (x_test, y_test) = load("train"), load("test")
    x_train, x_test = to_model_input(x_train, scale), to_model_input(x_test, scale)
    y_train, y_test = torch.as_tensor(y_train), torch.as_tensor(y_test)
    model = SmallCNN(in_channels=1, resolution=x_train.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=epochs * ((len(x_train) + 127) // 128)
    )
    start = time.time()
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_train)).split(128):
            x = x_train[idx]
            if dataset == "fashion_mnist":  # horizontal flips: clothing is mirror-symmetric
                flip = torch.rand(len(x)) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.inference_mode():
        predictions = torch.cat([model(x).argmax(1) for x in x_test.split(1000)])
    accuracy = (predictions == y_test).float().mean().item()
    record = {
        "dataset": dataset,
        "test_accuracy": round(accuracy, 4),
        "test_size": len(y_test),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.time() - start, 1),
        "command": f"python -m gan_lab.metrics.train_classifier --data {dataset}",
    }
    model.save(classifier_weights_for(dataset), record)
    print(record)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", choices=sorted(DATASETS), required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    argv = [f"--{a}" if a.startswith("data=") else a for a in sys.argv[1:]]
    args = parser.parse_args(argv)
    train(args.data, args.epochs, args.seed)


if __name__ == "__main__":
    main()

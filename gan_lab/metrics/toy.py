"""Mode-collapse metrics for 2-D Gaussian mixtures (PacGAN / VEEGAN protocol) and 1-D fits."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# PacGAN's threshold: a sample within this many std of its nearest mode is high quality.
HIGH_QUALITY_STDS = 3


def mode_metrics(samples: Tensor, modes: Tensor, std: float) -> dict[str, float]:
    """Modes covered, % high-quality samples and reverse KL of the mode histogram vs uniform.

    Lin et al. 2018 (PacGAN), Table 1: a sample is high quality when it lies within 3 std of its
    nearest mode; a mode is covered when it has at least one high-quality sample; reverse KL =
    KL(histogram of high-quality samples over modes || uniform).
    """
    samples, modes = samples.double().cpu(), modes.double().cpu()
    distances, nearest = torch.cdist(samples, modes).min(dim=1)
    high_quality = distances <= HIGH_QUALITY_STDS * std
    counts = torch.bincount(nearest[high_quality], minlength=len(modes)).double()
    n_hq = counts.sum().item()
    if n_hq == 0:
        reverse_kl = math.inf
    else:
        p = counts[counts > 0] / n_hq
        reverse_kl = float((p * torch.log(p * len(modes))).sum())
    return {
        "toy/modes": float((counts > 0).sum()),
        "toy/high_quality": 100.0 * n_hq / len(samples),
        "toy/reverse_kl": reverse_kl,
    }


def gaussian_1d_metrics(samples: Tensor, mean: float, std: float) -> dict[str, float]:
    """Mean/std errors and the 1-D Wasserstein-1 distance to N(mean, std^2).

    W1 between 1-D distributions is the L1 distance of their quantile functions; the data's
    quantiles at the samples' plotting positions are exact for a Gaussian.
    """
    x = samples.double().flatten().sort().values.cpu()
    n = len(x)
    positions = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    data_quantiles = mean + std * math.sqrt(2) * torch.erfinv(2 * positions - 1)
    return {
        "toy/mean_error": abs(x.mean().item() - mean),
        "toy/std_error": abs(x.std().item() - std),
        "toy/wasserstein": (x - data_quantiles).abs().mean().item(),
    }

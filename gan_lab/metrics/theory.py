"""The paper's theory on 1-D data: D*, JSD and V(D*, G) = 2 JSD - log 4 (Goodfellow et al. 2014).

Densities live on a uniform grid; integrals are trapezoid sums. p_g comes from a Gaussian KDE of
generator samples unless an exact density is given (e.g. an affine G of a Gaussian prior).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

Density = Callable[[Tensor], Tensor]


def gaussian_density(mean: float, std: float) -> Density:
    """The N(mean, std^2) density as a function of x."""
    return lambda x: torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def kde_density(samples: Tensor, bandwidth: float | None = None) -> Density:
    """Gaussian KDE with Silverman's bandwidth, evaluated in chunks to bound memory."""
    samples = samples.double().flatten().cpu()
    if bandwidth is None:
        iqr = (samples.quantile(0.75) - samples.quantile(0.25)).item() / 1.34
        spread = min(samples.std().item(), iqr) if iqr > 0 else samples.std().item()
        bandwidth = 0.9 * spread * len(samples) ** -0.2
    norm = len(samples) * bandwidth * math.sqrt(2 * math.pi)

    def density(x: Tensor) -> Tensor:
        out = [
            torch.exp(-0.5 * ((chunk[:, None] - samples[None]) / bandwidth) ** 2).sum(1) / norm
            for chunk in x.double().split(512)
        ]
        return torch.cat(out)

    return density


@dataclass
class TheoryReport:
    """Grid values and scalars of the paper's quantities for one (p_data, p_g, D)."""

    x: Tensor
    p_data: Tensor
    p_g: Tensor
    d_star: Tensor
    d: Tensor | None
    jsd: float
    value_d_star: float
    value_d: float | None
    d_vs_dstar_max_err: float | None


def _integrate(y: Tensor, x: Tensor) -> float:
    return torch.trapezoid(y, x).item()


def theory_report(
    p_data: Density,
    p_g: Density,
    x: Tensor,
    discriminator_prob: Callable[[Tensor], Tensor] | None = None,
    mass: float = 0.98,
) -> TheoryReport:
    """D*(x) = p_data / (p_data + p_g), JSD by quadrature, V(D*, G) and V(D, G) for a given D.

    ``d_vs_dstar_max_err`` is max |D - D*| over the central ``mass`` of (p_data + p_g) / 2,
    where both densities are large enough for D* to be well determined.
    """
    x = x.double()
    pd, pg = p_data(x).double(), p_g(x).double()
    tiny = torch.finfo(torch.float64).tiny
    d_star = pd / (pd + pg).clamp_min(tiny)
    mixture = 0.5 * (pd + pg)
    kl = lambda p: _integrate(p * torch.log(p.clamp_min(tiny) / mixture.clamp_min(tiny)), x)  # noqa: E731
    jsd = 0.5 * kl(pd) + 0.5 * kl(pg)

    def value(d: Tensor) -> float:
        d = d.clamp(1e-12, 1 - 1e-12)
        return _integrate(pd * torch.log(d), x) + _integrate(pg * torch.log1p(-d), x)

    d = err = v_d = None
    if discriminator_prob is not None:
        d = discriminator_prob(x).double().flatten()
        cdf = torch.cumulative_trapezoid(mixture, x)
        cdf = torch.cat([cdf.new_zeros(1), cdf]) / cdf[-1]
        central = (cdf >= (1 - mass) / 2) & (cdf <= 1 - (1 - mass) / 2)
        err = (d - d_star)[central].abs().max().item()
        v_d = value(d)
    return TheoryReport(x, pd, pg, d_star, d, jsd, value(d_star), v_d, err)


def plot_theory(report: TheoryReport, path: str | Path, title: str = "") -> None:
    """Figure 1 of the paper: p_data, p_g, D(x) and D*(x) on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    x = report.x.numpy()
    ax.plot(x, report.p_data.numpy(), "k:", label="p_data")
    ax.plot(x, report.p_g.numpy(), "g-", label="p_g")
    ax.plot(x, report.d_star.numpy(), "b--", label="D*(x)")
    if report.d is not None:
        ax.plot(x, report.d.numpy(), "b-", alpha=0.6, label="D(x)")
    ax.set_ylim(-0.02, max(1.05, float(max(report.p_data.max(), report.p_g.max())) * 1.1))
    ax.set_title(title or f"JSD={report.jsd:.3f}  V(D*,G)={report.value_d_star:.3f}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

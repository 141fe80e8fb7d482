"""Statistics over seeds for a study (gan_lab.report): means with Student-t confidence
intervals, paired differences on shared seeds, and which pairs of configurations to compare.

Non-finite values (a toy run that hits no mode has reverse KL = inf; a diverged run, nan) are
left out of every mean and interval and counted instead (``Estimate.non_finite``), so a single
inf neither hides the other seeds nor is hidden itself: the report prints the count beside the
mean.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

CONFIDENCE = 0.95
# Beyond this many configurations all pairs make a wall of lines (and a multiple-comparison
# problem); each is then compared with the best one only.
MAX_ALL_PAIRS = 6


@dataclass(frozen=True)
class Estimate:
    """Mean of the finite values and the half-width of its 95 % CI (None where n < 2).

    ``n`` counts the finite values the mean is over, ``non_finite`` the inf/nan ones left out.
    """

    mean: float | None
    half_width: float | None
    n: int
    non_finite: int = 0

    @property
    def low(self) -> float | None:
        """Lower end of the confidence interval."""
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        """Upper end of the confidence interval."""
        return None if self.half_width is None else self.mean + self.half_width


def t_half_width(values: Sequence[float]) -> float:
    """Half-width of the two-sided Student-t CI of the mean: t_{0.975, n-1} * s / sqrt(n)."""
    n = len(values)
    quantile = float(student_t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    return quantile * statistics.stdev(values) / math.sqrt(n)


def estimate(values: Iterable[float]) -> Estimate:
    """Mean and 95 % CI over the finite ``values``; the others are only counted."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    non_finite = len(values) - len(finite)
    if not finite:
        return Estimate(None, None, 0, non_finite)
    half_width = t_half_width(finite) if len(finite) > 1 else None
    return Estimate(statistics.fmean(finite), half_width, len(finite), non_finite)


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences A_s - B_s over the seeds both have finite values for."""

    diff: Estimate
    lower: int  # seeds on which A was strictly lower

    @property
    def excludes_zero(self) -> bool:
        """Whether the CI of the mean difference lies wholly on one side of 0."""
        return self.diff.low is not None and (self.diff.low > 0 or self.diff.high < 0)


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> PairedDifference | None:
    """A - B on shared seeds (paired t); None when fewer than 2 seeds have finite values in both."""
    seeds = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    return PairedDifference(estimate(diffs), sum(d < 0 for d in diffs))


def comparison_pairs(
    ranked: Sequence[str], max_all_pairs: int = MAX_ALL_PAIRS
) -> list[tuple[str, str]]:
    """Pairs (A, B) to compare, A ranked above B: all pairs of up to ``max_all_pairs``
    configurations, else each configuration against the first (the best) only."""
    if len(ranked) > max_all_pairs:
        return [(ranked[0], other) for other in ranked[1:]]
    return [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]

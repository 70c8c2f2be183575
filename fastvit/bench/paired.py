"""Paired comparisons: the ratio of two implementations' times measured in interleaved rounds.

Members of a comparison group run in the same rounds, each beside its baseline (fastvit.bench.rounds),
so whatever the machine does meanwhile (clock changes, another process, a cache filled by something
else) lands on both sides of a comparison alike. A comparison of member ``a`` against ``b`` is then the
median of
the per-round ratios ``a_i / b_i`` with a 95% confidence interval from scipy's bootstrap (percentile
method, a fixed seed: the same rounds give the same interval). An A/A twin (the baseline measured a
second time under another name, same module and inputs) gives the noise floor of a group: its
interval is what "no difference" looks like in that run.

Words follow the numbers (:func:`verdict`): a ratio is "faster" or "slower" only when its whole
interval lies outside both 1 and the noise band of the A/A twin; otherwise "no measurable
difference". Nothing here touches torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
TARGET_HALF_WIDTH = 0.02  # relative half-width of the interval at which a group's rounds stop
MIN_INTERVAL_ROUNDS = 20
"""Rounds below which an interval cannot stop a group's rounds: the percentile bootstrap interval of a
median from few rounds covers far less than its nominal 95% (from 5 rounds it spans about the 2nd to
the 4th value, which hold the true median 62% of the time)."""
NO_DIFFERENCE = "no measurable difference"


@dataclass(frozen=True)
class Ratio:
    """Median of paired per-round ratios ``a / b`` with its ``CONFIDENCE`` interval [low, high]."""

    value: float
    low: float
    high: float
    rounds: int

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the ratio (0.02: +-2%)."""
        return (self.high - self.low) / 2 / self.value

    @property
    def band(self) -> float:
        """How far from 1 the interval reaches: an A/A twin's noise band (0.015: 1 +- 1.5%)."""
        return max(abs(self.high - 1), abs(1 - self.low), abs(self.value - 1))

    def as_fields(self, prefix: str = "ratio") -> dict:
        return {prefix: self.value, f"{prefix}_low": self.low, f"{prefix}_high": self.high}


def paired_ratio(times, baseline, seed: int = SEED) -> Ratio:
    """The paired ratio of ``times`` against ``baseline``, round i against round i.

    Both are per-round seconds of equal length (rounds where either is missing, None or NaN, are
    dropped). With fewer than two rounds the interval is the ratio itself."""
    from scipy import stats

    a, b = _pairs(times, baseline)
    if len(a) == 0:
        raise ValueError("paired_ratio: no round has both times")
    ratios = a / b
    value = float(np.median(ratios))
    if len(ratios) < 2 or np.ptp(ratios) == 0:
        return Ratio(value, value, value, len(ratios))
    res = stats.bootstrap((ratios,), np.median, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                          method="percentile", vectorized=True, axis=-1, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Ratio(value, min(low, value), max(high, value), len(ratios))


def _pairs(times, baseline) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray([math.nan if t is None else t for t in times], dtype=float)
    b = np.asarray([math.nan if t is None else t for t in baseline], dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_ratio: {a.size} rounds against {b.size}: paired rounds must be equal in number")
    keep = np.isfinite(a) & np.isfinite(b) & (b > 0)
    return a[keep], b[keep]


def verdict(ratio: Ratio, noise: Ratio | None = None) -> str:
    """"faster" (ratio < 1: fewer seconds than the baseline), "slower", or :data:`NO_DIFFERENCE` when
    the interval contains 1 or does not clear the A/A twin's noise band."""
    band = noise.band if noise is not None else 0.0
    if ratio.high < 1 - band and ratio.high < 1:
        return "faster"
    if ratio.low > 1 + band and ratio.low > 1:
        return "slower"
    return NO_DIFFERENCE


def converged(ratios, target: float = TARGET_HALF_WIDTH, min_rounds: int = MIN_INTERVAL_ROUNDS) -> bool:
    """Every comparison's interval is at most ``target`` wide on each side (relative), each from at
    least ``min_rounds`` rounds."""
    return all(r.half_width <= target and r.rounds >= min_rounds for r in ratios)


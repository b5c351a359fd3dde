"""Uncertainty over users: bootstrap confidence intervals and paired tests between two models.

Resamples are drawn as per-user count vectors, so a bootstrap mean of many metrics is one matrix
product, and the same seed gives the same resamples for every model (the comparison stays paired).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from scipy import stats as sps

__all__ = ["bootstrap_counts", "bootstrap_ci", "bootstrap_statistic_ci", "PairedTest", "paired_test", "paired_tests"]

_CHUNK = 128


def bootstrap_counts(n: int, n_bootstrap: int, seed: int = 0, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    """Blocks of resamples [b, n] (float32): how often each of n users is drawn in each resample of n.

    The same (n, n_bootstrap, seed) always gives the same resamples; the last request is kept in memory
    (as uint8, about n_bootstrap * n bytes) because every model and comparison of one run asks for it.
    """
    global _cache_key, _cache_blocks
    key = (n, n_bootstrap, seed, chunk)
    if key != _cache_key:
        rng = np.random.default_rng(seed)
        blocks = []
        for start in range(0, n_bootstrap, chunk):
            b = min(chunk, n_bootstrap - start)
            draws = rng.integers(0, n, size=(b, n)) + (np.arange(b, dtype=np.int64) * n)[:, None]
            counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)
            # a user drawn 256 times in one resample of n is beyond any realistic n; guard anyway
            blocks.append(counts.astype(np.uint8) if counts.max(initial=0) < 256 else counts)
        _cache_key, _cache_blocks = key, blocks
    for block in _cache_blocks:
        yield block.astype(np.float32)


_cache_key: tuple[int, int, int, int] | None = None
_cache_blocks: list[np.ndarray] = []


def _percentiles(samples: np.ndarray, confidence: float) -> np.ndarray:
    alpha = (1.0 - confidence) / 2.0
    return np.quantile(samples, [alpha, 1.0 - alpha], axis=0).T  # [..., 2]


def bootstrap_ci(values: np.ndarray, n_bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> np.ndarray:
    """Percentile CI of the mean over users: values [U] -> [2]; values [U, M] -> [M, 2] (lo, hi)."""
    v = np.asarray(values, dtype=np.float64)
    one = v.ndim == 1
    v = v[:, None] if one else v
    n = v.shape[0]
    if n == 0:
        out = np.full((v.shape[1], 2), np.nan)
        return out[0] if one else out
    means = np.concatenate([w @ v / n for w in bootstrap_counts(n, n_bootstrap, seed)], axis=0)
    out = _percentiles(means, confidence)
    return out[0] if one else out


def bootstrap_statistic_ci(per_user: sp.csr_matrix, statistic: Callable[[np.ndarray], np.ndarray],
                           n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> np.ndarray:
    """CI of a statistic of column sums: per_user [U, n] (e.g. which items each user was shown), and
    statistic maps resampled column sums [b, n] to [b] (e.g. coverage, Gini). Returns (lo, hi)."""
    m = sp.csr_matrix(per_user, dtype=np.float64)
    n = m.shape[0]
    if n == 0:
        return np.full(2, np.nan)
    mt = m.T.tocsr()
    samples = np.concatenate([np.asarray(statistic(np.asarray(mt @ w.T).T))
                              for w in bootstrap_counts(n, n_bootstrap, seed)])
    return _percentiles(samples, confidence)


@dataclass(frozen=True)
class PairedTest:
    """Model A minus model B over the same users: mean difference, its bootstrap CI and two p-values."""

    diff: float
    ci: tuple[float, float]
    p_bootstrap: float
    p_ttest: float
    n_users: int

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def paired_test(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> PairedTest:
    """Paired bootstrap (two-sided, resampling users) and paired t-test of mean(a - b) over per-user values.

    The bootstrap p-value counts resampled differences at least as far from the observed one as the
    observed one is from zero (the shift method), with the usual +1 smoothing.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two per-user arrays of one shape, got {a.shape} and {b.shape}")
    return paired_tests(a[:, None], b[:, None], n_bootstrap, confidence, seed)[0]


def paired_tests(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> list[PairedTest]:
    """`paired_test` for M metrics at once: a, b [U, M] (same users, same order) -> M results."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired_tests needs two [users, metrics] arrays of one shape, got {a.shape} and {b.shape}")
    n, n_metrics = a.shape
    nan = float("nan")
    if n == 0:
        return [PairedTest(nan, (nan, nan), nan, nan, 0) for _ in range(n_metrics)]
    d = a - b
    obs = d.mean(axis=0)
    boot = np.concatenate([w @ d / n for w in bootstrap_counts(n, n_bootstrap, seed)], axis=0)  # [B, M]
    ci = _percentiles(boot, confidence)
    out = []
    for j in range(n_metrics):
        if np.allclose(d[:, j], d[0, j]):
            # no spread: the difference is exact (zero or constant) and the t statistic undefined
            p_boot = p_t = 1.0 if obs[j] == 0.0 else 0.0
        else:
            p_boot = float((1 + np.count_nonzero(np.abs(boot[:, j] - obs[j]) >= abs(obs[j]))) / (n_bootstrap + 1))
            p_t = float(sps.ttest_rel(a[:, j], b[:, j]).pvalue)
        out.append(PairedTest(diff=float(obs[j]), ci=(float(ci[j, 0]), float(ci[j, 1])), p_bootstrap=p_boot,
                              p_ttest=p_t, n_users=n))
    return out

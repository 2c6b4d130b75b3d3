"""The rank tests an analysis runs, as scipy.stats 1.17 computes them (same statistics, same
p-values: tests/test_rank_tests.py holds each against scipy.stats on many inputs, ties and
zeros included), on numpy and scipy.special alone.

Why not scipy.stats itself: importing it costs a third of a second or more, and each call
another millisecond or two of argument handling; an analysis runs a few hundred tests, so on a
small analysis these overheads were a fifth of the whole command. Listening-test statistics,
which run rarely, still use scipy.stats (acr.core.stats).

Each function names the scipy.stats function (and its default arguments) it reproduces, for
the inputs acr gives it: finite values, no empty group, at least one pair or value (what
acr.core.stats checks before it calls them); scipy answers NaN or an error outside that.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import chdtrc, ndtr

WILCOXON_EXACT_MAX = 50  # scipy.stats.wilcoxon's method="auto": exact up to 50 pairs
PERMUTATION_MAX = 13  # ... or, with ties or zeros, every sign pattern up to 13 pairs
MWU_EXACT_MAX = 8  # mannwhitneyu's "auto": exact unless both samples are larger than this
PERMUTATION_EPS = np.finfo(np.float64).eps * 100  # permutation_test's tolerance


class TestResult(NamedTuple):
    statistic: float
    pvalue: float


def ranks_and_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy.stats.rankdata(values) (average ranks of a 1-D array, 1-based) and the size of
    each group of equal values."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    sizes = np.diff(np.append(starts, len(values)))
    average = starts + (sizes + 1) / 2.0  # mean of the 1-based ranks starts+1 ... starts+size
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, sizes)
    return ranks, sizes


def rankdata(values: np.ndarray) -> np.ndarray:
    """scipy.stats.rankdata(values), method "average", of a 1-D array."""
    return ranks_and_ties(values)[0]


def _signed_rank_counts(n: int) -> np.ndarray:
    """How many of the 2^n sign patterns give each signed-rank sum 0 ... n(n+1)/2 (the
    coefficients of prod_i (1 + q^i))."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for i in range(1, n + 1):
        counts[i:] = counts[i:] + counts[:-i].copy()
    return counts


def wilcoxon(x: np.ndarray, y: np.ndarray) -> TestResult:
    """scipy.stats.wilcoxon(x, y): two-sided, zeros dropped (zero_method "wilcox"), no
    continuity correction, method "auto" (exact null distribution up to 50 pairs without ties
    or zeros; with them, every sign pattern up to 13 pairs; else the normal approximation with
    the tie correction). Statistic: the smaller of the two signed-rank sums."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(d) == 0:
        return TestResult(float("nan"), float("nan"))
    nonzero = d[d != 0]
    ranks, ties = ranks_and_ties(np.abs(nonzero))
    r_plus, r_minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    statistic = min(r_plus, r_minus)
    count = len(nonzero)
    has_ties = bool(np.any(ties > 1))
    zeros = len(d) - count
    if len(d) <= WILCOXON_EXACT_MAX and not (has_ties or zeros):
        counts = _signed_rank_counts(count)
        total = counts.sum()
        at_most = counts[: int(np.ceil(r_plus)) + 1].sum() / total
        at_least = counts[int(np.floor(r_plus)):].sum() / total
        return TestResult(statistic, float(np.clip(2 * min(at_most, at_least), 0, 1)))
    if len(d) <= PERMUTATION_MAX:
        all_ranks = np.zeros(len(d))
        all_ranks[d != 0] = ranks
        return TestResult(statistic, _sign_flip_pvalue(d, all_ranks))
    mean = count * (count + 1) * 0.25
    spread = np.sqrt((count * (count + 1) * (2 * count + 1) - np.sum(ties ** 3 - ties) / 2)
                     / 24)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (r_plus - mean) / spread
    return TestResult(statistic, float(2 * ndtr(-abs(z))))


def _sign_flip_pvalue(d: np.ndarray, ranks: np.ndarray) -> float:
    """scipy.stats.permutation_test's two-sided p-value of the positive signed-rank sum
    over all 2^n sign patterns of d (an exact test: no +1 adjustment); `ranks`: those of |d|,
    0 where d is 0 (sign flips keep them)."""
    patterns = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    null = ((patterns * d) > 0) @ ranks
    observed = float(ranks[d > 0].sum())
    gamma = abs(PERMUTATION_EPS * observed)
    less = np.count_nonzero(null <= observed + gamma) / len(null)
    greater = np.count_nonzero(null >= observed - gamma) / len(null)
    return float(np.clip(2 * min(less, greater), 0, 1))


def friedman(*samples: np.ndarray) -> TestResult:
    """scipy.stats.friedmanchisquare(*samples): k related samples of n blocks, ranks within
    each block (ties averaged, and corrected for), chi-squared with k - 1 degrees of freedom."""
    data = np.column_stack([np.asarray(s, dtype=float) for s in samples])  # [n, k]
    n, k = data.shape
    ranked = np.empty_like(data)
    ties = 0.0
    for row, values in enumerate(data):
        ranked[row], sizes = ranks_and_ties(values)
        ties += float(np.sum(sizes * (sizes * sizes - 1)))
    correction = 1 - ties / (k * (k * k - 1) * n)
    if correction == 0:  # every block ties all its values: nothing to rank
        return TestResult(float("nan"), float("nan"))
    ssbn = float(np.sum(ranked.sum(axis=0) ** 2))
    statistic = (12.0 / (k * n * (k + 1)) * ssbn - 3 * n * (k + 1)) / correction
    return TestResult(float(statistic), float(chdtrc(k - 1, statistic)))


def kruskal(*samples: np.ndarray) -> TestResult:
    """scipy.stats.kruskal(*samples): H on the pooled ranks, corrected for ties, chi-squared
    with (groups - 1) degrees of freedom."""
    groups = [np.asarray(s, dtype=float) for s in samples]
    sizes = [len(g) for g in groups]
    total = sum(sizes)
    ranked, ties = ranks_and_ties(np.concatenate(groups))
    correction = 1 - np.sum(ties ** 3 - ties) / (total ** 3 - total)
    edges = np.cumsum([0] + sizes)
    ssbn = sum(ranked[edges[i]:edges[i + 1]].sum() ** 2 / sizes[i] for i in range(len(groups)))
    h = (12.0 / (total * (total + 1)) * ssbn - 3 * (total + 1)) / correction
    return TestResult(float(h), float(chdtrc(len(groups) - 1, h)))


def _u_counts(n1: int, n2: int) -> np.ndarray:
    """How many of the C(n1 + n2, n1) rankings give each U = 0 ... n1 n2 (the coefficients of
    the Gaussian binomial [n1 + n2, n1]_q, the same for n1 and n2 swapped), by dividing
    prod (1 - q^(n2 + i)) by prod (1 - q^i) with n1 the smaller size (the exact test runs
    when one size is at most 8: at most 8 factors, integers exact in float64)."""
    n1, n2 = min(n1, n2), max(n1, n2)
    size = n1 * n2 + 1
    poly = np.zeros(size + max(n1 + n2, 1))
    poly[0] = 1
    for i in range(1, n1 + 1):  # times (1 - q^(n2 + i))
        shift = n2 + i
        poly[shift:] = poly[shift:] - poly[:-shift].copy()
    for i in range(1, n1 + 1):  # divided by (1 - q^i): a running sum with stride i
        for start in range(i):
            poly[start::i] = np.cumsum(poly[start::i])
    return np.round(poly[:size])


def mann_whitney(x: np.ndarray, y: np.ndarray) -> TestResult:
    """scipy.stats.mannwhitneyu(x, y): two-sided, continuity correction, method "auto" (exact
    when a sample has at most 8 values and nothing is tied, else the normal approximation with
    the tie correction). Statistic: U of x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    ranks, ties = ranks_and_ties(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    u = max(u1, n1 * n2 - u1)
    if (n1 <= MWU_EXACT_MAX or n2 <= MWU_EXACT_MAX) and not np.any(ties > 1):
        counts = _u_counts(n1, n2)
        p = counts[int(u):].sum() / counts.sum()
    else:
        n = n1 + n2
        spread = np.sqrt(n1 * n2 / 12 * ((n + 1) - np.sum(ties ** 3 - ties) / (n * (n - 1))))
        with np.errstate(divide="ignore", invalid="ignore"):
            p = ndtr(-(u - n1 * n2 / 2 - 0.5) / spread)
    return TestResult(u1, float(np.clip(2 * p, 0, 1)))


def spearman_matrix(columns: np.ndarray) -> np.ndarray:
    """Spearman's rho between every two columns of [observations, variables], each pair over
    the rows where both are finite (scipy.stats.spearmanr(a, b, nan_policy="omit") per pair):
    [variables, variables], NaN where a pair has under 2 rows or a constant column."""
    columns = np.asarray(columns, dtype=float)
    finite = np.isfinite(columns)
    count = columns.shape[1]
    if finite.all():
        ranked = np.column_stack([rankdata(c) for c in columns.T])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.atleast_2d(np.corrcoef(ranked, rowvar=False))
    matrix = np.full((count, count), np.nan)
    for i in range(count):
        column = columns[finite[:, i], i]
        if len(column) >= 2 and np.ptp(column) > 0:  # (as corrcoef's diagonal above)
            matrix[i, i] = 1.0
        for j in range(i + 1, count):
            both = finite[:, i] & finite[:, j]
            a, b = rankdata(columns[both, i]), rankdata(columns[both, j])
            rho = float("nan")
            if both.sum() >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
                rho = float(np.corrcoef(a, b)[0, 1])
            matrix[i, j] = matrix[j, i] = rho
    return matrix

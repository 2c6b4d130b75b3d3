"""acr.core.rank_tests against scipy.stats itself: the same statistics and p-values on many
random inputs, with and without ties and zeros, at every size where scipy changes method."""
import numpy as np
import pytest
from scipy import stats

from acr.core import rank_tests


def samples(seed: int, size: int, tied: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size).astype(float) if tied else rng.standard_normal(size)


@pytest.mark.parametrize("size", [1, 2, 5, 9, 30])
@pytest.mark.parametrize("tied", [False, True])
def test_ranks_equal_scipy_rankdata(size, tied):
    values = samples(size, size, tied)
    np.testing.assert_array_equal(rank_tests.rankdata(values), stats.rankdata(values))


# sizes around the exact (<= 50), sign-pattern (<= 13) and normal approximations
@pytest.mark.parametrize("size", [6, 8, 13, 14, 20, 50, 51, 80])
@pytest.mark.parametrize("kind", ["continuous", "ties", "zeros"])
def test_wilcoxon_equals_scipy(size, kind):
    for seed in range(4):
        rng = np.random.default_rng(seed * 100 + size)
        x = rng.standard_normal(size)
        y = x + rng.standard_normal(size) * 0.8 + 0.3 * seed
        if kind == "ties":
            x, y = np.round(x * 2), np.round(y * 2) + 0.5  # ties among |differences|
        if kind == "zeros":
            y[: size // 4] = x[: size // 4]
        ours = rank_tests.wilcoxon(x, y)
        theirs = stats.wilcoxon(x, y)
        assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
        assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("k,n", [(3, 6), (4, 10), (6, 25)])
@pytest.mark.parametrize("tied", [False, True])
def test_friedman_equals_scipy(k, n, tied):
    for seed in range(3):
        columns = [samples(seed * 10 + i, n, tied) + 0.2 * i for i in range(k)]
        ours = rank_tests.friedman(*columns)
        theirs = stats.friedmanchisquare(*columns)
        assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
        assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9)


@pytest.mark.parametrize("sizes", [(1, 2), (3, 5), (8, 8), (5, 20), (9, 12), (150, 6), (300, 8),
                                   (30, 40, 25)])
@pytest.mark.parametrize("tied", [False, True])
def test_kruskal_and_mann_whitney_equal_scipy(sizes, tied):
    for seed in range(3):
        groups = [samples(seed * 7 + i, n, tied) + 0.3 * i for i, n in enumerate(sizes)]
        if np.ptp(np.concatenate(groups)) > 0:
            ours, theirs = rank_tests.kruskal(*groups), stats.kruskal(*groups)
            assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
            assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9)
        ours = rank_tests.mann_whitney(groups[0], groups[1])
        theirs = stats.mannwhitneyu(groups[0], groups[1], alternative="two-sided")
        assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
        assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-9)


def test_friedman_of_blocks_that_tie_everything_is_undefined_as_in_scipy():
    columns = [np.ones(6), np.ones(6), np.ones(6)]
    ours, theirs = rank_tests.friedman(*columns), stats.friedmanchisquare(*columns)
    assert np.isnan(theirs.statistic) and np.isnan(ours.statistic) and np.isnan(ours.pvalue)


def test_spearman_matrix_equals_scipy_pair_by_pair_with_missing_values():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((40, 5))
    data[:, 1] += data[:, 0]
    data[:, 3] = np.round(data[:, 3])  # ties
    np.testing.assert_allclose(rank_tests.spearman_matrix(data), stats.spearmanr(data).statistic,
                               rtol=1e-12)
    data[[2, 7, 11], 2] = np.nan
    data[5, 4] = np.nan
    matrix = rank_tests.spearman_matrix(data)
    for i in range(5):
        for j in range(5):
            if i != j:
                expected = stats.spearmanr(data[:, i], data[:, j], nan_policy="omit").statistic
                assert matrix[i, j] == pytest.approx(expected, rel=1e-12)

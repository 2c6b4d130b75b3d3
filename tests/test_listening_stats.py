"""The statistics of listening tests against hand-computed and published values."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from acr.core import stats

NAN = np.nan
# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), section C: 4 observers x
# 12 units, values 1-5, missing values. Published: nominal 0.743, ordinal 0.815, interval 0.849,
# ratio 0.797.
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
                     [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]]


@pytest.mark.parametrize("level,published", [("nominal", 0.743), ("ordinal", 0.815),
                                             ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_alpha_on_the_published_worked_example(level, published):
    assert stats.krippendorff_alpha(np.array(KRIPPENDORFF_2011), level) == \
        pytest.approx(published, abs=5e-4)


def test_krippendorff_alpha_perfect_and_undefined():
    assert stats.krippendorff_alpha(np.array([[1, 2, 3, 4], [1, 2, 3, 4]])) == pytest.approx(1)
    assert stats.krippendorff_alpha(np.array([[1, 2, 3]])) is None  # one rater
    assert stats.krippendorff_alpha(np.array([[3, 3], [3, 3]])) is None  # one value only
    assert stats.krippendorff_alpha(np.array([[1, NAN], [NAN, 2]])) is None  # no shared unit


def test_bradley_terry_two_settings():
    # A beat B 3 times, B beat A once: P(A > B) = 3/4, so s_A - s_B = ln 3
    s = stats.bradley_terry(np.array([[0, 3], [1, 0]]))
    assert s[0] - s[1] == pytest.approx(np.log(3), abs=1e-8) and s.sum() == pytest.approx(0)


def test_bradley_terry_on_a_win_matrix_with_a_hand_computed_solution():
    # strengths 4 : 2 : 1 predict P(1>2) = 2/3, P(1>3) = 4/5, P(2>3) = 2/3; wins in exactly those
    # proportions (2:1 in 3, 4:1 in 5, 2:1 in 3 games) satisfy the likelihood equations
    # W_i = sum_j n_ij p_i / (p_i + p_j) (W = 6, 3, 2), so (ln 4, ln 2, 0) centred is the MLE
    wins = np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]])
    s = stats.bradley_terry(wins)
    expected = np.log([4, 2, 1]) - np.log([4, 2, 1]).mean()
    assert s == pytest.approx(expected, abs=1e-7)
    # a tie counted half to each side: 2.5 : 1.5 -> ln(5/3)
    s = stats.bradley_terry(np.array([[0, 2.5], [1.5, 0]]))
    assert s[0] - s[1] == pytest.approx(np.log(5 / 3), abs=1e-8)


def test_bradley_terry_without_a_maximum_likelihood_needs_a_prior():
    never_lost = np.array([[0, 3, 2], [0, 0, 1], [0, 1, 0]])
    assert stats.bt_needs_prior(never_lost)
    assert not stats.bt_needs_prior(np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]]))
    with pytest.raises(ValueError):
        stats.bradley_terry(never_lost)
    # a prior of 0.5 wins each way on compared pairs: 3.5 : 0.5 and so on, still ordered
    s = stats.bradley_terry(never_lost, prior=0.5)
    assert s[0] > s[1] and s[0] > s[2] and np.all(np.isfinite(s))
    s2 = stats.bradley_terry(np.array([[0, 3.5], [0.5, 0]]))
    assert stats.bradley_terry(np.array([[0, 3], [0, 0]]), prior=0.5) == pytest.approx(s2)


def test_spearman_with_a_bonett_wright_interval():
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    y = np.array([2, 1, 4, 3, 6, 5, 8, 7, 10, 9], dtype=float)
    r = stats.spearman(x, y)
    assert r["rho"] == pytest.approx(1 - 6 * 10 / (10 * 99))  # 1 - 6 sum d^2 / n(n^2 - 1)
    assert r["p"] == pytest.approx(scipy_stats.spearmanr(x, y).pvalue)
    z, se = np.arctanh(r["rho"]), np.sqrt((1 + r["rho"] ** 2 / 2) / 7)
    assert r["ci95"] == pytest.approx([np.tanh(z - 1.959964 * se), np.tanh(z + 1.959964 * se)],
                                      abs=1e-6)
    assert r["ci95"][0] < r["rho"] < r["ci95"][1] and r["n"] == 10
    assert stats.spearman([1, 2, 3], [1, 2, 3])["rho"] is None  # n < 4
    assert stats.spearman([1, 2, NAN, 4, 5], [2, 3, 4, 4, NAN])["n"] == 3

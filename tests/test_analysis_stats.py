"""Statistics and set-level maths on closed-form cases."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from acr.commands.analyze import sets
from acr.core import stats


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    assert sets.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # 1-D: (mu_a - mu_b)^2 + (sd_a - sd_b)^2 with the sample estimates
    x, y = rng.normal(1, 2, (100, 1)), rng.normal(4, 0.5, (120, 1))
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert sets.frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    # shifting one set by a vector d adds |d|^2
    shift = np.array([3.0, -1.0, 2.0])
    assert sets.frechet_distance(a, a + shift) == pytest.approx(14.0, rel=1e-6)
    assert np.isnan(sets.frechet_distance(a[:1], a))


def test_frechet_distance_with_fewer_rows_than_dimensions_is_finite():
    rng = np.random.default_rng(1)
    value = sets.frechet_distance(rng.standard_normal((5, 20)), rng.standard_normal((6, 20)))
    assert np.isfinite(value) and value > 0


def test_diversity_novelty_and_cosine():
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    assert sets.diversity(square) == pytest.approx((4 * 1 + 2 * np.sqrt(2)) / 6)
    assert list(sets.novelty(square)) == [1, 1, 1, 1]
    assert np.isnan(sets.diversity(square[:1]))
    scores = sets.cosine_scores(np.array([[1, 0], [1, 1], [0, 2]]),
                                np.array([[2, 0], [-1, -1], [1, 0]]))
    assert scores == pytest.approx([1, -1, 0])
    z = sets.standardize(np.array([[1, 5], [3, 5], [5, 5]], dtype=float))
    assert z[:, 0] == pytest.approx([-1.2247, 0, 1.2247], abs=1e-4) and list(z[:, 1]) == [0, 0, 0]


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    adjusted = stats.holm([0.5, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.5) and np.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def test_rank_biserial():
    assert stats.rank_biserial(np.array([1.0, 2, 3])) == 1.0
    assert stats.rank_biserial(np.array([-1.0, -2, 0])) == -1.0
    assert stats.rank_biserial(np.array([1.0, -2])) == pytest.approx((1 - 2) / 3)


def test_bootstrap_ci_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(2)
    small, large = rng.normal(5, 1, 10), rng.normal(5, 1, 400)
    low, high = stats.bootstrap_ci(small)
    assert low < small.mean() < high
    low2, high2 = stats.bootstrap_ci(large)
    assert high2 - low2 < (high - low) / 3
    assert stats.bootstrap_ci(small) == stats.bootstrap_ci(small)  # seeded
    assert all(np.isnan(stats.bootstrap_ci(np.array([1.0]))))


def test_paired_tests_find_a_real_shift_and_match_scipy():
    rng = np.random.default_rng(3)
    prompts = [f"p{i}" for i in range(12)]
    base = {p: rng.normal(0, 1) for p in prompts}
    table = {"baseline": base,
             "hot": {p: v + 2 + rng.normal(0, 0.1) for p, v in base.items()},
             "same": {p: v + rng.normal(0, 0.1) for p, v in base.items()}}
    result = stats.paired_tests(table)
    omnibus = result["omnibus"]
    matrix = np.array([[table[s][p] for s in table] for p in prompts])
    assert omnibus["p"] == pytest.approx(scipy_stats.friedmanchisquare(*matrix.T).pvalue)
    assert 0 < omnibus["kendall_w"] <= 1 and omnibus["n"] == 12
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert pairs[("baseline", "hot")]["significant"]
    assert pairs[("baseline", "hot")]["rank_biserial"] == 1.0  # hot is higher for every prompt
    assert pairs[("baseline", "hot")]["median_difference"] == pytest.approx(2, abs=0.2)
    # hot is higher than baseline and than same for all 12 prompts: the exact two-sided
    # Wilcoxon p is 2 / 2^12 for both; baseline vs same is what scipy says
    assert pairs[("baseline", "hot")]["p"] == pytest.approx(2 / 2 ** 12)
    assert pairs[("hot", "same")]["p"] == pytest.approx(2 / 2 ** 12)
    p_same = scipy_stats.wilcoxon(matrix[:, 0], matrix[:, 2]).pvalue
    assert pairs[("baseline", "same")]["p"] == pytest.approx(p_same) and p_same > 0.1
    # Holm by hand: sorted p = (2/4096, 2/4096, p_same) -> 3 x 2/4096, then max(that,
    # 2 x 2/4096), then max(that, 1 x p_same)
    assert pairs[("baseline", "hot")]["p_holm"] == pytest.approx(6 / 4096)
    assert pairs[("hot", "same")]["p_holm"] == pytest.approx(6 / 4096)
    assert pairs[("baseline", "same")]["p_holm"] == pytest.approx(p_same)
    assert [p["significant"] for p in result["pairs"]] == [True, False, True]


def test_paired_tests_say_when_n_is_too_small():
    table = {"a": {"p1": 1.0, "p2": 2.0, "p3": 3.0}, "b": {"p1": 2.0, "p2": 3.5, "p3": 4.0}}
    result = stats.paired_tests(table)
    [pair] = result["pairs"]
    assert "too few for a Wilcoxon test" in pair["note"] and not pair["significant"]
    assert stats.paired_tests({"only": {"p": 1.0}})["note"] == "one setting: nothing to compare"


def test_unpaired_tests_compare_prompt_sets():
    rng = np.random.default_rng(4)
    groups = {"joy": list(rng.normal(0, 1, 8)), "sadness": list(rng.normal(5, 1, 8)),
              "anger": list(rng.normal(0, 1, 8))}
    result = stats.unpaired_tests(groups)
    assert result["omnibus"]["p"] == pytest.approx(scipy_stats.kruskal(*groups.values()).pvalue)
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert pairs[("joy", "sadness")]["significant"] and not pairs[("joy", "anger")]["significant"]
    assert pairs[("joy", "sadness")]["rank_biserial"] == 1.0  # sadness is higher throughout
    assert stats.unpaired_tests({"x": [1.0]})["omnibus"] is None


def test_friedman_and_wilcoxon_notes_say_why_there_is_no_test():
    prompts = [f"p{i}" for i in range(20)]
    flat = {s: {p: 0.0 for p in prompts} for s in ("a", "b", "c")}  # e.g. a clipping ratio
    result = stats.paired_tests(flat)
    assert result["omnibus"]["note"] == "no variation: every setting has the same value for " \
                                        "each of the 20 prompts, nothing to rank"
    assert result["pairs"][0]["note"] == "no variation: the two settings have the same value " \
                                         "for each of the 20 prompts"
    by_prompt = {s: {p: float(i) for i, p in enumerate(prompts)} for s in ("a", "b", "c")}
    assert stats.paired_tests(by_prompt)["omnibus"]["note"].startswith("no variation")
    one = stats.paired_tests({s: {"p0": v} for s, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))},
                             unit="clips")
    assert one["omnibus"]["note"] == "n = 1 clip: too few for the Friedman test (needs 2)"
    assert one["pairs"][0]["note"] == "n = 1 clip: too few for a Wilcoxon test (needs 6)"


def test_report_wording_of_differences():
    from acr.commands.analyze.report import difference_lines, p_text

    assert [p_text(0.0004), p_text(0.0123), p_text(0.0004, "Holm p"), p_text(None)] == [
        "p < 0.001", "p = 0.012", "Holm p < 0.001", "p = -"]
    rng = np.random.default_rng(5)
    prompts = [f"p{i}" for i in range(14)]
    base = {p: rng.normal(0, 1) for p in prompts}
    table = {"baseline": base, "hot": {p: v + 2 for p, v in base.items()},
             "hotter": {p: v + 4 for p, v in base.items()}}
    lines = difference_lines("loudness_lufs", stats.paired_tests(table), "prompts")
    assert lines == [
        "- **integrated loudness (LUFS)**: the settings differ (Friedman chi2 = 28.00, "
        "p < 0.001, Kendall's W = 1.00, n = 14 prompts).",
        "  - hot is higher than baseline (median difference +2, rank-biserial +1.00, "
        "Holm p < 0.001).",
        "  - hotter is higher than baseline (median difference +4, rank-biserial +1.00, "
        "Holm p < 0.001).",
        "  - hotter is higher than hot (median difference +2, rank-biserial +1.00, "
        "Holm p < 0.001)."]
    flat = {s: {p: 0.0 for p in prompts} for s in ("a", "b", "c")}
    assert difference_lines("clipping_ratio", stats.paired_tests(flat), "prompts") == [
        "- **clipping ratio**: no variation: every setting has the same value for each of the "
        "14 prompts, nothing to rank."]


def test_frechet_distance_equals_the_fid_reference_computation():
    """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of the product, offset by
    eps on the diagonal when it is singular), on full-rank and on singular covariances."""
    from scipy import linalg

    def reference(a, b, eps=1e-6):
        mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
        covmean = np.real(covmean)
        diff = mu1 - mu2
        return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)

    rng = np.random.default_rng(7)
    for rows, dims in ((200, 16), (40, 64), (6, 20)):  # the last two: singular covariances
        a = rng.standard_normal((rows, dims))
        b = 1.3 * rng.standard_normal((rows + 3, dims)) + 0.2
        assert sets.frechet_distance(a, b) == pytest.approx(reference(a, b), rel=1e-6)

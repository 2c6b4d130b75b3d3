"""Statistics for a repeated-measures grid: prompts are blocks.

Samples are averaged per (setting, prompt); settings are compared on the prompts they all have
(Friedman for 3 or more settings, Wilcoxon signed-rank per pair with Holm correction, Kendall's W
and rank-biserial effect sizes); prompt sets, which hold different prompts, are compared unpaired
(Kruskal-Wallis, Mann-Whitney U per pair with Holm). Bootstrap CIs resample prompts.
Every pair is (a, b); differences and rank-biserial effects are positive when b is higher.
Listening tests add Bradley-Terry strengths (pairwise preferences), Krippendorff's alpha (agreement)
and Spearman correlations with confidence intervals (human scores against metrics).

The rank tests come from acr.core.rank_tests (scipy.stats' own results, without importing
scipy.stats: an analysis runs hundreds of them); scipy.stats is imported only where the
listening tests need it.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from acr.core import rank_tests

ALPHA = 0.05
BOOTSTRAP = 2000
MIN_PAIRED = 6  # below this, two-sided exact Wilcoxon p cannot reach 0.05 (2/2^5 = 0.0625)


def bootstrap_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean (NaN below 2 values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def describe(values: np.ndarray, seed: int = 0) -> dict:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "ci95": [None, None]}
    return {"n": int(len(finite)), "mean": float(finite.mean()), "median": float(np.median(finite)),
            "std": float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
            "ci95": bootstrap_ci(finite, seed)}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(p) if np.isfinite(p[i])]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation: (R+ - R-) / (R+ + R-) over non-zero differences."""
    d = differences[differences != 0]
    if len(d) == 0:
        return 0.0
    ranks = rank_tests.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def paired_tests(table: dict[str, dict[str, float]], unit: str = "prompts") -> dict:
    """Compare settings on complete blocks. table: setting -> {prompt: value}; `unit` names
    the blocks in the notes (prompts, or clips where there are none)."""
    settings = list(table)
    prompts = sorted(set.intersection(*(set(k for k, v in table[s].items() if np.isfinite(v))
                                        for s in settings))) if settings else []
    out: dict = {"settings": settings, "blocks": len(prompts), "omnibus": None, "pairs": []}
    if len(settings) < 2:
        out["note"] = "one setting: nothing to compare"
        return out
    matrix = np.array([[table[s][p] for s in settings] for p in prompts])
    n = f"n = {len(prompts)} {unit[:-1] if len(prompts) == 1 else unit}"
    if len(settings) >= 3:
        if len(prompts) < 2:
            out["omnibus"] = {"test": "friedman",
                              "note": f"{n}: too few for the Friedman test (needs 2)"}
        elif not np.any(np.ptp(matrix, axis=1) > 0):
            out["omnibus"] = {"test": "friedman", "note": "no variation: every setting has the "
                              f"same value for each of the {len(prompts)} {unit}, nothing to "
                              "rank"}
        else:
            statistic, p_value = rank_tests.friedman(*matrix.T)
            w = statistic / (len(prompts) * (len(settings) - 1))
            out["omnibus"] = {"test": "friedman", "statistic": float(statistic),
                              "p": float(p_value), "kendall_w": float(w), "n": len(prompts)}
    raw = []
    for a, b in combinations(range(len(settings)), 2):
        differences = matrix[:, b] - matrix[:, a] if len(prompts) else np.array([])
        pair = {"a": settings[a], "b": settings[b], "n": len(prompts),
                "median_difference": float(np.median(differences)) if len(differences) else None,
                "rank_biserial": rank_biserial(differences) if len(differences) else None}
        if len(prompts) < MIN_PAIRED or not np.any(differences):
            pair["note"] = (f"{n}: too few for a Wilcoxon test (needs {MIN_PAIRED})"
                            if len(prompts) < MIN_PAIRED else "no variation: the two settings "
                            f"have the same value for each of the {len(prompts)} {unit}")
            raw.append(float("nan"))
        else:
            statistic, p_value = rank_tests.wilcoxon(matrix[:, a], matrix[:, b])
            pair["statistic"], pair["p"] = statistic, p_value
            raw.append(p_value)
        out["pairs"].append(pair)
    for pair, adjusted in zip(out["pairs"], holm(raw)):
        pair["p_holm"] = None if np.isnan(adjusted) else adjusted
        pair["significant"] = bool(pair["p_holm"] is not None and pair["p_holm"] < ALPHA)
    return out


def unpaired_tests(groups: dict[str, list[float]]) -> dict:
    """Compare independent groups (prompt sets): Kruskal-Wallis, then Mann-Whitney U pairs."""
    clean = {k: [v for v in values if np.isfinite(v)] for k, values in groups.items()}
    clean = {k: v for k, v in clean.items() if v}
    out: dict = {"groups": {k: len(v) for k, v in clean.items()}, "omnibus": None, "pairs": []}
    if len(clean) < 2:
        out["note"] = "fewer than two groups with values: nothing to compare"
        return out
    everything = np.concatenate(list(clean.values()))
    if np.ptp(everything) == 0:
        out["note"] = "all values equal: nothing to compare"
        return out
    statistic, p_value = rank_tests.kruskal(*clean.values())
    n = len(everything)
    out["omnibus"] = {"test": "kruskal", "statistic": float(statistic), "p": float(p_value),
                      "epsilon_squared": float(statistic * (n + 1) / (n * n - 1))}
    if min(len(v) for v in clean.values()) < 3:
        out["note"] = "a group has fewer than 3 prompts: treat the test as descriptive"
    raw = []
    for a, b in combinations(clean, 2):
        result = rank_tests.mann_whitney(clean[a], clean[b])
        # U counts pairs where a beats b: the effect is positive when b tends to be higher
        effect = 1 - 2 * result.statistic / (len(clean[a]) * len(clean[b]))
        out["pairs"].append({"a": a, "b": b, "statistic": float(result.statistic),
                             "p": float(result.pvalue), "rank_biserial": float(effect)})
        raw.append(float(result.pvalue))
    for pair, adjusted in zip(out["pairs"], holm(raw)):
        pair["p_holm"] = adjusted
        pair["significant"] = bool(adjusted < ALPHA)
    return out


def bradley_terry(wins: np.ndarray, prior: float = 0.0, iterations: int = 100,
                  tolerance: float = 1e-10) -> np.ndarray:
    """Bradley-Terry log-strengths (mean 0) from a win matrix, by maximum likelihood.

    wins[i, j]: how often i beat j (a tie may count half to each side). The model says
    P(i beats j) = 1 / (1 + exp(s_j - s_i)); the log-likelihood sum_ij w_ij log P(i beats j) is
    concave in s and maximised by Newton's method with a backtracking line search (the gradient
    W_i - sum_j n_ij P_ij vanishes there: each setting's expected wins equal its wins, Hunter,
    Ann. Statist. 32(1), 2004). `prior` adds that many wins each way to every compared pair; with
    0 the maximum exists only when every setting both won and lost within a connected comparison
    graph (`bt_needs_prior` says when it does not)."""
    wins = np.asarray(wins, dtype=float)
    compared = (wins + wins.T) > 0
    wins = wins + prior * compared
    if bt_needs_prior(wins):
        raise ValueError("no Bradley-Terry maximum likelihood: a setting never won or never lost "
                         "(or the comparisons are not connected); give a prior")
    games = wins + wins.T

    def loglik(s: np.ndarray) -> float:
        return float(-(wins * np.logaddexp(0, s[None, :] - s[:, None])).sum())

    s = np.zeros(len(wins))
    for _ in range(iterations):
        p = 1 / (1 + np.exp(s[None, :] - s[:, None]))  # p[i, j] = P(i beats j)
        gradient = wins.sum(axis=1) - (games * p).sum(axis=1)
        if np.max(np.abs(gradient)) < tolerance:
            break
        curvature = games * p * p.T
        hessian = curvature - np.diag(curvature.sum(axis=1))
        step = np.linalg.lstsq(hessian, -gradient, rcond=None)[0]
        rate, before = 1.0, loglik(s)
        while loglik(s + rate * step) < before and rate > 1e-6:
            rate /= 2
        s = s + rate * step
        s = s - s.mean()
    return s - s.mean()


def bt_needs_prior(wins: np.ndarray) -> bool:
    """True when the plain Bradley-Terry maximum likelihood does not exist: some setting never
    won or never lost, or the settings split into groups never compared (Ford's condition: the
    directed graph i -> j 'i beat j at least once' must be strongly connected)."""
    wins = np.asarray(wins, dtype=float)
    reach = (wins > 0) | np.eye(len(wins), dtype=bool)
    for _ in range(len(wins)):  # transitive closure
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    return not bool(reach.all())


def krippendorff_alpha(ratings: np.ndarray, level: str = "ordinal") -> float | None:
    """Krippendorff's alpha of a raters x units matrix (NaN = not rated), with the `krippendorff`
    package; None when it is undefined (fewer than two raters on every unit, or one value only)."""
    import krippendorff

    ratings = np.asarray(ratings, dtype=float)
    if ratings.ndim != 2 or ratings.shape[0] < 2:
        return None
    values = ratings[:, np.isfinite(ratings).sum(axis=0) >= 2]
    if values.shape[1] == 0 or len(np.unique(values[np.isfinite(values)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=values, level_of_measurement=level))


def spearman(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> dict:
    """Spearman's rho with its p-value and a Fisher-z confidence interval using Bonett and
    Wright's standard error sqrt((1 + rho^2 / 2) / (n - 3)) (Psychometrika 65(1), 2000)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n, "rho": None, "p": None, "ci95": [None, None],
                "note": "too few clips (needs 4) or no variation"}
    from scipy import stats

    result = stats.spearmanr(x, y)
    rho = float(result.statistic)
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt((1 + rho ** 2 / 2) / (n - 3))
    return {"n": n, "rho": rho, "p": float(result.pvalue),
            "ci95": [float(np.tanh(z - half)), float(np.tanh(z + half))]}

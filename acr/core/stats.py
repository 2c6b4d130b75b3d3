"""Statistics for a repeated-measures grid: prompts are blocks.

Samples are averaged per (setting, prompt); settings are compared on the prompts they all have
(Friedman for 3 or more settings, Wilcoxon signed-rank per pair with Holm correction, Kendall's W
and rank-biserial effect sizes); prompt sets, which hold different prompts, are compared unpaired
(Kruskal-Wallis, Mann-Whitney U per pair with Holm). Bootstrap CIs resample prompts.
Every pair is (a, b); differences and rank-biserial effects are positive when b is higher.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy import stats

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
    ranks = stats.rankdata(np.abs(d))
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
            statistic, p_value = stats.friedmanchisquare(*matrix.T)
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
            result = stats.wilcoxon(matrix[:, a], matrix[:, b])
            pair["statistic"], pair["p"] = float(result.statistic), float(result.pvalue)
            raw.append(float(result.pvalue))
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
    statistic, p_value = stats.kruskal(*clean.values())
    n = len(everything)
    out["omnibus"] = {"test": "kruskal", "statistic": float(statistic), "p": float(p_value),
                      "epsilon_squared": float(statistic * (n + 1) / (n * n - 1))}
    if min(len(v) for v in clean.values()) < 3:
        out["note"] = "a group has fewer than 3 prompts: treat the test as descriptive"
    raw = []
    for a, b in combinations(clean, 2):
        result = stats.mannwhitneyu(clean[a], clean[b], alternative="two-sided")
        # U counts pairs where a beats b: the effect is positive when b tends to be higher
        effect = 1 - 2 * result.statistic / (len(clean[a]) * len(clean[b]))
        out["pairs"].append({"a": a, "b": b, "statistic": float(result.statistic),
                             "p": float(result.pvalue), "rank_biserial": float(effect)})
        raw.append(float(result.pvalue))
    for pair, adjusted in zip(out["pairs"], holm(raw)):
        pair["p_holm"] = adjusted
        pair["significant"] = bool(adjusted < ALPHA)
    return out

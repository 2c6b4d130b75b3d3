"""Set-level metrics on clip embeddings: diversity, novelty, Fréchet distance, cosine scores.

Embeddings are MFCC and chroma statistics per clip (features.py), standardised over all clips
analysed together, so every dimension counts alike. Model embeddings (CLAP, for FAD) go through
the same `frechet_distance`.
"""
from __future__ import annotations

import numpy as np


def standardize(embeddings: np.ndarray) -> np.ndarray:
    """z-score each dimension over all rows (constant dimensions become 0)."""
    mean = embeddings.mean(axis=0)
    std = embeddings.std(axis=0)
    return (embeddings - mean) / np.where(std > 0, std, 1.0)


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    b = a if b is None else b
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def diversity(embeddings: np.ndarray) -> float:
    """Mean Euclidean distance between distinct clips of a set (NaN below 2 clips)."""
    n = len(embeddings)
    if n < 2:
        return float("nan")
    distances = pairwise_distances(embeddings)
    return float(distances[np.triu_indices(n, 1)].mean())


def novelty(embeddings: np.ndarray) -> np.ndarray:
    """Per clip: the distance to its nearest other clip (NaN for a lone clip)."""
    if len(embeddings) < 2:
        return np.full(len(embeddings), np.nan)
    distances = pairwise_distances(embeddings)
    np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)). NaN when a set has fewer than 2 rows.

    The trace of (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of the
    symmetric S_a^(1/2) S_b S_a^(1/2) (the same eigenvalues as S_a S_b): numpy's symmetric
    eigensolver, no scipy.linalg (a fifth of a second to import) and no regularisation for
    singular covariances (the FID reference's sqrtm needs it; this agrees with it to 1e-8).
    With fewer rows than dimensions the covariances are singular and the value is biased
    upwards; compare settings of equal size only."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.maximum(values, 0))) @ vectors.T
    product = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                  - 2 * np.sqrt(np.maximum(product, 0)).sum())
    return max(value, 0.0)


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays (CLAP text-audio alignment)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)

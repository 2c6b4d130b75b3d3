"""Plots of a listening test: scores (or Bradley-Terry strengths) per setting with their 95% CIs,
the A/B win matrix, and the human score's correlation with each metric."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from acr.commands.listen.design import Design
from acr.core.metrics import LABELS
from acr.core.plotting import pyplot, save_figure


def _interval(ax, names: list[str], means: list, lows: list, highs: list, xlabel: str) -> None:
    y = np.arange(len(names))
    means = np.array([np.nan if m is None else m for m in means], dtype=float)
    lows = np.array([np.nan if v is None else v for v in lows], dtype=float)
    highs = np.array([np.nan if v is None else v for v in highs], dtype=float)
    errors = np.clip(np.vstack([np.nan_to_num(means - lows), np.nan_to_num(highs - means)]), 0,
                     None)  # a percentile interval need not contain the point estimate
    ax.errorbar(means, y, xerr=errors, fmt="o", capsize=4, color="#2d6cdf")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def draw_test(design: Design, result: dict, plots_dir: Path) -> list[Path]:
    if result.get("note"):
        return []
    plt = pyplot()
    out = []
    stem = f"listening-{design.name}"
    if design.kind in ("mos", "mushra"):
        keys = [k for k in ("quality", "match", "score") if k in result]
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 0.5 * len(
            result[keys[0]]["by_prompt"]) + 1.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            rows = result[key]["by_prompt"]
            _interval(ax, list(rows), [d["mean"] for d in rows.values()],
                      [d["ci95"][0] for d in rows.values()], [d["ci95"][1] for d in rows.values()],
                      f"{key} (mean over prompts, 95% CI)")
            ax.set_xlim(*((0.8, 5.2) if design.kind == "mos" else (-3, 103)))
        fig.suptitle(f"{design.name}: human ratings per setting")
        out.append(save_figure(fig, plots_dir / f"{stem}-scores.png"))
    elif "bradley_terry" in result["ab"]:
        ab = result["ab"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.5 * len(ab["settings"]) + 2))
        bt = ab["bradley_terry"]
        _interval(left, list(bt), [b["strength"] for b in bt.values()],
                  [b["ci95"][0] for b in bt.values()], [b["ci95"][1] for b in bt.values()],
                  "Bradley-Terry strength (log scale, 95% CI)")
        wins = np.array(ab["wins"])
        image = right.imshow(wins, cmap="Blues")
        for (i, j), value in np.ndenumerate(wins):
            right.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8)
        right.set_xticks(range(len(ab["settings"])), ab["settings"], rotation=30, ha="right")
        right.set_yticks(range(len(ab["settings"])), ab["settings"])
        right.set_title("wins (row beat column)")
        fig.colorbar(image, ax=right, shrink=0.8)
        fig.suptitle(f"{design.name}: pairwise preference")
        out.append(save_figure(fig, plots_dir / f"{stem}-preference.png"))
    for score, by_metric in result.get("human_vs_metrics", {}).items():
        ranked = sorted(((m, r) for m, r in by_metric.items() if r["rho"] is not None),
                        key=lambda x: -abs(x[1]["rho"]))
        if not ranked:
            continue
        fig, ax = plt.subplots(figsize=(6, 0.32 * len(ranked) + 1.2))
        _interval(ax, [LABELS.get(m, m) for m, _ in ranked], [r["rho"] for _, r in ranked],
                  [r["ci95"][0] for _, r in ranked], [r["ci95"][1] for _, r in ranked],
                  f"Spearman's rho with human {score} (95% CI)")
        ax.axvline(0, color="#888", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        out.append(save_figure(fig, plots_dir / f"{stem}-{score}-vs-metrics.png"))
    return out

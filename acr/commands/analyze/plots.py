"""Plots for a paper: per-metric box plots with paired prompt lines, prompt set x setting
heatmaps, a spectrogram grid, a loudness panel and a metric correlation matrix (matplotlib Agg);
`draw_all` draws an analysis's set."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from acr.core.audio import finite_audio, read_clip
from acr.core.metrics import KEY_METRICS, LABELS
from acr.core.plotting import pyplot, save_figure

def box_with_pairs(metric: str, table: dict[str, dict[str, float]], path: Path) -> Path:
    """One box per setting over prompt-level values, grey lines joining the same prompt."""
    plt = pyplot()
    settings = list(table)
    fig, ax = plt.subplots(figsize=(1.4 * len(settings) + 2, 3.6))
    data = [[v for v in table[s].values() if np.isfinite(v)] for s in settings]
    ax.boxplot(data, showfliers=False, widths=0.5)
    prompts = sorted(set().union(*(table[s] for s in settings)))
    for prompt in prompts:
        ys = [table[s].get(prompt, np.nan) for s in settings]
        ax.plot(range(1, len(settings) + 1), ys, color="0.6", linewidth=0.7, alpha=0.7,
                marker="o", markersize=2.5)
    ax.set_xticks(range(1, len(settings) + 1), settings, rotation=20, ha="right")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)} by setting (lines: the same prompt)", fontsize=9)
    return save_figure(fig, path)


def heatmap(metric: str, rows: list[str], columns: list[str], values: np.ndarray,
            path: Path) -> Path:
    """Mean of `metric` per prompt set (rows) and setting (columns)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 2.5, 0.5 * len(rows) + 1.8))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for (r, c), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label=LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)}: prompt set x setting", fontsize=9)
    return save_figure(fig, path)


def spectrogram_grid(cells: dict[tuple[str, str], Path], prompts: list[str],
                     settings: list[str], path: Path) -> Path:
    """Mel spectrograms, one row per prompt and one column per setting."""
    import librosa

    plt = pyplot()
    fig, axes = plt.subplots(len(prompts), len(settings), squeeze=False,
                             figsize=(2.4 * len(settings), 1.5 * len(prompts) + 0.6))
    for r, prompt in enumerate(prompts):
        for c, setting in enumerate(settings):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            clip = cells.get((prompt, setting))
            if clip is not None:
                audio, rate = read_clip(clip)
                audio = finite_audio(audio)[0]  # a clip flagged `nan` is drawn with NaN as 0
                mel = librosa.feature.melspectrogram(y=audio.mean(axis=0), sr=rate, n_mels=64)
                ax.imshow(librosa.power_to_db(mel, ref=np.max), origin="lower", aspect="auto",
                          cmap="magma", vmin=-80, vmax=0)
            if r == 0:
                ax.set_title(setting, fontsize=8)
            if c == 0:
                ax.set_ylabel(prompt[:28], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("mel spectrograms (first sample of each prompt and setting)", fontsize=9)
    return save_figure(fig, path)


def loudness_panel(tables: dict[str, dict[str, dict[str, float]]], path: Path) -> Path:
    """Integrated loudness, true peak and loudness range by setting, side by side."""
    plt = pyplot()
    metrics = [m for m in ("loudness_lufs", "true_peak_dbtp", "lra_lu") if m in tables]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        settings = list(tables[metric])
        ax.boxplot([[v for v in tables[metric][s].values() if np.isfinite(v)] for s in settings],
                   showfliers=False)
        ax.set_xticks(range(1, len(settings) + 1), settings, rotation=25, ha="right", fontsize=8)
        ax.set_title(LABELS[metric], fontsize=9)
    return save_figure(fig, path)


def correlation_matrix(names: list[str], matrix: np.ndarray, path: Path) -> Path:
    """Spearman correlations between metrics over all clips."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 3, 0.45 * len(names) + 2.5))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(image, ax=ax, label="Spearman rho")
    ax.set_title("metric correlations (all clips)", fontsize=9)
    return save_figure(fig, path)


def draw_all(folder: Path, clips, tables, values, settings: list[str]) -> list[Path]:
    """Every plot of an analysis into `folder`; returns the files written."""
    files = []
    for metric, table in tables.items():
        if any(np.isfinite(v) for t in table.values() for v in t.values()):
            files.append(box_with_pairs(metric, table, folder / f"box-{metric}.png"))
    prompt_sets = list(dict.fromkeys(str(c.groups["prompt_set"]) for c in clips
                                     if c.groups.get("prompt_set") is not None))
    if prompt_sets:
        for metric in [m for m in KEY_METRICS if np.isfinite(values[m]).any()]:
            grid = np.full((len(prompt_sets), len(settings)), np.nan)
            for r, name in enumerate(prompt_sets):
                for c, setting in enumerate(settings):
                    cell = [v for clip, v in zip(clips, values[metric])
                            if clip.setting == setting and str(clip.groups["prompt_set"]) == name
                            and np.isfinite(v)]
                    grid[r, c] = np.mean(cell) if cell else np.nan
            files.append(heatmap(metric, prompt_sets, settings, grid,
                                 folder / f"heatmap-{metric}.png"))
    blocks = list(dict.fromkeys(c.block for c in clips))[:8]
    columns = settings[:6]
    cells = {}
    for clip in clips:
        if clip.block in blocks and clip.setting in columns:
            cells.setdefault((clip.block, clip.setting), clip.path)
    labels = {c.block: (c.groups.get("prompt") or c.block) for c in clips}
    files.append(spectrogram_grid({(labels[b], s): p for (b, s), p in cells.items()},
                                  [labels[b] for b in blocks], columns,
                                  folder / "spectrograms.png"))
    files.append(loudness_panel(tables, folder / "loudness.png"))
    usable = [m for m in values if np.nanstd(np.array(values[m], dtype=float)) > 0]
    if len(usable) >= 2 and len(clips) >= 3:
        from scipy.stats import spearmanr

        matrix = np.atleast_2d(spearmanr(np.array([values[m] for m in usable]).T,
                                         nan_policy="omit").statistic)
        files.append(correlation_matrix(usable, np.nan_to_num(matrix),
                                              folder / "correlations.png"))
    return files

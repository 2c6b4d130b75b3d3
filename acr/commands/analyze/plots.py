"""Plots for a paper, one figure per kind, drawn only where they carry information (matplotlib
Agg): per-metric box plots by setting with paired prompt lines (settings.png: two or more
settings, metrics that vary), prompt set x setting heatmaps of the key metrics (heatmaps.png:
more than one cell), a mel spectrogram grid (spectrograms.png) and a metric correlation matrix
(correlations.png: three or more clips, two or more varying metrics). `draw_all` draws an
analysis's set; `informative` says which metrics a plot can show."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from acr.commands.analyze import dsp
from acr.core.audio import finite_audio, read_clip
from acr.core.metrics import KEY_METRICS, LABELS
from acr.core.plotting import pyplot, save_figure

PANEL_COLUMNS = 4


def informative(values: list[float]) -> bool:
    """Whether a metric's values can show anything: finite ones that are not all the same."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return len(finite) > 1 and bool(np.ptp(finite) > 0)


def _grid(count: int, width: float, height: float):
    """A figure with `count` panels of width x height inches in rows of PANEL_COLUMNS, laid out
    by hand (automatic layouts draw the figure once more)."""
    plt = pyplot()
    columns = min(PANEL_COLUMNS, count)
    rows = math.ceil(count / columns)
    top, bottom = 0.75, 0.9  # inches: the titles; rotated setting names
    fig = plt.figure(figsize=(width * columns, height * rows + top + bottom))
    grid = fig.add_gridspec(rows, columns, left=0.6 / (width * columns),
                            right=1 - 0.15 / (width * columns),
                            top=1 - top / fig.get_figheight(),
                            bottom=bottom / fig.get_figheight(), wspace=0.35, hspace=0.45)
    axes: list = []
    for index in range(count):  # only the panels drawn (an axes costs time even hidden)
        axes.append(fig.add_subplot(grid[index // columns, index % columns]))
    return fig, axes, rows, columns


def settings_boxes(tables: dict[str, dict[str, dict[str, float]]], path: Path) -> Path:
    """One panel per metric: a box per setting over prompt-level values, grey lines joining the
    same prompt across settings (the settings named under the bottom panels only)."""
    from matplotlib.ticker import MaxNLocator

    settings = list(next(iter(tables.values())))
    positions = np.arange(1, len(settings) + 1)
    fig, axes, rows, columns = _grid(len(tables), 0.55 * len(settings) + 1.4, 1.9)
    for index, (ax, (metric, table)) in enumerate(zip(axes, tables.items())):
        _boxes(ax, [[v for v in table[s].values() if np.isfinite(v)] for s in settings],
               positions)
        prompts = sorted(set().union(*(table[s] for s in settings)))
        if prompts:  # every prompt's line in one artist
            ys = np.array([[table[s].get(p, np.nan) for s in settings] for p in prompts])
            gap = np.full((len(prompts), 1), np.nan)
            ax.plot(np.hstack([np.broadcast_to(positions, ys.shape), gap]).ravel(),
                    np.hstack([ys, gap]).ravel(), color="0.6", linewidth=0.6, alpha=0.7)
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=7, length=2)
        ax.set_title(LABELS.get(metric, metric), fontsize=8, y=1.0)  # y: no auto placement
        if index >= len(tables) - columns:  # the lowest panel of its column
            ax.set_xticks(positions, settings, rotation=30, ha="right")
        else:  # the same positions: no ticks above the lowest panel (each tick costs time)
            ax.set_xticks([])
    fig.suptitle("by setting (boxes over prompts; grey lines join the same prompt)", fontsize=9)
    return save_figure(fig, path, dpi=100, tight=False)


def _boxes(ax, groups: list[list[float]], positions: np.ndarray, width: float = 0.5) -> None:
    """Box plots without caps or outliers (matplotlib's boxplot statistics: quartiles,
    whiskers to the furthest value within 1.5 IQR) as two artists, not five per box: an axes
    of many boxes draws several times faster. An empty group gets no box."""
    from matplotlib.cbook import boxplot_stats

    outlines, medians = [], []
    half = width / 2
    for x, values in zip(positions, groups):
        if not values:
            continue
        box = boxplot_stats(values)[0]
        left, right = x - half, x + half
        outlines += [(left, box["q1"]), (right, box["q1"]), (right, box["q3"]), (left, box["q3"]),
                     (left, box["q1"]), (np.nan, np.nan), (x, box["q1"]), (x, box["whislo"]),
                     (np.nan, np.nan), (x, box["q3"]), (x, box["whishi"]), (np.nan, np.nan)]
        medians += [(left, box["med"]), (right, box["med"]), (np.nan, np.nan)]
    if outlines:
        ax.plot(*np.array(outlines).T, color="black", linewidth=1.0)
        ax.plot(*np.array(medians).T, color="C1", linewidth=1.0)
    ax.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)


def heatmaps(grids: dict[str, np.ndarray], rows: list[str], columns: list[str],
             path: Path) -> Path:
    """One panel per metric: its mean per prompt set (rows) and setting (columns), written in
    each cell."""
    fig, axes, _, _ = _grid(len(grids), 0.6 * len(columns) + 1.3, 0.3 * len(rows) + 0.9)
    for ax, (metric, values) in zip(axes, grids.items()):
        ax.imshow(values, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.tick_params(labelsize=7, length=0)
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=6,
                        color="white")
        ax.set_title(LABELS.get(metric, metric), fontsize=8, y=1.0)  # y: no auto placement
    fig.suptitle("prompt set x setting (means)", fontsize=9)
    return save_figure(fig, path, dpi=100, tight=False)


def mel_image(path: Path) -> np.ndarray:
    """A clip's spectrogram grid cell, read from its file (dsp.mel_thumbnail; NaN read as 0)."""
    audio, rate = read_clip(path)
    power = dsp.power_spectrogram(finite_audio(audio)[0].mean(axis=0),
                                  dsp.hann(dsp.N_FFT).astype(np.float32), hop=dsp.N_FFT)
    return dsp.mel_thumbnail(power, rate)


def spectrogram_grid(cells: dict[tuple[str, str], np.ndarray], prompts: list[str],
                     settings: list[str], path: Path) -> Path:
    """Mel spectrograms, one row per prompt and one column per setting: one image (the cells
    resampled to a common width, a thin gap between them) in one axes."""
    plt = pyplot()
    width, gap = 160, 4  # columns of a cell, and between cells
    height = dsp.THUMBNAIL_MELS
    canvas = np.full((len(prompts) * (height + gap), len(settings) * (width + gap)), np.nan)
    for r, prompt in enumerate(prompts):
        for c, setting in enumerate(settings):
            image = cells.get((prompt, setting))
            if image is None or image.shape[1] == 0:
                continue
            columns = np.linspace(0, image.shape[1] - 1, width).round().astype(int)
            top = (len(prompts) - 1 - r) * (height + gap)  # the first prompt at the top
            canvas[top:top + height, c * (width + gap):c * (width + gap) + width] = \
                image[:, columns]
    fig, ax = plt.subplots(figsize=(1.9 * len(settings) + 1.6, 0.75 * len(prompts) + 0.9))
    fig.subplots_adjust(left=1.5 / fig.get_figwidth(), right=0.98, bottom=0.1 / fig.get_figheight(),
                        top=1 - 0.7 / fig.get_figheight())
    ax.imshow(canvas, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
              interpolation="nearest")
    ax.set_xticks([c * (width + gap) + width / 2 for c in range(len(settings))], settings)
    ax.xaxis.tick_top()
    ax.set_yticks([(len(prompts) - 1 - r) * (height + gap) + height / 2
                   for r in range(len(prompts))], [p[:28] for p in prompts])
    ax.tick_params(labelsize=7, length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle("mel spectrograms (first sample of each prompt and setting)", fontsize=9)
    return save_figure(fig, path, dpi=100, tight=False)


def correlation_matrix(names: list[str], matrix: np.ndarray, path: Path) -> Path:
    """Spearman correlations between metrics over all clips."""
    plt = pyplot()
    side = 0.3 * len(names)  # inches: the matrix
    margin = 0.06 * max(len(n) for n in names) + 0.3  # inches: the names (7 pt)
    width, height = margin + side + 1.3, margin + side + 0.5  # + colour bar; + title
    fig = plt.figure(figsize=(width, height))  # laid out by hand: drawn once, not twice
    ax = fig.add_axes((margin / width, margin / height, side / width, side / height))
    bar = fig.add_axes(((margin + side + 0.15) / width, margin / height, 0.15 / width,
                        side / height))
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(image, cax=bar, label="Spearman rho")
    ax.set_title("metric correlations (all clips)", fontsize=9)
    return save_figure(fig, path, tight=False)


def spectrograms(cells: dict[tuple[str, str], tuple[Path, np.ndarray | None]],
                 prompts: list[str], settings: list[str], path: Path) -> Path:
    """The spectrogram grid of these clips ((prompt, setting) -> (file, its cell image if the
    features already made it, else None: read from the file))."""
    return spectrogram_grid({cell: image if image is not None else mel_image(clip)
                             for cell, (clip, image) in cells.items()}, prompts, settings, path)


def plan(folder: Path, clips, tables, values, settings: list[str],
         thumbnails: dict[Path, np.ndarray] | None = None) -> list[tuple]:
    """Every informative plot of an analysis as (function, arguments) to draw it into `folder`
    (each returns the file it wrote): jobs that worker processes can share. `thumbnails`:
    spectrogram grid cells the features made, by clip file."""
    jobs: list[tuple] = []
    varying = [m for m in tables if informative(values[m])]
    if len(settings) > 1 and varying:
        jobs.append((settings_boxes, ({m: tables[m] for m in varying}, folder / "settings.png")))
    prompt_sets = list(dict.fromkeys(str(c.groups["prompt_set"]) for c in clips
                                     if c.groups.get("prompt_set") is not None))
    if prompt_sets and len(prompt_sets) * len(settings) > 1:
        grids = {}
        for metric in [m for m in KEY_METRICS if m in varying]:
            grid = np.full((len(prompt_sets), len(settings)), np.nan)
            for r, name in enumerate(prompt_sets):
                for c, setting in enumerate(settings):
                    cell = [v for clip, v in zip(clips, values[metric])
                            if clip.setting == setting and str(clip.groups["prompt_set"]) == name
                            and np.isfinite(v)]
                    grid[r, c] = np.mean(cell) if cell else np.nan
            grids[metric] = grid
        if grids:
            jobs.append((heatmaps, (grids, prompt_sets, settings, folder / "heatmaps.png")))
    cells, blocks, columns = spectrogram_clips(clips, settings)
    labels = {c.block: (c.groups.get("prompt") or c.block) for c in clips}
    thumbnails = thumbnails or {}
    jobs.append((spectrograms, ({(labels[b], s): (p, thumbnails.get(p))
                                 for (b, s), p in cells.items()},
                                [labels[b] for b in blocks], columns,
                                folder / "spectrograms.png")))
    if len(varying) >= 2 and len(clips) >= 3:
        from acr.core.rank_tests import spearman_matrix

        matrix = spearman_matrix(np.array([values[m] for m in varying]).T)
        jobs.append((correlation_matrix, (varying, np.nan_to_num(matrix),
                                          folder / "correlations.png")))
    return jobs


def draw_all(folder: Path, clips, tables, values, settings: list[str]) -> list[Path]:
    """Every informative plot of an analysis into `folder`, here; returns the files written."""
    return [function(*arguments) for function, arguments in
            plan(folder, clips, tables, values, settings)]


def spectrogram_clips(clips, settings: list[str]
                      ) -> tuple[dict[tuple[str, str], Path], list[str], list[str]]:
    """The spectrogram grid's clips: (block, setting) -> the first clip's path, for the first
    8 blocks and 6 settings; and those blocks and settings."""
    blocks = list(dict.fromkeys(c.block for c in clips))[:8]
    columns = settings[:6]
    cells: dict[tuple[str, str], Path] = {}
    for clip in clips:
        if clip.block in blocks and clip.setting in columns:
            cells.setdefault((clip.block, clip.setting), clip.path)
    return cells, blocks, columns

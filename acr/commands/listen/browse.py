"""`acr listen browse`: a non-blind run browser, RUN/listening/browse/index.html: a grid of
players, prompt x setting, each clip with its spectrogram and key metrics (from
RUN/analysis/metrics.csv when `acr analyze` has run), to audition a run before choosing what to
test. Players point at the run's own samples/ (a FLAC source follows each WAV, so the page also
plays in a package exported with --audio-format flac); nothing is copied but the spectrograms."""
from __future__ import annotations

import csv
import hashlib
import html
from pathlib import Path
from urllib.parse import quote

import numpy as np

from acr.commands.listen.clips import RunClip, run_clips
from acr.commands.listen.design import BROWSER
from acr.commands.listen.page import CSS
from acr.core.metrics import KEY_METRICS, LABELS, format_value
from acr.core.plotting import pyplot, save_figure
from acr.core.runs import ANALYSIS, LISTENING, write_atomic

SHOWN = KEY_METRICS + ["clap_score"]
N_FFT, HOP = 1024, 256


def read_metrics(run_dir: Path) -> dict[str, dict]:
    """metrics.csv of the run's analysis by clip path (empty when there is none)."""
    path = Path(run_dir) / ANALYSIS / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def spectrogram_png(audio: Path, target: Path) -> bool:
    """A small log-magnitude spectrogram of the clip (mono mix); False if it is unreadable."""
    import soundfile as sf
    from scipy import signal

    try:
        data, rate = sf.read(str(audio), dtype="float32", always_2d=True)
    except Exception:
        return False
    if len(data) < N_FFT:
        return False
    freqs, times, power = signal.spectrogram(data.mean(axis=1), fs=rate, nperseg=N_FFT,
                                             noverlap=N_FFT - HOP, mode="magnitude")
    level = 20 * np.log10(power + 1e-9)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.0, 1.2))
    ax.pcolormesh(times, freqs / 1000, level, shading="auto", cmap="magma",
                  vmin=level.max() - 80, vmax=level.max())
    ax.set_ylabel("kHz", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("s", fontsize=7)
    save_figure(fig, target, dpi=80)
    return True


def _cell(clip: RunClip, metrics: dict, picture: str | None) -> str:
    source = "../../" + quote(clip.rel)
    flac = source[: -len(Path(clip.rel).suffix)] + ".flac"
    rows = "".join(f"<tr><th>{html.escape(LABELS.get(m, m.replace('_', ' ')))}</th>"
                   f"<td>{html.escape(format_value(_number(metrics.get(m))))}</td></tr>"
                   for m in SHOWN if metrics.get(m) not in (None, ""))
    image = f'<img src="{picture}" alt="spectrogram of {html.escape(clip.rel)}">' \
        if picture else "<p>(no spectrogram)</p>"
    return (f'<figure><figcaption>sample {clip.sample_index} &middot; '
            f'<code>{html.escape(clip.rel)}</code></figcaption>'
            f'<audio controls preload="none"><source src="{source}">'
            f'<source src="{flac}" type="audio/flac"></audio>{image}'
            + (f'<table class="metrics">{rows}</table>' if rows else "") + "</figure>")


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def build_browser(run_dir: Path) -> Path:
    """Write the run browser; returns its index.html."""
    run_dir = Path(run_dir)
    clips = run_clips(run_dir)
    metrics = read_metrics(run_dir)
    folder = run_dir / LISTENING / BROWSER
    settings = list(dict.fromkeys(c.setting for c in clips))
    blocks: dict[str, dict[str, list[RunClip]]] = {}
    for clip in clips:
        blocks.setdefault(clip.block, {}).setdefault(clip.setting, []).append(clip)
    pictures = {}
    for clip in clips:
        name = hashlib.sha256(clip.rel.encode()).hexdigest()[:16] + ".png"
        if spectrogram_png(run_dir / clip.rel, folder / "spectrograms" / name):
            pictures[clip.rel] = f"spectrograms/{name}"
    head = "".join(f"<th>{html.escape(s)}</th>" for s in settings)
    body = []
    for block, by_setting in blocks.items():
        first = next(iter(by_setting.values()))[0]
        title = html.escape(first.prompt or block)
        cells = "".join("<td>" + "".join(_cell(c, metrics.get(c.rel, {}), pictures.get(c.rel))
                                         for c in by_setting.get(s, [])) + "</td>"
                        for s in settings)
        body.append(f'<tr><th class="prompt-cell">{title}<br><small>{html.escape(block)}'
                    f"</small></th>{cells}</tr>")
    note = "Metrics from analysis/metrics.csv." if metrics else \
        "No metrics yet: run <code>acr analyze</code> on the run, then rebuild this page."
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Run browser: {html.escape(run_dir.name)}</title>
<style>{CSS}
main {{ max-width: none; margin: 1rem; }}
table.grid {{ border-collapse: collapse; }}
table.grid > tbody > tr > td, table.grid > thead > tr > th, .prompt-cell {{
  border: 1px solid #ddd; padding: .5rem; vertical-align: top; }}
figure {{ margin: 0 0 .8rem 0; }} figcaption {{ font-size: .75rem; color: #555; }}
table.metrics {{ font-size: .75rem; }} table.metrics th {{ text-align: left; font-weight: 400;
  color: #555; padding-right: .6rem; }}
img {{ display: block; }}
</style></head>
<body><main>
<h1>Run browser: {html.escape(run_dir.name)}</h1>
<p>Not blind: settings and files are named. {len(clips)} clips, {len(blocks)} prompts,
{len(settings)} settings. {note}</p>
<table class="grid"><thead><tr><th>prompt</th>{head}</tr></thead>
<tbody>{''.join(body)}</tbody></table>
</main></body></html>
"""
    write_atomic(folder / "index.html", page)
    return folder / "index.html"

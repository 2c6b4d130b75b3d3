"""The vocabulary of analysis results, for every command that reads them (analyze writes them;
export, and anything comparing runs, reads summary.json): metric labels, the key metrics, and
their table in Markdown."""
from __future__ import annotations

# the metrics of the terminal table, the heatmaps and the report and package tables
KEY_METRICS = ["loudness_lufs", "spectral_centroid_hz", "spectral_flatness", "onset_rate_hz",
               "tempo_bpm", "repetition"]
LABELS = {"loudness_lufs": "integrated loudness (LUFS)", "true_peak_dbtp": "true peak (dBTP)",
          "plr_db": "peak-to-loudness ratio (dB)", "lra_lu": "loudness range (LU)",
          "crest_factor_db": "crest factor (dB)", "clipping_ratio": "clipping ratio",
          "silence_ratio": "silence ratio", "spectral_centroid_hz": "spectral centroid (Hz)",
          "spectral_bandwidth_hz": "spectral bandwidth (Hz)",
          "spectral_rolloff_hz": "spectral rolloff (Hz)", "spectral_flatness": "spectral flatness",
          "onset_rate_hz": "onset rate (1/s)", "tempo_bpm": "tempo (BPM)",
          "key_strength": "key strength (r)", "repetition": "repetition",
          "coherence": "coherence", "novelty": "novelty"}


def format_value(value, digits: int = 3) -> str:
    """A number for a table: 3 significant digits; None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines (with a blank line after it)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def key_metric_table(summary: dict) -> list[str]:
    """Markdown table: mean [95% CI] of the key metrics for every setting of an analysis
    (summary.json as acr analyze writes it)."""
    rows = []
    for setting in summary["analysed"]["settings"]:
        row = [setting]
        for metric in KEY_METRICS:
            d = summary["groups"][setting][metric]
            ci = d["ci95"]
            row.append("-" if d["mean"] is None else f"{format_value(d['mean'])} "
                       f"[{format_value(ci[0])}, {format_value(ci[1])}]")
        rows.append(row)
    return markdown_table(["setting", *[LABELS[m] for m in KEY_METRICS]], rows)


def baseline_means(summary: dict) -> tuple[str | None, dict]:
    """(the baseline setting, its key metric means) of an analysis (summary.json as acr analyze
    writes it); (None, {}) when it names no analysed baseline."""
    groups = summary.get("groups") or {}
    base = (summary.get("analysed") or {}).get("baseline")
    if base not in groups:
        return None, {}
    return base, {m: (groups[base].get(m) or {}).get("mean") for m in KEY_METRICS}

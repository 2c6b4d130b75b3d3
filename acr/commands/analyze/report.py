"""report.md: what was analysed, the tables, significant differences in words, the plots, the
run's findings. Pure formatting of summary.json's content."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from acr.core import console
from acr.core.metrics import (KEY_METRICS, LABELS, format_value, key_metric_table,
                              markdown_table)


def p_text(value, name: str = "p") -> str:
    """'p = 0.012', 'p < 0.001' (or 'Holm p < 0.001' with name='Holm p')."""
    if value is None or not np.isfinite(value):
        return f"{name} = -"
    return f"{name} < 0.001" if value < 0.001 else f"{name} = {value:.3f}"


def difference_lines(metric: str, result: dict, unit: str) -> list[str]:
    """report.md lines for one metric's comparison of settings (`unit`: what the blocks are)."""
    label = LABELS.get(metric, metric)
    lines = []
    omnibus = result.get("omnibus")
    if omnibus and "p" in omnibus:
        verdict = "differ" if omnibus["p"] < 0.05 else "do not differ significantly"
        lines.append(f"- **{label}**: the settings {verdict} (Friedman chi2 = "
                     f"{omnibus['statistic']:.2f}, {p_text(omnibus['p'])}, Kendall's W = "
                     f"{omnibus['kendall_w']:.2f}, n = {omnibus['n']} {unit}).")
    elif omnibus and "note" in omnibus:
        lines.append(f"- **{label}**: {omnibus['note']}.")
    significant = [p for p in result.get("pairs", []) if p.get("significant")]
    for pair in significant:
        direction = "higher" if pair["median_difference"] > 0 else "lower"
        lines.append(f"  - {pair['b']} is {direction} than {pair['a']} (median difference "
                     f"{pair['median_difference']:+.3g}, rank-biserial "
                     f"{pair['rank_biserial']:+.2f}, {p_text(pair['p_holm'], 'Holm p')}).")
    notes = {p["note"] for p in result.get("pairs", []) if p.get("note")}
    if not significant and not omnibus and notes:
        lines.append(f"- **{label}**: {sorted(notes)[0]}.")
    return lines


def counts_line(info: dict) -> str:
    """What was analysed: "7 clips (7 analysed, 0 cached), 1 file skipped"."""
    skipped = info["skipped"]
    return (f"{info['clips']} clip{'s' * (info['clips'] != 1)} ({info['computed']} analysed, "
            f"{info['cached']} cached)" + (f", {skipped} file{'s' * (skipped != 1)} skipped"
                                            if skipped else ""))


def render(summary: dict, plots: list[Path], findings: list[dict], out_dir: Path,
           listening: list[str] | None = None) -> str:
    """report.md; `listening`: the listening tests' section (acr.commands.listen), if any."""
    info = summary["analysed"]
    settings = info["settings"]
    unit = info["blocks"]
    skipped = info["skipped"]
    compared = len(settings) > 1
    lines = [f"# Analysis of `{info['path']}`", "",
             (f"{info['clips']} clips in {len(settings)} settings ({', '.join(settings)}); "
              f"baseline: `{info['baseline']}`" if compared else
              f"{info['clips']} clips in one group (`{settings[0]}`)")
             + (f"; reference: `{info['reference']}`" if info["reference"] else "") + ". "
             f"{info['computed']} analysed now, {info['cached']} from the cache"
             + (f"; {skipped} unreadable file{'s' * (skipped != 1)} skipped" if skipped else "")
             + f". Metric version {info['metric_version']}; written "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `acr analyze`.", "",
             "Samples are averaged per prompt first (prompts are the blocks of the design); "
             "means come with 95% bootstrap confidence intervals over prompts."
             if unit == "prompts" else
             "These clips have no prompts, so each clip counts once; means come with 95% "
             "bootstrap confidence intervals over clips.", "",
             "## Key metrics by setting", ""]
    lines += key_metric_table(summary)

    lines += ["## Differences between settings", ""]
    if compared:
        lines += [f"Friedman test over {unit}, then Wilcoxon signed-rank tests for every pair "
                  "of settings with Holm correction; only significant pairs (Holm p < 0.05) are "
                  "listed." if len(settings) > 2 else f"Wilcoxon signed-rank test over {unit}; "
                  "the difference is listed when significant (p < 0.05).", ""]
        any_difference = False
        for metric, result in summary["tests"].items():
            text = difference_lines(metric, result["settings"], unit)
            any_difference |= any("differ (" in t or t.startswith("  -") for t in text)
            lines += text
        if not any_difference:
            lines.append("No significant differences between settings.")
    else:
        lines.append(f"One setting (`{settings[0]}`): nothing to compare.")
    lines.append("")

    prompt_set_lines = []
    for metric, result in summary["tests"].items():
        unpaired = result.get("prompt_sets")
        if unpaired and unpaired.get("omnibus") and unpaired["omnibus"]["p"] < 0.05:
            o = unpaired["omnibus"]
            prompt_set_lines.append(f"- **{LABELS.get(metric, metric)}** differs between prompt "
                                    f"sets (Kruskal-Wallis H = {o['statistic']:.2f}, "
                                    f"{p_text(o['p'])}, epsilon^2 = "
                                    f"{o['epsilon_squared']:.2f}).")
    if prompt_set_lines:
        lines += ["## Differences between prompt sets", "", *prompt_set_lines, ""]

    lines += ["## Set-level metrics", "",
              "Embeddings: MFCC and chroma statistics per clip, standardised. Diversity: mean "
              "pairwise distance within the setting; novelty: mean distance to the nearest other "
              "clip; Fréchet distance to the reference (or the baseline setting).", ""]
    lines += markdown_table(["setting", "clips", "diversity", "novelty", "Fréchet distance", "to"],
                    [[s, str(v["clips"]), format_value(v["diversity"]), format_value(v["novelty_mean"]),
                      format_value(v["frechet_distance"]), v["frechet_to"]]
                     for s, v in summary["sets"].items()])
    if summary["keys"]:
        lines += ["## Keys", ""]
        lines += markdown_table(["setting", "most common key", "share", "distinct keys"],
                        [[s, k["most_common"], f"{k['share']:.0%}", str(k["distinct"])]
                         for s, k in summary["keys"].items()])
    model = summary["model_based"]
    lines += ["## Model-based metrics", ""]
    if model["status"] == "ok":
        scored = model.get("clap_scores")
        lines += [f"Fréchet distance of CLAP audio embeddings (FAD, `{model['model']}`) to "
                  f"{'the reference' if model['fad_to'] == 'reference' else model['fad_to']}"
                  + ("; CLAP score: cosine similarity of each clip to its prompt." if scored
                     else "; no CLAP scores (the clips have no prompts)."), ""]
        lines += markdown_table(["setting", "FAD", *(["mean CLAP score"] if scored else [])],
                                [[s, format_value(v), *([format_value(
                                    summary["groups"][s]["clap_score"]["mean"])] if scored
                                    else [])] for s, v in model["fad"].items()])
    else:
        lines += [f"CLAP alignment and FAD: {model['status']} ({model.get('reason', '')}).", ""]
    if summary["flags"] or summary["skipped"]:
        lines += ["## Flags and skipped files", ""]
        for flag, paths in summary["flags"].items():
            lines.append(f"- {flag}: {', '.join(f'`{p}`' for p in paths)}")
        for item in summary["skipped"]:
            lines.append(f"- skipped `{item['path']}`: {item['reason']}")
        lines.append("")
    if findings:
        lines += ["## Findings", ""]
        for finding in findings:
            lines.append(f"- **{finding.get('title', '')}**: {finding.get('description', '')}")
        lines.append("")
    lines += listening or []
    lines += ["## Plots", ""]
    for plot in plots:
        rel = plot.relative_to(out_dir).as_posix()
        lines += [f"![{plot.stem}]({rel})", ""]
    return "\n".join(lines)


def metrics_csv(rows: list[dict]) -> str:
    """metrics.csv: one row per clip; NaN and None become empty cells."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not np.isfinite(v) else
                             "" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


# terminal column: (short header, number format)
SHORT = {"loudness_lufs": ("LUFS", ".1f"), "spectral_centroid_hz": ("centroid Hz", ".0f"),
         "spectral_flatness": ("flatness", ".2g"), "onset_rate_hz": ("onsets/s", ".1f"),
         "tempo_bpm": ("BPM", ".0f"), "repetition": ("repetition", ".2f")}


def terminal_table(summary: dict, settings: list[str], base: str) -> None:
    """Key metrics per setting: mean ± half the 95% CI; * = differs from the baseline."""
    unit = summary["analysed"]["blocks"]
    rows = []
    for setting in settings:
        row = [setting]
        for metric in KEY_METRICS:
            d = summary["groups"][setting][metric]
            if d["mean"] is None:
                row.append("-")
                continue
            mark = ""
            for pair in summary["tests"][metric]["settings"]["pairs"]:
                if {pair["a"], pair["b"]} == {base, setting} and pair.get("significant"):
                    mark = "*"
            low, high = d["ci95"]
            form = SHORT[metric][1]
            spread = f"±{(high - low) / 2:{form}}" if low is not None and np.isfinite(low) else ""
            row.append(f"{d['mean']:{form}}{spread}{mark}")
        rows.append(row)
    title = f"mean ± 95% CI (over {unit})" + (
        f"; * differs from {base} (Holm p < 0.05)" if len(settings) > 1 else "")
    console.table(title, ["setting", *[SHORT[m][0] for m in KEY_METRICS]], rows)


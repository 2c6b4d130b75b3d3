"""report.md: what was analysed, the tables, significant differences in words, the plots, the
run's findings. Pure formatting of summary.json's content."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from acr.analysis.features import KEY_METRICS
from acr.analysis.plots import LABELS


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _p(value) -> str:
    return "-" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def key_metric_table(summary: dict) -> list[str]:
    """Markdown table: mean [95% CI] of the key metrics for every setting of an analysis."""
    rows = []
    for setting in summary["analysed"]["settings"]:
        row = [setting]
        for metric in KEY_METRICS:
            d = summary["groups"][setting][metric]
            ci = d["ci95"]
            row.append("-" if d["mean"] is None else f"{_fmt(d['mean'])} "
                       f"[{_fmt(ci[0])}, {_fmt(ci[1])}]")
        rows.append(row)
    return _table(["setting", *[LABELS[m] for m in KEY_METRICS]], rows)


def _differences(metric: str, result: dict) -> list[str]:
    label = LABELS.get(metric, metric)
    lines = []
    omnibus = result.get("omnibus")
    if omnibus and "p" in omnibus:
        verdict = "differ" if omnibus["p"] < 0.05 else "do not differ significantly"
        lines.append(f"- **{label}**: the settings {verdict} (Friedman chi2 = "
                     f"{omnibus['statistic']:.2f}, p = {_p(omnibus['p'])}, Kendall's W = "
                     f"{omnibus['kendall_w']:.2f}, n = {omnibus['n']} prompts).")
    elif omnibus and "note" in omnibus:
        lines.append(f"- **{label}**: {omnibus['note']}.")
    significant = [p for p in result.get("pairs", []) if p.get("significant")]
    for pair in significant:
        direction = "higher" if pair["median_difference"] > 0 else "lower"
        lines.append(f"  - {pair['b']} is {direction} than {pair['a']} (median difference "
                     f"{pair['median_difference']:+.3g}, rank-biserial "
                     f"{pair['rank_biserial']:+.2f}, Holm p = {_p(pair['p_holm'])}).")
    notes = {p["note"] for p in result.get("pairs", []) if p.get("note")}
    if not significant and not omnibus and notes:
        lines.append(f"- **{label}**: {sorted(notes)[0]}.")
    return lines


def render(summary: dict, plots: list[Path], findings: list[dict], out_dir: Path) -> str:
    info = summary["analysed"]
    settings = info["settings"]
    lines = [f"# Analysis of `{info['path']}`", "",
             f"{info['clips']} clips in {len(settings)} setting(s) "
             f"({', '.join(settings)}); baseline: `{info['baseline']}`"
             + (f"; reference: `{info['reference']}`" if info["reference"] else "") + ". "
             f"{info['computed']} analysed now, {info['cached']} from the cache, "
             f"{info['skipped']} skipped. Metric version {info['metric_version']}; written "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `acr analyze`.", "",
             "Samples are averaged per prompt first (prompts are the blocks of the design); "
             "means come with 95% bootstrap confidence intervals over prompts.", "",
             "## Key metrics by setting", ""]
    lines += key_metric_table(summary)

    lines += ["## Differences between settings", "",
              "Friedman test over prompts, then Wilcoxon signed-rank tests for every pair of "
              "settings with Holm correction; only significant pairs (Holm p < 0.05) are "
              "listed.", ""]
    any_difference = False
    for metric, result in summary["tests"].items():
        text = _differences(metric, result["settings"])
        any_difference |= any("differ (" in t or t.startswith("  -") for t in text)
        lines += text
    if not any_difference:
        lines.append("No significant differences between settings.")
    lines.append("")

    prompt_set_lines = []
    for metric, result in summary["tests"].items():
        unpaired = result.get("prompt_sets")
        if unpaired and unpaired.get("omnibus") and unpaired["omnibus"]["p"] < 0.05:
            o = unpaired["omnibus"]
            prompt_set_lines.append(f"- **{LABELS.get(metric, metric)}** differs between prompt "
                                    f"sets (Kruskal-Wallis H = {o['statistic']:.2f}, p = "
                                    f"{_p(o['p'])}, epsilon^2 = {o['epsilon_squared']:.2f}).")
    if prompt_set_lines:
        lines += ["## Differences between prompt sets", "", *prompt_set_lines, ""]

    lines += ["## Set-level metrics", "",
              "Embeddings: MFCC and chroma statistics per clip, standardised. Diversity: mean "
              "pairwise distance within the setting; novelty: mean distance to the nearest other "
              "clip; Fréchet distance to the reference (or the baseline setting).", ""]
    lines += _table(["setting", "clips", "diversity", "novelty", "Fréchet distance", "to"],
                    [[s, str(v["clips"]), _fmt(v["diversity"]), _fmt(v["novelty_mean"]),
                      _fmt(v["frechet_distance"]), v["frechet_to"]]
                     for s, v in summary["sets"].items()])
    if summary["keys"]:
        lines += ["## Keys", ""]
        lines += _table(["setting", "most common key", "share", "distinct keys"],
                        [[s, k["most_common"], f"{k['share']:.0%}", str(k["distinct"])]
                         for s, k in summary["keys"].items()])
    model = summary["model_based"]
    lines += ["## Model-based metrics", ""]
    if model["status"] == "ok":
        lines += _table(["setting", f"FAD ({model['model']})"],
                        [[s, _fmt(v)] for s, v in model["fad"].items()])
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
    lines += ["## Plots", ""]
    for plot in plots:
        rel = plot.relative_to(out_dir).as_posix()
        lines += [f"![{plot.stem}]({rel})", ""]
    return "\n".join(lines)

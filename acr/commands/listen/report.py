"""The "Listening tests" section of report.md: pure formatting of analysis.py's results."""
from __future__ import annotations

from pathlib import Path

from acr.commands.listen.design import Design
from acr.core.metrics import LABELS, format_value, markdown_table

TITLES = {"mos": "MOS (ITU-T P.800 absolute category rating, 1-5)",
          "ab": "pairwise preference (A/B)",
          "mushra": "MUSHRA (ITU-R BS.1534, 0-100)"}
SHOWN_CORRELATIONS = 8


def p_text(value) -> str:
    return "-" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def mean_ci(d: dict) -> str:
    if d["mean"] is None:
        return "-"
    low, high = d["ci95"]
    return f"{format_value(d['mean'])} [{format_value(low)}, {format_value(high)}] (n={d['n']})"


def _screening(result: dict) -> list[str]:
    lines = [f"{result['responses']} answer file(s); {result['raters']} rater(s) included."]
    for s in result["screening"]:
        if s["excluded"]:
            lines.append(f"Excluded: {s['rater']} (`{s['file']}`): failed {s['failed']} of "
                         f"{s['checks']} attention checks.")
    for line in result["skipped_files"]:
        lines.append(f"Skipped: {line}.")
    agreement = result.get("agreement")
    if agreement:
        lines.append("Agreement: Krippendorff's alpha (ordinal) = "
                     + (f"{agreement['alpha']:.3f}" if agreement["alpha"] is not None
                        else agreement["note"])
                     + f" ({agreement['raters']} raters, {agreement['units']} units).")
    return [" ".join(lines), ""]


def _tests(section: dict, what: str) -> list[str]:
    tests = section["tests"]
    omnibus = tests.get("omnibus")
    lines = []
    if omnibus and "p" in omnibus:
        verdict = "differ" if omnibus["p"] < 0.05 else "do not differ significantly"
        lines.append(f"- {what}: the settings {verdict} (Friedman chi2 = "
                     f"{omnibus['statistic']:.2f}, p = {p_text(omnibus['p'])}, Kendall's W = "
                     f"{omnibus['kendall_w']:.2f}, n = {omnibus['n']} prompts).")
    elif omnibus:
        lines.append(f"- {what}: {omnibus['note']}.")
    for pair in tests.get("pairs", []):
        if pair.get("significant"):
            lines.append(f"  - {pair['b']} vs {pair['a']}: median difference "
                         f"{pair['median_difference']:+.3g}, Holm p = {p_text(pair['p_holm'])}.")
        elif pair.get("note") and not omnibus:
            lines.append(f"- {what}, {pair['a']} vs {pair['b']}: {pair['note']}.")
    return lines + ([""] if lines else [])


def _correlations(result: dict) -> list[str]:
    lines = []
    for score, by_metric in result.get("human_vs_metrics", {}).items():
        ranked = sorted(((m, r) for m, r in by_metric.items() if r["rho"] is not None),
                        key=lambda x: -abs(x[1]["rho"]))
        if not ranked:
            notes = {r.get("note") for r in by_metric.values()}
            lines += [f"Human {score} vs metrics: {sorted(n for n in notes if n)[0] if notes - {None} else 'no metrics'}.", ""]
            continue
        lines += [f"Human {score} vs metrics (Spearman's rho per clip, 95% CI; the "
                  f"{min(SHOWN_CORRELATIONS, len(ranked))} strongest of {len(ranked)}):", ""]
        lines += markdown_table(
            ["metric", "rho [95% CI]", "clips", "p", "Holm p"],
            [[LABELS.get(m, m), f"{r['rho']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]",
              str(r["n"]), p_text(r["p"]), p_text(r["p_holm"])]
             for m, r in ranked[:SHOWN_CORRELATIONS]])
    return lines


def render_test(design: Design, result: dict, plots: list[Path], out_dir: Path) -> list[str]:
    lines = [f"### `{design.name}`: {TITLES[design.kind]}", ""]
    lines += _screening(result)
    if result.get("note"):
        return lines + [result["note"] + ".", ""]
    if design.kind in ("mos", "mushra"):
        keys = [k for k in ("quality", "match", "score") if k in result]
        header = ["setting"]
        for key in keys:
            header += [f"{key}: mean over prompts [95% CI]", f"{key}: mean over raters [95% CI]"]
        rows = []
        for setting in result[keys[0]]["by_prompt"]:
            row = [setting]
            for key in keys:
                row += [mean_ci(result[key]["by_prompt"][setting]),
                        mean_ci(result[key]["by_rater"][setting])]
            rows.append(row)
        lines += markdown_table(header, rows)
        for key in keys:
            lines += _tests(result[key], key)
    else:
        ab = result["ab"]
        if "bradley_terry" in ab:
            lines += [f"Bradley-Terry strengths (log scale, mean 0; {ab['bt_ci']}"
                      + (f"; {ab['bt_prior']} wins each way added to every compared pair, as "
                         "some setting never won or never lost" if ab["bt_prior"] else "")
                      + "):", ""]
            lines += markdown_table(
                ["setting", "strength [95% CI]", "share of comparisons won"],
                [[s, f"{b['strength']:+.2f} [{format_value(b['ci95'][0])}, "
                     f"{format_value(b['ci95'][1])}]", f"{b['win_share']:.0%}"]
                 for s, b in ab["bradley_terry"].items()])
        lines += ["Win matrix (row beat column; a tie counts half):", ""]
        lines += markdown_table(["", *ab["settings"]],
                                [[s, *[f"{v:g}" for v in row]]
                                 for s, row in zip(ab["settings"], ab["wins"])])
        for pair in ab["pairs"]:
            lines.append(f"- {pair['a']} vs {pair['b']}: {pair['a_wins']} : {pair['b_wins']} "
                         f"({pair['ties']} ties), sign test Holm p = {p_text(pair['p_holm'])}"
                         + (" (significant)" if pair["significant"] else "") + ".")
        lines.append("")
    lines += _correlations(result)
    if plots:
        lines += [f"Plots: {', '.join(f'`{p.relative_to(out_dir).as_posix()}`' for p in plots)}.",
                  ""]
    return lines

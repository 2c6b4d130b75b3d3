"""README.md of an export package: what was run, the environment, findings, key results, plots,
and the exact commands that reproduce it; a comparison table when there are several runs."""
from __future__ import annotations

import csv
import io
import json

import yaml

from acr.core.metrics import key_metric_table

COMMANDS = {"generate": "acr generate {config}", "experiment": "acr experiment {config}",
            "finetune": "acr finetune {config}"}


def _entry(entries, name):
    return next((e.data for e in entries if e.name == name), None)


def _json(entries, name):
    data = _entry(entries, name)
    return json.loads(data) if data is not None else None


def _history(entries, prefix):
    data = _entry(entries, f"{prefix}/history.csv")
    return list(csv.DictReader(io.StringIO(data.decode()))) if data else []


def _overview(run, entries) -> dict:
    meta, prefix = run["meta"], run["prefix"]
    config = yaml.safe_load(_entry(entries, f"{prefix}/config.yaml") or b"{}") or {}
    models = config.get("models") or [config.get("model")]
    analysis = _json(entries, f"{prefix}/analysis/summary.json")
    history = _history(entries, prefix)
    count = len([e for e in entries if e.name.startswith(f"{prefix}/samples/")
                 and e.name.endswith(".json")])
    return {"prefix": prefix, "command": meta.get("command"), "status": meta.get("status"),
            "models": ", ".join(str(m) for m in models if m), "seed": meta.get("seed"),
            "config": config, "analysis": analysis, "history": history, "samples": count,
            "meta": meta}


def _fmt(value) -> str:
    if value in (None, ""):
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _comparison(overviews: list[dict]) -> list[str]:
    lines = ["## Comparison", "", "| run | command | model | seed | status | samples | "
             "loudness (LUFS) | centroid (Hz) | best valid loss |", "|" + "---|" * 9]
    for o in overviews:
        loudness = centroid = None
        if o["analysis"]:
            groups = o["analysis"]["groups"].values()
            means = [g["loudness_lufs"]["mean"] for g in groups if g["loudness_lufs"]["mean"]
                     is not None]
            loudness = sum(means) / len(means) if means else None
            means = [g["spectral_centroid_hz"]["mean"] for g in groups
                     if g["spectral_centroid_hz"]["mean"] is not None]
            centroid = sum(means) / len(means) if means else None
        valid = [float(r["valid_loss"]) for r in o["history"] if r.get("valid_loss") not in
                 ("", "nan")]
        lines.append(f"| `{o['prefix']}` | {o['command']} | {o['models']} | {o['seed']} | "
                     f"{o['status']} | {o['samples']} | {_fmt(loudness)} | {_fmt(centroid)} | "
                     f"{_fmt(min(valid)) if valid else '-'} |")
    return lines + [""]


def render_readme(runs: list[dict], entries) -> str:
    overviews = [_overview(run, entries) for run in runs]
    lines = ["# acr research package", "",
             f"{len(runs)} run(s), packaged by `acr export`. Every file is listed with its size "
             "and sha256 in `MANIFEST.json`; check the package with "
             "`acr export --verify PACKAGE.zip`.", ""]
    if len(overviews) > 1:
        lines += _comparison(overviews)
    for o in overviews:
        meta, prefix = o["meta"], o["prefix"]
        versions = meta.get("versions", {})
        argv = meta.get("argv", [])
        lines += [f"## `{prefix}`", "",
                  f"- command: `acr {' '.join(argv[1:])}`" if argv else "- command: -",
                  f"- model: {o['models']}; seed: {o['seed']}; status: {o['status']}",
                  f"- started {meta.get('started')}, ended {meta.get('ended')}",
                  f"- environment: acr {versions.get('acr')}, audiocraft "
                  f"{versions.get('audiocraft')}, torch {versions.get('torch')}, Python "
                  f"{versions.get('python')}; device {meta.get('device_name')}; "
                  f"{meta.get('torch_threads')} CPU threads; git commit "
                  f"{meta.get('git_commit') or '-'}", ""]
        findings = _json(entries, f"{prefix}/findings.json") or []
        if findings:
            lines += ["### Findings", ""] + [f"- **{f.get('title')}**: {f.get('description')}"
                                              for f in findings] + [""]
        if o["analysis"]:
            lines += ["### Key metrics (mean [95% CI over prompts])", ""]
            lines += key_metric_table(o["analysis"])
            lines += [f"Full report: [`{prefix}/analysis/report.md`]({prefix}/analysis/report.md)",
                      ""]
        if o["history"]:
            first, last = o["history"][0], o["history"][-1]
            lines += ["### Training", "",
                      f"{len(o['history'])} epochs; valid loss {_fmt(first['valid_loss'])} → "
                      f"{_fmt(last['valid_loss'])}; train loss {_fmt(first['train_loss'])} → "
                      f"{_fmt(last['train_loss'])} (`{prefix}/history.csv`).", ""]
        plots = sorted(e.name for e in entries if e.name.startswith(f"{prefix}/")
                       and e.name.endswith(".png") and ("heatmap" in e.name or "loss" in e.name
                                                         or "loudness" in e.name))
        if plots:
            lines += ["### Plots", ""] + [f"![{p.rsplit('/', 1)[-1]}]({p})" for p in plots[:8]]
            lines.append("")
        command = COMMANDS.get(o["command"], "acr {config}").format(config=f"{prefix}/config.yaml")
        lines += ["### Reproduce", "",
                  "With the same acr, audiocraft and torch versions (above) and, on the CPU, the "
                  "same number of threads, this gives byte-identical audio:", "", "```bash",
                  command, "```", "", "The config (every default filled in):", "", "```yaml",
                  (_entry(entries, f"{prefix}/config.yaml") or b"").decode().rstrip(), "```", ""]
        if o["command"] == "finetune" and any(e.name.startswith(f"{prefix}/model/")
                                              for e in entries):
            lines += ["The fine-tuned model is included: "
                      f"`acr generate --model {prefix}/model --prompt ...`, or "
                      f"`MusicGen.get_pretrained('{prefix}/model')` in plain AudioCraft.", ""]
    return "\n".join(lines)

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
INPUTS = {"data": "the training audio with its captions", "melody": "audio whose melody "
          "conditions the prompts", "audio": "the recording that is continued"}


def _json(read, name):
    data = read(name)
    return json.loads(data) if data is not None else None


def _history(read, prefix):
    data = read(f"{prefix}/history.csv")
    return list(csv.DictReader(io.StringIO(data.decode()))) if data else []


def config_inputs(value, key: str = "") -> list[tuple[str, str]]:
    """(key, path) of every input file or folder a config names (training data, melody and
    continuation audio): what a rerun needs beside the package."""
    found = []
    if isinstance(value, dict):
        for name, item in value.items():
            path = f"{key}.{name}" if key else str(name)
            if name in INPUTS and isinstance(item, str):
                found.append((path, item))
            else:
                found += config_inputs(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += config_inputs(item, f"{key}[{index}]")
    return found


def _training_files(read, prefix) -> int | None:
    """How many files the fine-tune trained on (its codes.ready event)."""
    events = read(f"{prefix}/events.jsonl") or b""
    for line in events.decode().splitlines():
        if '"codes.ready"' in line:
            try:
                return json.loads(line).get("files")
            except json.JSONDecodeError:
                return None
    return None


def _overview(run, names, read) -> dict:
    meta, prefix = run["meta"], run["prefix"]
    config = yaml.safe_load(read(f"{prefix}/config.yaml") or b"{}") or {}
    models = config.get("models") or [config.get("model")]
    analysis = _json(read, f"{prefix}/analysis/summary.json")
    history = _history(read, prefix)
    count = len([n for n in names if n.startswith(f"{prefix}/samples/") and n.endswith(".json")])
    return {"prefix": prefix, "command": meta.get("command"), "status": meta.get("status"),
            "models": ", ".join(str(m) for m in models if m), "seed": meta.get("seed"),
            "config": config, "analysis": analysis, "history": history, "samples": count,
            "meta": meta}


def _inputs(o, read) -> list[str]:
    """What a rerun needs that the package does not hold."""
    inputs = config_inputs(o["config"])
    if not inputs:
        return []
    lines = ["It reads files that are not in this package (paths as on the machine that ran "
             "it):", ""]
    for key, path in inputs:
        what = INPUTS[key.rsplit(".", 1)[-1]]
        if key == "data" and o["command"] == "finetune":
            files = _training_files(read, o["prefix"])
            what += f" ({files} audio files were used)" if files else ""
        lines.append(f"- `{key}: {path}`: {what}")
    example = next((key for key, _ in inputs if "." not in key and "[" not in key), None)
    lines += ["", "Copy them to those paths, or point the config at your copies (edit "
              f"`{o['prefix']}/config.yaml`"
              + (f", or add `--set {example}=PATH`" if example else "")
              + "; relative paths resolve against the config file's folder).", ""]
    return lines


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


def render_readme(runs: list[dict], names: list[str], read) -> str:
    """`runs`: {prefix, meta, command_line} per run; `names`: every entry of the package;
    `read(name)`: an entry's bytes as packaged (redacted), or None."""
    overviews = [_overview(run, names, read) for run in runs]
    lines = ["# acr research package", "",
             f"{len(runs)} run(s), packaged by `acr export`. Every file is listed with its size "
             "and sha256 in `MANIFEST.json`; check the package with "
             "`acr export --verify PACKAGE.zip`. Home folders appear as `~` and token-like "
             "secrets as `<redacted>`.", ""]
    if len(overviews) > 1:
        lines += _comparison(overviews)
    for run, o in zip(runs, overviews):
        meta, prefix = o["meta"], o["prefix"]
        versions = meta.get("versions", {})
        command_line = run.get("command_line")
        lines += [f"## `{prefix}`", "",
                  f"- command: `{command_line}`" if command_line else "- command: -",
                  f"- model: {o['models']}; seed: {o['seed']}; status: {o['status']}",
                  f"- started {meta.get('started')}, ended {meta.get('ended')}",
                  f"- environment: acr {versions.get('acr')}, audiocraft "
                  f"{versions.get('audiocraft')}, torch {versions.get('torch')}, Python "
                  f"{versions.get('python')}; device {meta.get('device_name')}; "
                  f"{meta.get('torch_threads')} CPU threads; git commit "
                  f"{meta.get('git_commit') or '-'}", ""]
        findings = _json(read, f"{prefix}/findings.json") or []
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
        plots = sorted(n for n in names if n.startswith(f"{prefix}/") and n.endswith(".png")
                       and ("heatmap" in n or "loss" in n or "loudness" in n))
        if plots:
            lines += ["### Plots", ""] + [f"![{p.rsplit('/', 1)[-1]}]({p})" for p in plots[:8]]
            lines.append("")
        command = COMMANDS.get(o["command"], "acr {config}").format(config=f"{prefix}/config.yaml")
        lines += ["### Reproduce", "",
                  "With the same acr, audiocraft and torch versions (above) and, on the CPU, the "
                  "same number of threads, this gives byte-identical audio:", "", "```bash",
                  command, "```", ""]
        lines += _inputs(o, read)
        lines += ["The config (every default filled in):", "", "```yaml",
                  (read(f"{prefix}/config.yaml") or b"").decode().rstrip(), "```", ""]
        if o["command"] == "finetune":
            if any(n.startswith(f"{prefix}/model/") for n in names):
                lines += ["The fine-tuned model is included: "
                          f"`acr generate --model {prefix}/model --prompt ...`, or "
                          f"`MusicGen.get_pretrained('{prefix}/model')` in plain AudioCraft.", ""]
            else:
                lines += ["The fine-tuned model is not included (export with "
                          "`--include-model` to add it).", ""]
    return "\n".join(lines)

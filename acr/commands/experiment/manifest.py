"""experiment.json (the manifest: one row per sample written, totals) and findings.json (the
findings of the config and of `acr experiment note`)."""
from __future__ import annotations

import fcntl
from pathlib import Path

from acr.commands.experiment.plan import Sample, is_done
from acr.core.config.loader import to_dict
from acr.core.config.schema import ExperimentConfig
from acr.core.errors import UsageError
from acr.core.runs import open_run, utc_now, write_json
from acr.core.safe_load import read_json

MANIFEST = "experiment.json"
FINDINGS = "findings.json"


def write_manifest(run_dir: Path, cfg: ExperimentConfig, samples: list[Sample],
                   complete: bool) -> dict:
    """experiment.json: the config summary, one row per sample written, totals."""
    rows = []
    for sample in samples:
        if not is_done(run_dir, sample):
            continue
        side = read_json((run_dir / sample.path).with_suffix(".json"))
        rows.append({"id": sample.id, "path": sample.path, "model": sample.model,
                     "parameter_set": sample.parameter_set, "prompt_set": sample.prompt_set,
                     "prompt_index": sample.prompt_index, "sample_index": sample.sample_index,
                     # the sidecar's prompt: an image item's description, which samples
                     # expanded from the config alone lack (a launched run's finishing task)
                     "prompt": side.get("prompt", sample.prompt),
                     "parameters": side["parameters"], "seed": side["seed"],
                     "duration": side["duration"], "sample_rate": side["sample_rate"],
                     "generation_seconds": side["generation_seconds"],
                     **({"image": side["image"]} if "image" in side else {})})
    audio = sum(r["duration"] for r in rows)
    generation = sum(r["generation_seconds"] for r in rows)
    manifest = {
        "name": cfg.name, "description": cfg.description, "complete": complete,
        "config": {"models": cfg.model_names, "parameter_sets": {
            k: to_dict(v) for k, v in cfg.parameter_sets.items()},
            "prompt_sets": to_dict(cfg)["prompt_sets"], "baseline": cfg.baseline_set,
            "samples_per_prompt": cfg.samples_per_prompt,
            "seed": cfg.seed},
        "findings": read_findings(run_dir),
        "samples": rows,
        "totals": {"samples": len(rows), "planned": len(samples),
                   "audio_seconds": round(audio, 3), "generation_seconds": round(generation, 3),
                   # seconds of audio per second of generation: higher is faster (the
                   # inverse of the real-time factor of audio work, wall / audio)
                   "x_real_time": round(audio / generation, 3) if generation else None},
    }
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def read_findings(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / FINDINGS
    return read_json(path) if path.is_file() else []


def write_findings(run_dir: Path, findings: list[dict]) -> None:
    write_json(Path(run_dir) / FINDINGS, findings)


def add_note(run_dir: Path, title: str, text: str) -> dict:
    """Record a finding with an experiment run (findings.json, and experiment.json if present)."""
    run = open_run(run_dir, "experiment")
    if not title.strip():
        raise UsageError("--title: must not be empty; give the finding a short title")
    finding = {"title": title, "description": text, "source": "note", "time": utc_now()}
    with open(run.dir / ".findings.lock", "a") as guard:  # serialise concurrent notes
        fcntl.flock(guard, fcntl.LOCK_EX)
        findings = [*read_findings(run.dir), finding]
        write_findings(run.dir, findings)
        manifest_path = run.dir / MANIFEST
        if manifest_path.is_file():
            manifest = read_json(manifest_path)
            write_json(manifest_path, {**manifest, "findings": findings})
    run.event("finding.added", title=title)
    return finding

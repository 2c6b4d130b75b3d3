"""`acr runs [FOLDER]`: one row per run folder below FOLDER, from its meta.json, config.yaml and
(analysed experiments) analysis/summary.json only; no torch, no audio read.

A run is a folder with a meta.json (its own samples/ etc. are not searched further). A run whose
meta.json says `running` while no process holds its lock (every command holds its run's lock to
the end) was killed: it is listed as `interrupted`, as `--resume` treats it (core.runs.
current_status). An experiment launched on a cluster is the exception while its tasks work on
it: they take the lock only for moments, so it is listed as its meta.json says (`acr
experiment status RUN` asks its jobs).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from acr.core.errors import UsageError
from acr.core.metrics import baseline_means
from acr.core.runs import ANALYSIS, STATUSES, current_status


@dataclass
class RunRow:
    """What `acr runs` shows of one run folder."""

    path: str
    name: str
    command: str
    status: str
    started: Optional[str]
    duration_s: Optional[float]
    models: list[str]
    size: str  # "36 samples", "4/10 epochs"
    device: Optional[str]
    baseline: Optional[str] = None
    metrics: dict[str, Optional[float]] = field(default_factory=dict)  # baseline's means


def find_runs(root: Path) -> list[Path]:
    """Every run folder below `root` (or `root` itself), sorted; not descending into runs or
    hidden folders."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; give the folder your runs are in "
                         "(default: experiments/)")
    found = []
    for folder, dirs, files in os.walk(root):
        if "meta.json" in files:
            found.append(Path(folder))
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)


def read_config(run_dir: Path) -> dict:
    """A run's config.yaml as plain data ({} when absent or unreadable)."""
    try:
        text = (run_dir / "config.yaml").read_text(encoding="utf-8")
        data = yaml.load(text, Loader=yaml.CSafeLoader)  # libyaml's safe loader: faster
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def parse_time(text: Any) -> Optional[dt.datetime]:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def status_of(run_dir: Path, meta: dict) -> str:
    status = current_status(run_dir, meta)
    return status if status in STATUSES else "unknown"


def models_of(config: dict) -> list[str]:
    if isinstance(config.get("hybrid"), dict) and "prompts" not in config:
        hybrid = config["hybrid"]
        return [str(m) for m in (hybrid.get("music_model"), hybrid.get("sfx_model")) if m]
    if isinstance(config.get("models"), list):
        return [str(m) for m in config["models"]]
    return [str(config["model"])] if config.get("model") else []


def size_of(command: str, config: dict, meta: dict) -> str:
    """Samples planned (generate, experiment) or epochs trained / asked for (finetune)."""
    if command == "finetune":
        done = meta.get("epochs_run")
        return f"{done if done is not None else '?'}/{config.get('epochs', '?')} epochs"
    if command == "experiment":
        prompts = sum(len(p) for p in (config.get("prompt_sets") or {}).values()
                      if isinstance(p, list))
        count = prompts * len(config.get("parameter_sets") or {}) * \
            max(1, len(models_of(config)) if not config.get("hybrid") else 1) * \
            int(config.get("samples_per_prompt") or 1)
        return f"{count} samples"
    if command == "generate":
        return f"{len(config.get('prompts') or [])} samples"
    return ""


def baseline_metrics(run_dir: Path, meta: dict) -> tuple[Optional[str], dict]:
    """The baseline setting of an analysed run and its key metric means: as the experiment
    recorded them in meta.json for the analysis/summary.json it wrote (same modification
    time), else read from summary.json (analysed again since, or by an older version)."""
    path = run_dir / ANALYSIS / "summary.json"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None, {}
    recorded = meta.get("analysis")
    if isinstance(recorded, dict) and recorded.get("summary_mtime_ns") == mtime:
        return recorded.get("baseline"), recorded.get("means") or {}
    return baseline_means(read_json_file(path))


def listed_fields(meta: dict) -> Optional[tuple[str, list[str], str]]:
    """(name, models, size) from what experiment and finetune record in meta.json for this
    listing (reading config.yaml instead costs more than everything else here); None when
    the run lacks them (generate runs, runs of older versions)."""
    if not isinstance(meta.get("run_name"), str) or not isinstance(meta.get("models"), list):
        return None
    if "planned_samples" in meta:
        return meta["run_name"], meta["models"], f"{meta['planned_samples']} samples"
    if "planned_epochs" in meta:
        done = meta.get("epochs_run")
        return meta["run_name"], meta["models"], \
            f"{done if done is not None else '?'}/{meta['planned_epochs']} epochs"
    return None


def run_row(run_dir: Path, now: dt.datetime) -> RunRow:
    meta = read_json_file(run_dir / "meta.json")
    command = str(meta.get("command") or "?")
    listed = listed_fields(meta)
    if listed is None:
        config = read_config(run_dir)
        listed = (str(config.get("name") or run_dir.parent.name), models_of(config),
                  size_of(command, config, meta))
    status = status_of(run_dir, meta)
    started, ended = parse_time(meta.get("started")), parse_time(meta.get("ended"))
    if started and not ended and status == "running":
        ended = now
    base, metrics = baseline_metrics(run_dir, meta) if command == "experiment" else (None, {})
    return RunRow(
        path=str(run_dir), name=listed[0], command=command, status=status,
        started=meta.get("started"),
        duration_s=round((ended - started).total_seconds(), 1) if started and ended else None,
        models=listed[1], size=listed[2],
        device=meta.get("device"), baseline=base, metrics=metrics)


def parse_since(text: Optional[str], now: dt.datetime) -> Optional[dt.datetime]:
    """--since: a date (2026-11-01), a UTC time (2026-11-01T12:00), or an age (30m, 12h, 7d)."""
    if text is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - dt.timedelta(**{units[text[-1]]: int(text[:-1])})
    when = parse_time(text)
    if when is None:
        raise UsageError(f"--since {text}: expected a date (2026-11-01), a time "
                         "(2026-11-01T12:00) or an age (30m, 12h, 7d, 2w)")
    return when


def list_runs(folder: Path, status: Optional[list[str]] = None,
              command: Optional[list[str]] = None, since: Optional[str] = None,
              name: Optional[str] = None) -> list[RunRow]:
    """The runs below `folder` that pass the filters, oldest first. `name` is a glob matched
    against the run's name, its folder path, name and parent folder's name."""
    for value in status or []:
        if value not in STATUSES:
            raise UsageError(f"--status {value}: use one of {', '.join(STATUSES)}")
    now = dt.datetime.now(dt.timezone.utc)
    after = parse_since(since, now)
    rows = []
    for run_dir in find_runs(folder):
        row = run_row(run_dir, now)
        if status and row.status not in status:
            continue
        if command and row.command not in command:
            continue
        if after is not None and (parse_time(row.started) or now) < after:
            continue
        if name and not (fnmatch.fnmatch(row.name, name) or
                         fnmatch.fnmatch(Path(row.path).as_posix(), name) or
                         fnmatch.fnmatch(Path(row.path).name, name) or
                         fnmatch.fnmatch(Path(row.path).parent.name, name)):
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: (r.started or "", r.path))


def rows_as_json(rows: list[RunRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)

"""The tables of `acr runs` and `acr runs compare` (console.table: drawn on a terminal, tab
separated in logs and pipes)."""
from __future__ import annotations

from typing import Any

from acr.commands.runs.compare import Comparison
from acr.commands.runs.listing import RunRow
from acr.core import console
from acr.core.metrics import KEY_METRICS, format_value

SHORT = {"loudness_lufs": "LUFS", "spectral_centroid_hz": "centroid Hz",
         "spectral_flatness": "flatness", "onset_rate_hz": "onsets/s", "tempo_bpm": "BPM",
         "repetition": "repetition"}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def show_runs(rows: list[RunRow]) -> None:
    """One row per run; the baseline's key metric means where the run was analysed."""
    columns = ["run", "name", "command", "status", "started", "duration", "model(s)", "size",
               "device", "baseline", *[SHORT[m] for m in KEY_METRICS]]
    table = [[row.path, row.name, row.command, row.status,
              (row.started or "-").replace("T", " ").rstrip("Z"), duration(row.duration_s),
              ", ".join(row.models) or "-", row.size or "-", row.device or "-",
              row.baseline or "-", *[format_value(row.metrics.get(m)) for m in KEY_METRICS]]
             for row in rows]
    console.table(f"{len(rows)} run(s)", columns, table)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return format_value(value, 4)
    return "-" if value is None else str(value)


def show_comparison(comparison: Comparison) -> None:
    names = [f"run {i + 1}" for i in range(len(comparison.runs))]
    console.table("runs", ["run", "folder"], [[n, r] for n, r in zip(names, comparison.runs)])
    if comparison.config:
        console.table("config differences", ["key", *names],
                      [[d.key, *map(cell, d.values)] for d in comparison.config])
    else:
        console.info("config: the same in every run")
    if comparison.metrics:
        console.table("shared metrics (means)", ["setting", "metric", *names],
                      [[m.setting, m.metric, *map(cell, m.values)]
                       for m in comparison.metrics])
    else:
        console.info("metrics: none shared (analyse the runs with `acr analyze RUN`)")

"""`acr runs compare RUN_A RUN_B [...]`: the runs' configs diffed key by key (every dotted key
whose value is not the same in all of them), and the metrics they share side by side per
setting (the means of analysis/summary.json, for experiments; summary.json's numbers for
fine-tunes)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from acr.commands.runs.listing import read_config, read_json_file
from acr.core.errors import UsageError
from acr.core.runs import ANALYSIS

ABSENT = "(absent)"


@dataclass
class ConfigDifference:
    key: str
    values: list[Any]  # one per run, ABSENT where a run lacks the key


@dataclass
class SharedMetric:
    setting: str  # the analysis setting; "-" for a fine-tune's summary
    metric: str
    values: list[float | None]  # one per run


@dataclass
class Comparison:
    runs: list[str]
    config: list[ConfigDifference]
    metrics: list[SharedMetric]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: value} of a config; lists stay values."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def metric_means(run_dir: Path) -> dict[tuple[str, str], float | None]:
    """(setting, metric) -> mean of an analysed run; ("-", key) -> a fine-tune's numbers."""
    summary = read_json_file(run_dir / ANALYSIS / "summary.json")
    out: dict[tuple[str, str], float | None] = {}
    for setting, metrics in (summary.get("groups") or {}).items():
        for metric, stats in metrics.items():
            if isinstance(stats, dict) and "mean" in stats:
                out[(setting, metric)] = stats["mean"]
    finetune = read_json_file(run_dir / "summary.json")
    for key, value in finetune.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[("-", key)] = value
    return out


def compare_runs(run_dirs: list[Path]) -> Comparison:
    """Compare two or more run folders (UsageError naming one that is not a run)."""
    if len(run_dirs) < 2:
        raise UsageError("acr runs compare: give two or more run folders")
    for run_dir in run_dirs:
        if not (Path(run_dir) / "meta.json").is_file():
            raise UsageError(f"{run_dir}: not a run folder (no meta.json)")
    configs = [flatten(read_config(Path(d))) for d in run_dirs]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differences = [ConfigDifference(k, [c.get(k, ABSENT) for c in configs]) for k in keys
                   if any(c.get(k, ABSENT) != configs[0].get(k, ABSENT) for c in configs)]
    means = [metric_means(Path(d)) for d in run_dirs]
    shared = [k for k in means[0] if all(k in m for m in means[1:])]
    return Comparison(runs=[str(d) for d in run_dirs], config=differences,
                      metrics=[SharedMetric(s, m, [v[(s, m)] for v in means])
                               for s, m in shared])


def comparison_as_json(comparison: Comparison) -> str:
    return json.dumps(asdict(comparison), indent=2, ensure_ascii=False)

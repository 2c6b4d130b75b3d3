"""The order of an analysis's clips (found and grouped by acr.core.clips) and its tables:
an experiment run's clips follow its config's order (models, parameter sets, prompt sets, as
experiment.json or config.yaml record them), and its baseline; other folders keep the order in
which their files are found."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from acr.core.clips import Clip


@dataclass
class RunOrder:
    """An experiment config's order of models, parameter sets and prompt sets, and the baseline
    parameter set it names (None: the default rule)."""
    models: list[str]
    parameter_sets: list[str]
    prompt_sets: list[str]
    baseline: str | None = None


def read_order(root: Path) -> RunOrder | None:
    """The config order of an experiment run: from experiment.json, else from config.yaml (a run
    stopped before its manifest); None for any other folder."""
    config = None
    manifest = root / "experiment.json"
    if manifest.is_file():
        try:
            config = json.loads(manifest.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError, AttributeError):
            config = None
    if not isinstance(config, dict) and (root / "config.yaml").is_file():
        try:
            data = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            data = None
        if isinstance(data, dict):
            models = data.get("models") or ([data["model"]] if data.get("model") else
                                            ["hybrid"] if data.get("hybrid") else [])
            config = {**data, "models": models}
    if not isinstance(config, dict) or not isinstance(config.get("parameter_sets"), dict):
        return None
    baseline = config.get("baseline")
    return RunOrder([str(m) for m in config.get("models") or []],
                    [str(p) for p in config["parameter_sets"]],
                    [str(p) for p in config.get("prompt_sets") or {}],
                    baseline if isinstance(baseline, str) else None)


def in_config_order(clips: list[Clip], order: RunOrder | None) -> list[Clip]:
    """The clips sorted as the experiment's sample table is (model, parameter set, prompt set,
    prompt, sample; names the config does not hold after those it does); unchanged without an
    order."""
    if order is None:
        return clips

    def rank(names: list[str], name) -> int:
        return names.index(str(name)) if name is not None and str(name) in names else len(names)

    def number(value) -> int:
        return value if isinstance(value, int) else 1 << 30

    return sorted(clips, key=lambda c: (
        rank(order.models, c.groups["model"]), rank(order.parameter_sets,
                                                    c.groups["parameter_set"]),
        rank(order.prompt_sets, c.groups["prompt_set"]), number(c.groups["prompt_index"]),
        number(c.groups["sample_index"])))


def prompt_table(clips: list[Clip], values: list[float], settings: list[str] | None = None
                 ) -> dict[str, dict[str, float]]:
    """setting -> {block: mean over its samples} (samples aggregated to prompt level), settings
    in the given order (default: as the clips come)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for clip, value in zip(clips, values):
        if np.isfinite(value):
            sums.setdefault(clip.setting, {}).setdefault(clip.block, []).append(value)
    settings = settings or list(dict.fromkeys(c.setting for c in clips))
    return {s: {b: float(np.mean(v)) for b, v in sums.get(s, {}).items()} for s in settings}


def baseline_setting(settings: list[str], order: RunOrder | None = None) -> str:
    """The setting others are compared with: the run's named baseline parameter set (first
    model's, on a model axis), else the one named `baseline`, else the first setting."""
    for name in ([order.baseline] if order and order.baseline else []) + ["baseline"]:
        named = [s for s in settings if s.split(":")[-1] == name]
        if named:
            return named[0]
    return settings[0]

"""The clips of an analysis and their groups: audio files found under a folder, with model,
parameter set, prompt set, prompt and sample read from each clip's sidecar; a setting (the
parameter set, with the model when there are several) and a block (the prompt) per clip."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
GROUP_COLUMNS = ["model", "parameter_set", "prompt_set", "prompt_index", "sample_index", "prompt"]


@dataclass
class Clip:
    path: Path
    rel: str  # relative to the analysed folder (metrics.csv's `path`)
    groups: dict  # GROUP_COLUMNS -> value or None (from the sidecar)

    @property
    def setting(self) -> str:
        return self.groups.get("_setting") or "all"

    @property
    def block(self) -> str:
        """The repeated-measures block: the prompt (within its prompt set), else the file."""
        g = self.groups
        if g.get("prompt_set") is not None and g.get("prompt_index") is not None:
            return f"{g['prompt_set']}/{g['prompt_index']}"
        return g.get("prompt") or self.rel


def discover(root: Path, skip: Path | None = None) -> list[Clip]:
    """Audio files under `root` (not under `skip` or hidden), with groups from their sidecars."""
    clips = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file() or \
                any(part.startswith(".") for part in rel.parts) or \
                (skip is not None and path.is_relative_to(skip)):
            continue
        groups = {column: None for column in GROUP_COLUMNS}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if data.get("stem_of"):
                continue  # a stem of a hybrid mix: the mix is the clip analysed
            groups.update({c: data.get(c) for c in GROUP_COLUMNS if c in data})
        clips.append(Clip(path, rel.as_posix(), groups))
    models = {c.groups["model"] for c in clips}
    for clip in clips:  # a setting: the parameter set, with the model when there are several
        parts = [clip.groups["model"]] if len(models) > 1 else []
        parts += [clip.groups["parameter_set"]] if clip.groups["parameter_set"] else []
        if not parts and clip.groups["model"]:
            parts = [clip.groups["model"]]
        clip.groups["_setting"] = ":".join(str(p) for p in parts) or None
    return clips



def prompt_table(clips: list[Clip], values: list[float]) -> dict[str, dict[str, float]]:
    """setting -> {block: mean over its samples} (samples aggregated to prompt level)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for clip, value in zip(clips, values):
        if np.isfinite(value):
            sums.setdefault(clip.setting, {}).setdefault(clip.block, []).append(value)
    settings = list(dict.fromkeys(c.setting for c in clips))
    return {s: {b: float(np.mean(v)) for b, v in sums.get(s, {}).items()} for s in settings}


def baseline_setting(settings: list[str]) -> str:
    named = [s for s in settings if s.split(":")[-1] == "baseline"]
    return named[0] if named else settings[0]

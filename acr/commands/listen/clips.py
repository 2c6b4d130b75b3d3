"""The clips of a run that a listening test can use: audio under RUN/samples/ with the groups of
its JSON sidecar (model, parameter set, prompt set, prompt, sample). A clip's setting and block
follow `acr analyze`: the parameter set (with the model when the run has several), and the prompt
within its prompt set; a folder without sidecars is one setting, each file its own block."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from acr.core.errors import UsageError
from acr.core.runs import LISTENING  # RUN/listening/: the tests, the run browser, the responses

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


@dataclass(frozen=True)
class RunClip:
    rel: str  # path relative to the run folder (metrics.csv's `path`)
    setting: str
    block: str  # the repeated-measures block: the prompt (within its prompt set)
    prompt: str | None
    sample_index: int
    prompt_set: str | None
    prompt_index: int | None


def run_clips(run_dir: Path) -> list[RunClip]:
    """Every clip of the run (hybrid stems left out), in a stable order."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such folder; give a run folder of acr experiment or "
                         "acr generate")
    root = run_dir / "samples" if (run_dir / "samples").is_dir() else run_dir
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file() or \
                any(part.startswith(".") for part in rel.parts) or \
                rel.parts[0] in (LISTENING, "analysis"):
            continue
        side = {}
        if path.with_suffix(".json").is_file():
            try:
                side = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                side = {}
        if side.get("stem_of"):
            continue
        found.append((rel.as_posix(), side))
    if not found:
        raise UsageError(f"{run_dir}: no audio clips found (looked in "
                         f"{root.relative_to(run_dir.parent) if root != run_dir else run_dir}); "
                         "give the folder of an acr experiment or generate run")
    models = {side.get("model") for _, side in found}
    clips = []
    for rel, side in found:
        parts = [side["model"]] if len(models) > 1 and side.get("model") else []
        parts += [side["parameter_set"]] if side.get("parameter_set") else []
        if not parts and side.get("model"):
            parts = [side["model"]]
        setting = ":".join(str(p) for p in parts) or "all"
        if side.get("prompt_set") is not None and side.get("prompt_index") is not None:
            block = f"{side['prompt_set']}/{side['prompt_index']}"
        else:
            block = side.get("prompt") or rel
        clips.append(RunClip(rel=rel, setting=setting, block=block, prompt=side.get("prompt"),
                             sample_index=int(side.get("sample_index") or 0),
                             prompt_set=side.get("prompt_set"),
                             prompt_index=side.get("prompt_index")))
    return clips


def pick_settings(clips: list[RunClip], wanted: list[str] | None) -> list[RunClip]:
    """The clips of the settings asked for (all when none are named); unknown names are an error."""
    settings = list(dict.fromkeys(c.setting for c in clips))
    if not wanted:
        return clips
    unknown = [s for s in wanted if s not in settings]
    if unknown:
        raise UsageError(f"--settings: unknown setting(s) {', '.join(unknown)}; the run has "
                         f"{', '.join(settings)}")
    return [c for c in clips if c.setting in wanted]

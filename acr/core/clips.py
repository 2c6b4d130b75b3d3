"""The clips of a run folder, or of any folder of audio: the audio files below it, with the
groups each one's JSON sidecar records (model, parameter set, prompt set, prompt, sample, the
image a prompt was described from), and the two groups every comparison of acr uses:

- a setting: the parameter set, with the model when the clips come from several models;
- a block (the repeated-measures unit): the prompt within its prompt set, else the image a
  prompt was described from, else the prompt, else the file.

`acr analyze` and `acr listen` both group clips this way, so a listening test's settings and
prompts are the analysis's (listen takes only RUN/samples/ where a run has it; analyze the whole
run but NOT_CLIPS). A hybrid mix's stems are not clips: the mix is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from acr.core.runs import ANALYSIS, LISTENING
from acr.core.tracking import TRACKER_FOLDERS

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}  # what soundfile reads
GROUP_COLUMNS = ["model", "parameter_set", "prompt_set", "prompt_index", "sample_index", "prompt",
                 "image"]
# a run's top-level folders whose audio is not the run's clips: the listening tests' copies, the
# analysis, the trackers' copies
NOT_CLIPS = (LISTENING, ANALYSIS, *TRACKER_FOLDERS)


@dataclass
class Clip:
    path: Path
    rel: str  # relative to the folder searched, or to `relative_to` (metrics.csv's `path`)
    groups: dict  # GROUP_COLUMNS -> value or None (from the sidecar)

    @property
    def setting(self) -> str:
        return self.groups.get("_setting") or "all"

    @property
    def has_prompt(self) -> bool:
        g = self.groups
        return g.get("prompt") is not None or (g.get("prompt_set") is not None and
                                               g.get("prompt_index") is not None)

    @property
    def block(self) -> str:
        """The repeated-measures block: the prompt (within its prompt set), else the image a
        prompt was described from, else the prompt, else the file."""
        g = self.groups
        if g.get("prompt_set") is not None and g.get("prompt_index") is not None:
            return f"{g['prompt_set']}/{g['prompt_index']}"
        return g.get("image") or g.get("prompt") or self.rel


def _sidecar_groups(path: Path) -> dict | None:
    """A clip's groups from its sidecar (all None without one or when it is unreadable), or
    None for a hybrid mix's stem."""
    groups = {column: None for column in GROUP_COLUMNS}
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return groups
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    if data.get("stem_of"):
        return None
    groups.update({c: data.get(c) for c in GROUP_COLUMNS if c in data})
    image = data.get("image")  # an image item: its copy in the run, images/<sha>-<name>
    groups["image"] = image.get("file") if isinstance(image, dict) else None
    return groups


def discover(root: Path, skip: Path | None = None, skip_tops: tuple[str, ...] = (),
             relative_to: Path | None = None) -> list[Clip]:
    """Audio files under `root` (not under `skip`, hidden, or in a top-level folder of
    `relative_to` named in `skip_tops`), with groups from their sidecars and a setting each;
    paths named relative to `relative_to` (default: `root`)."""
    base = relative_to if relative_to is not None else root
    clips = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(base)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file() or \
                any(part.startswith(".") for part in rel.parts) or \
                (len(rel.parts) > 1 and rel.parts[0] in skip_tops) or \
                (skip is not None and path.is_relative_to(skip)):
            continue
        groups = _sidecar_groups(path)
        if groups is not None:
            clips.append(Clip(path, rel.as_posix(), groups))
    models = {c.groups["model"] for c in clips}
    for clip in clips:  # a setting: the parameter set, with the model when there are several
        model = clip.groups["model"]
        parts = [model] if len(models) > 1 and model else []
        parts += [clip.groups["parameter_set"]] if clip.groups["parameter_set"] else []
        if not parts and model:
            parts = [model]
        clip.groups["_setting"] = ":".join(str(p) for p in parts) or None
    return clips

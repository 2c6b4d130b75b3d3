"""The clips of a run that a listening test can use: audio under RUN/samples/ (else anywhere in
RUN but NOT_CLIPS: its listening tests, analysis and trackers' copies), grouped as `acr analyze`
groups them (acr.core.clips): the setting, and the block (the prompt within its prompt set); a
folder without sidecars is one setting, each file its own block."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from acr.core.clips import NOT_CLIPS, discover
from acr.core.errors import UsageError


@dataclass(frozen=True)
class RunClip:
    rel: str  # path relative to the run folder (metrics.csv's `path`)
    setting: str
    block: str  # the repeated-measures block: the prompt within its prompt set, else the
    # image a prompt was described from, else the prompt, else the file
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
    found = discover(root, skip_tops=NOT_CLIPS, relative_to=run_dir)
    if not found:
        raise UsageError(f"{run_dir}: no audio clips found (looked in "
                         f"{root.relative_to(run_dir.parent) if root != run_dir else run_dir}); "
                         "give the folder of an acr experiment or generate run")
    return [RunClip(rel=c.rel, setting=c.setting, block=c.block, prompt=c.groups["prompt"],
                    sample_index=int(c.groups["sample_index"] or 0),
                    prompt_set=c.groups["prompt_set"], prompt_index=c.groups["prompt_index"])
            for c in found]


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

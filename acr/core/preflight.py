"""Checks of a config against the world that need no model loaded (`acr validate`): the audio
files it names exist, and each explicit extend_stride is below the window of the model it runs
on, where the window is known from the model's name or folder. The run commands check the same
again, with the model loaded, before a run folder exists."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from acr.core.models import model_window


def file_problem(path: str) -> str | None:
    """Why a melody / continuation path is not a file to read (None when it is one)."""
    if not Path(path).exists():
        return "no such file; check the path (in a config, relative to the config file's folder)"
    if not Path(path).is_file():
        return "is a folder, not an audio file; give a wav, flac, ogg or mp3 file"
    return None


def config_problems(cfg: Any, kind: str, config_path: Path) -> list[str]:
    """One line per problem of a checked config (`kind`: generate | experiment | finetune)."""
    folder = Path(config_path).parent
    problems: list[str] = []

    def audio(key: str, path: str | None) -> None:
        if path:
            resolved = Path(path).expanduser()
            resolved = resolved if resolved.is_absolute() else folder / resolved
            if (problem := file_problem(str(resolved))):
                problems.append(f"{config_path}: {key}: {path}: {problem}")

    def stride(key: str, model: str, value: float | None) -> None:
        window = model_window(model) if value is not None else None
        if window is not None and value >= window:
            problems.append(f"{config_path}: {key}: {value:g} must be below the window of model "
                            f"{model!r} ({window:g} s); use a smaller value")

    if kind == "generate":
        audio("melody", cfg.melody)
        if cfg.continuation is not None:
            audio("continuation.audio", cfg.continuation.audio)
        if cfg.hybrid is None:
            stride("params.extend_stride", cfg.model, cfg.params.extend_stride)
    elif kind == "experiment":
        for name, prompts in cfg.prompt_sets.items():
            for index, prompt in enumerate(prompts):
                audio(f"prompt_sets.{name}[{index}].melody", getattr(prompt, "melody", None))
                continuation = getattr(prompt, "continuation", None)
                if continuation is not None:
                    audio(f"prompt_sets.{name}[{index}].continuation.audio", continuation.audio)
        models = [cfg.hybrid.music_model] if cfg.hybrid is not None else cfg.model_names
        for name, params in cfg.parameter_sets.items():
            for model in models:
                stride(f"parameter_sets.{name}.extend_stride", model, params.extend_stride)
    return problems

"""One batch of generation, shared by generate, experiment and finetune's samples: the model's
parameters resolved and checked, windows reported as progress, conditioning audio read, and each
clip written as a WAV with its JSON sidecar. One prompt list, one parameter set, one seed."""
from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path
from typing import Callable, Optional

import torch

from acr.core import console
from acr.core.audio import count_clipped, normalize_loudness, read_wav, write_wav
from acr.core.config.schema import GenerateConfig, GenerationParams
from acr.core.errors import UsageError
from acr.core.models import LoadedModel
from acr.core.preflight import file_problem
from acr.core.runs import write_json

DEFAULT_EXTEND_STRIDE = {"musicgen": 18.0, "audiogen": 2.0}


def resolve_params(params: GenerationParams, loaded: LoadedModel, where: str = "params"
                   ) -> GenerationParams:
    """Fill the model-dependent defaults (extend_stride) and check them against the model."""
    stride = params.extend_stride
    if stride is None:  # AudioCraft's default, or half the window for models with a short one
        stride = DEFAULT_EXTEND_STRIDE[loaded.family]
        stride = stride if stride < loaded.max_duration else loaded.max_duration / 2
    if stride >= loaded.max_duration:
        raise UsageError(f"{where}.extend_stride: {stride:g} must be below the model's window of "
                         f"{loaded.max_duration:g} s; use a smaller value (default "
                         f"{DEFAULT_EXTEND_STRIDE[loaded.family]:g})")
    return dataclasses.replace(params, extend_stride=float(stride))


def window_count(loaded: LoadedModel, params: GenerationParams) -> int:
    """Windows AudioCraft generates: the first covers the model's window, each next one
    advances extend_stride (counted in token frames, as AudioCraft does)."""
    total = int(params.duration * loaded.frame_rate)
    window = int(loaded.max_duration * loaded.frame_rate)
    stride = int(params.extend_stride * loaded.frame_rate)
    return 1 if total <= window else 1 + math.ceil((total - window) / stride)


class WindowProgress:
    """AudioCraft's progress callback, made monotonic across windows, with a report per window.

    When extending, AudioCraft restarts its count for every window at the window's offset
    (without the overlap it re-feeds as a prompt): a drop in the count marks a new window, and
    the overlap is added back so progress only moves forward."""

    def __init__(self, loaded: LoadedModel, params: GenerationParams,
                 on_progress: Optional[Callable[[int, int], None]],
                 on_window: Optional[Callable[[int, int], None]], prompt_frames: int = 0):
        self.prompt_frames = prompt_frames  # a continuation's prompt, not reported by AudioCraft
        self.overlap = int(loaded.max_duration * loaded.frame_rate) - \
            int(params.extend_stride * loaded.frame_rate)
        self.count = window_count(loaded, params)
        self.on_progress, self.on_window = on_progress, on_window
        self.index, self.last = 1, 0
        if on_window:
            on_window(1, self.count)

    def __call__(self, done: int, total: int) -> None:
        if done < self.last:
            self.index += 1
            if self.on_window:
                self.on_window(self.index, self.count)
        self.last = done
        if self.on_progress:
            self.on_progress(done + (self.overlap if self.index > 1 else self.prompt_frames),
                             total)


def generate_batch(loaded: LoadedModel, prompts: list[str], params: GenerationParams, seed: int,
                   on_progress: Optional[Callable[[int, int], None]] = None,
                   on_window: Optional[Callable[[int, int], None]] = None,
                   melody: Optional[tuple[list, int]] = None,
                   continuation: Optional[tuple[torch.Tensor, int]] = None) -> torch.Tensor:
    """Generate one batch: returns float32 [batch, channels, samples] on the CPU.

    The full parameter set is passed (AudioCraft resets any argument left out) and the global RNG
    is seeded from `seed` right before sampling, so the same call gives the same audio.
    on_progress(frames done, total) follows the whole clip; on_window(index, count) marks each
    window of a clip longer than the model's window. `melody` ([one [channels, samples] tensor
    or None per prompt], rate) conditions prompts on their melody's chroma (generate_with_chroma);
    `continuation` ([channels, samples] for every prompt, or [batch, channels, samples], rate)
    is the audio to continue (generate_continuation; the output includes it).
    """
    model = loaded.model
    model.set_generation_params(
        use_sampling=params.use_sampling, top_k=params.top_k, top_p=params.top_p,
        temperature=params.temperature, duration=params.duration, cfg_coef=params.cfg_coef,
        two_step_cfg=params.two_step_cfg, extend_stride=params.extend_stride)
    prompt_frames = int(continuation[0].shape[-1] / continuation[1] * loaded.frame_rate) \
        if continuation is not None else 0
    tracker = WindowProgress(loaded, params, on_progress, on_window, prompt_frames) \
        if on_progress or on_window else None
    model.set_custom_progress_callback(tracker)
    torch.manual_seed(seed)
    random.seed(seed)  # demucs (melody stems) shifts its input by Python's random
    try:
        with torch.inference_mode():
            # audiocraft calls the custom callback only with progress=True (else it prints)
            progress = tracker is not None
            if melody is not None:
                wav = model.generate_with_chroma(list(prompts), list(melody[0]), melody[1],
                                                 progress=progress)
            elif continuation is not None:
                prompt = continuation[0] if continuation[0].dim() == 3 else \
                    continuation[0][None].expand(len(prompts), -1, -1)
                wav = model.generate_continuation(prompt, continuation[1], list(prompts),
                                                  progress=progress)
            else:
                wav = model.generate(list(prompts), progress=progress)
    finally:
        model.set_custom_progress_callback(None)
    return wav.detach().to("cpu", torch.float32)


def read_conditioning_file(path: str, key: str) -> tuple[torch.Tensor, int]:
    """A melody or continuation file as ([channels, samples], rate); UsageError naming `key`."""
    problem = file_problem(path)
    if problem:
        raise UsageError(f"{key}: {path}: {problem}")
    try:
        return read_wav(Path(path))
    except Exception as exc:
        raise UsageError(f"{key}: {path}: cannot read it as audio ({str(exc).splitlines()[0]}); "
                         "give a wav, flac, ogg or mp3 file")


def prompt_seconds_used(requested: float, wav: torch.Tensor, rate: int, key: str) -> float:
    """The seconds of a continuation file that become the prompt: `requested`, or the whole
    file (with a warning naming `key`) when the file is shorter."""
    available = wav.shape[-1] / rate
    if requested > available:
        console.warn(f"{key}: {requested:g} s asked for, but the file holds {available:.3g} s; "
                     f"the whole file ({available:.3g} s) is the prompt")
        return available
    return requested


def conditioning_audio(cfg: GenerateConfig, loaded: LoadedModel) -> tuple:
    """(melody, continuation, sidecar record) for generate_batch, read and checked up front."""
    read = read_conditioning_file
    melody = continuation = None
    record: dict = {}
    if cfg.melody is not None:
        if not loaded.has_chroma:
            raise UsageError(f"melody: model {cfg.model!r} has no melody (chroma) conditioning; "
                             "use musicgen-melody or another melody model")
        melody = read(cfg.melody, "melody")
        record["melody"] = {"audio": cfg.melody, "seconds": round(melody[0].shape[-1] /
                                                                  melody[1], 3)}
    if cfg.continuation is not None:
        wav, rate = read(cfg.continuation.audio, "continuation.audio")
        if cfg.continuation.prompt_seconds >= cfg.params.duration:
            raise UsageError(f"continuation.prompt_seconds: {cfg.continuation.prompt_seconds:g} "
                             f"must be below params.duration ({cfg.params.duration:g} s): the "
                             "output includes the prompt")
        seconds = prompt_seconds_used(cfg.continuation.prompt_seconds, wav, rate,
                                      "continuation.prompt_seconds")
        wav = wav[:, : int(seconds * rate)]
        continuation = (wav, rate)
        record["continuation"] = {"audio": cfg.continuation.audio,
                                  "prompt_seconds": round(wav.shape[-1] / rate, 3)}
    return melody, continuation, record


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "prompt"


def write_sample(path: Path, wav: torch.Tensor, sample_rate: int, sidecar: dict,
                 sample_format: str = "pcm16", loudness_lufs: float | None = None) -> dict:
    """Write one clip and its `<name>.json` sidecar (the WAV last, so a WAV implies its sidecar).

    Returns the sidecar as written (with normalisation and clipping recorded)."""
    normalization = None
    if loudness_lufs is not None:
        wav, normalization = normalize_loudness(wav, sample_rate, loudness_lufs)
    record = {**sidecar, "sample_rate": sample_rate, "channels": int(wav.shape[0]),
              "samples": int(wav.shape[-1]), "duration": round(wav.shape[-1] / sample_rate, 6),
              "sample_format": sample_format, "normalization": normalization}
    record["clipped_samples"] = count_clipped(wav) if sample_format == "pcm16" else 0
    write_json(path.with_suffix(".json"), record)
    write_wav(path, wav, sample_rate, sample_format)
    return record

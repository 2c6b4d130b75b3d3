"""Generation engine (one batch of prompts, one parameter set, one seed) and the `acr generate`
recipe: load the model, open a run folder, generate, write WAVs with JSON sidecars, finish."""
from __future__ import annotations

import dataclasses
import math
import re
import secrets
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from acr import __version__, console
from acr.audio import count_clipped, normalize_loudness, write_wav
from acr.config import GenerateConfig, GenerationParams, dump_yaml, to_dict
from acr.errors import UsageError
from acr.models import LoadedModel, device_name, load_model
from acr.runs import Run, start_run

DEFAULT_EXTEND_STRIDE = {"musicgen": 18.0, "audiogen": 2.0}


def resolve_params(params: GenerationParams, loaded: LoadedModel, where: str = "params"
                   ) -> GenerationParams:
    """Fill the model-dependent defaults (extend_stride) and check them against the model."""
    if loaded.family == "magnet":
        raise UsageError(f"model {loaded.spec.name!r} is a MAGNeT model: it loads, but acr "
                         "generate drives MusicGen and AudioGen only (MAGNeT's parameters differ); "
                         "use a musicgen-* or audiogen-* model")
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


class _Windows:
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
    tracker = _Windows(loaded, params, on_progress, on_window, prompt_frames) \
        if on_progress or on_window else None
    model.set_custom_progress_callback(tracker)
    torch.manual_seed(seed)
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
    from acr.audio import read_wav

    try:
        return read_wav(Path(path))
    except Exception as exc:
        raise UsageError(f"{key}: {path}: cannot read it as audio ({str(exc).splitlines()[0]}); "
                         "give a wav, flac, ogg or mp3 file")


def conditioning_audio(cfg: GenerateConfig, loaded: LoadedModel) -> tuple:
    """(melody, continuation, sidecar record) for generate_batch, read and checked up front."""
    read = read_conditioning_file
    melody = continuation = None
    record: dict = {}
    if cfg.melody is not None:
        conditioners = loaded.model.lm.condition_provider.conditioners
        if "self_wav" not in conditioners:
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
        wav = wav[:, : int(cfg.continuation.prompt_seconds * rate)]
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
    from acr.runs import write_json

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


def run_generate(cfg: GenerateConfig, out: Path | None = None, argv: list[str] | None = None
                 ) -> Path:
    """The `acr generate` recipe. Returns the run folder."""
    if cfg.hybrid is not None:
        from acr.hybrid import run_hybrid

        return run_hybrid(cfg, out, argv)
    # setup: everything that can be wrong is found before the run folder exists
    loaded = load_model(cfg.model, cfg.device)
    params = resolve_params(cfg.params, loaded)
    melody, continuation, conditioning = conditioning_audio(cfg, loaded)
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    cfg = dataclasses.replace(cfg, params=params, seed=seed, device=loaded.device)
    run = start_run("generate", cfg.name, dump_yaml(to_dict(cfg)), seed, loaded.device,
                    device_name(loaded.device), out=out, argv=argv)
    console.info(f"run folder: {run.dir}")
    console.info(f"model {cfg.model} ({loaded.sample_rate} Hz) on {loaded.device}; "
                 f"{len(cfg.prompts)} prompt(s), {params.duration:g} s, seed {seed}")
    with run.marked_on_error():
        # generate: all prompts in one batch
        run.event("generate.batch.start", prompts=len(cfg.prompts), seed=seed)
        frames = int(params.duration * loaded.frame_rate)
        start = time.perf_counter()
        def window(index: int, count: int) -> None:
            if count > 1:
                console.info(f"window {index}/{count} (the model's window is "
                             f"{loaded.max_duration:g} s, advancing {params.extend_stride:g} s)")
                run.event("generate.window", index=index, of=count)

        with console.progress("generating", frames) as update:
            wav = generate_batch(loaded, cfg.prompts, params, seed,
                                 on_progress=lambda done, total: update(min(done, frames)),
                                 on_window=window, continuation=continuation,
                                 melody=([melody[0]] * len(cfg.prompts), melody[1])
                                 if melody else None)
        seconds = time.perf_counter() - start
        run.event("generate.batch.end", seconds=round(seconds, 3), shape=list(wav.shape))
        # write: one WAV and sidecar per prompt
        width = len(str(len(cfg.prompts) - 1))
        for index, (prompt, clip) in enumerate(zip(cfg.prompts, wav)):
            sample_id = f"{index:0{width}d}-{slug(prompt)}"
            sidecar = {"id": sample_id, "prompt": prompt, "model": cfg.model,
                       "model_source": loaded.spec.source, "family": loaded.family,
                       "parameters": to_dict(params), "seed": seed, "batch_index": index,
                       "batch_size": len(cfg.prompts), "generation_seconds": round(seconds, 3),
                       **conditioning, "acr_version": __version__}
            record = write_sample(run.dir / "samples" / f"{sample_id}.wav", clip,
                                  loaded.sample_rate, sidecar, cfg.sample_format,
                                  cfg.loudness_lufs)
            run.event("sample.written", id=sample_id, duration=record["duration"])
    audio_seconds = wav.shape[0] * wav.shape[-1] / loaded.sample_rate
    run.finish("completed", generation_seconds=round(seconds, 3),
               audio_seconds=round(audio_seconds, 3))
    console.info(f"{len(cfg.prompts)} clip(s), {audio_seconds:.1f} s of audio in {seconds:.1f} s "
                 f"(real-time factor {audio_seconds / max(seconds, 1e-9):.2f})")
    return run.dir

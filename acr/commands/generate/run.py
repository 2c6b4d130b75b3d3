"""The `acr generate` recipe: load the model, open a run folder, generate one batch, write WAVs
with JSON sidecars, finish. A `hybrid:` section goes to `mix.run_hybrid` instead."""
from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path

from acr import __version__
from acr.core import console
from acr.core.config.loader import dump_yaml, to_dict
from acr.core.config.schema import GenerateConfig, GenerationParams
from acr.core.engine import conditioning_audio, generate_batch, resolve_params, slug, write_sample
from acr.core.image_prompts import ImageDescription, copy_images, describe_prompts
from acr.core.models import LoadedModel, device_name, load_model
from acr.core.runs import Run, held_new_run


def run_generate(cfg: GenerateConfig, out: Path | None = None, argv: list[str] | None = None
                 ) -> Path:
    """The `acr generate` recipe. Returns the run folder."""
    if cfg.hybrid is not None:
        from acr.commands.generate.mix import run_hybrid

        return run_hybrid(cfg, out, argv)
    # setup: everything that can be wrong is found before the run folder exists
    loaded = load_model(cfg.model, cfg.device)
    params = resolve_params(cfg.params, loaded)
    melody, continuation, conditioning = conditioning_audio(cfg, loaded)
    images = describe_prompts(cfg.prompts, cfg.clip_model, cfg.vocabulary, loaded.family)
    prompts = [images[i].prompt if i in images else p for i, p in enumerate(cfg.prompts)]
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    cfg = dataclasses.replace(cfg, params=params, seed=seed, device=loaded.device)
    with held_new_run("generate", cfg.name, dump_yaml(to_dict(cfg)), seed, loaded.device,
                      device_name(loaded.device), out, argv) as run:
        copy_images(run.dir, list(images.values()))
        _generate(run, cfg, prompts, images, loaded, params, seed, melody, continuation,
                  conditioning)
    return run.dir


def _generate(run: Run, cfg: GenerateConfig, prompts: list[str],
              images: dict[int, ImageDescription], loaded: LoadedModel,
              params: GenerationParams, seed: int, melody: tuple | None,
              continuation: tuple | None, conditioning: dict) -> None:
    """Generate all prompts in one batch, write a WAV and a sidecar per prompt (with how an
    image item became its prompt), finish."""
    console.info(f"run folder: {run.dir}")
    console.info(f"model {cfg.model} ({loaded.sample_rate} Hz) on {loaded.device}; "
                 f"{len(prompts)} prompt(s), {params.duration:g} s, seed {seed}")
    run.event("generate.batch.start", prompts=len(prompts), seed=seed)
    frames = int(params.duration * loaded.frame_rate)
    start = time.perf_counter()

    def window(index: int, count: int) -> None:
        if count > 1:
            console.info(f"window {index}/{count} (the model's window is "
                         f"{loaded.max_duration:g} s, advancing {params.extend_stride:g} s)")
            run.event("generate.window", index=index, of=count)

    with console.progress("generating", frames) as update:
        wav = generate_batch(loaded, prompts, params, seed,
                             on_progress=lambda done, total: update(min(done, frames)),
                             on_window=window, continuation=continuation,
                             melody=([melody[0]] * len(prompts), melody[1])
                             if melody else None)
    seconds = time.perf_counter() - start
    run.event("generate.batch.end", seconds=round(seconds, 3), shape=list(wav.shape))
    width = len(str(len(prompts) - 1))
    for index, (prompt, clip) in enumerate(zip(prompts, wav)):
        sample_id = f"{index:0{width}d}-{slug(prompt)}"
        sidecar = {"id": sample_id, "prompt": prompt, "model": cfg.model,
                   "model_source": loaded.spec.source, "family": loaded.family,
                   "parameters": to_dict(params), "seed": seed, "batch_index": index,
                   "batch_size": len(prompts), "generation_seconds": round(seconds, 3),
                   **conditioning, **({"image": images[index].record()} if index in images
                                      else {}), "acr_version": __version__}
        record = write_sample(run.dir / "samples" / f"{sample_id}.wav", clip,
                              loaded.sample_rate, sidecar, cfg.sample_format, cfg.loudness_lufs)
        run.event("sample.written", id=sample_id, duration=record["duration"])
    audio_seconds = wav.shape[0] * wav.shape[-1] / loaded.sample_rate
    console.info(f"{len(prompts)} clip(s), {audio_seconds:.1f} s of audio in {seconds:.1f} s "
                 f"({audio_seconds / max(seconds, 1e-9):.2f}x real time)")
    run.finish("completed", generation_seconds=round(seconds, 3),
               audio_seconds=round(audio_seconds, 3))

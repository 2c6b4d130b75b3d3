"""`acr experiment`: expand a grid into a sample table, plan batches, generate, resume.

Reads top to bottom: the plan (pure functions of the config), setup (run folder, lock, devices),
the loop over batches, then cleanup (manifest, summary). A batch is the unit of generation and of
reproducibility: its samples share a model and a parameter set, and it is seeded from
(seed, model, parameter set, batch number), so its audio does not depend on which batches ran
before it. Resuming regenerates only batches that still miss a sample, and writes only the missing
files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from acr import __version__, console
from acr.config import ExperimentConfig, dump_yaml, to_dict
from acr.errors import UsageError

CPU_BATCH_SIZE = 8
MANIFEST = "experiment.json"
FINDINGS = "findings.json"


# ----------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Sample:
    id: str  # <model>/<parameter set>/<prompt set>/<prompt index>-<sample index>
    model: str
    parameter_set: str
    prompt_set: str
    prompt_index: int
    sample_index: int
    prompt: str
    pair: tuple[str, str] | None = None  # (music, sfx) prompts of a hybrid experiment
    melody: str | None = None  # audio whose chroma conditions this sample
    continuation: tuple[str, float] | None = None  # (audio, prompt seconds) it continues

    @property
    def conditioning(self) -> str:
        """Samples generated together must be conditioned alike (one generate call)."""
        if self.melody:
            return "melody"
        return f"continuation-{self.continuation[1]:g}s" if self.continuation else ""

    @property
    def path(self) -> str:
        return f"samples/{self.id}.wav"


@dataclass(frozen=True)
class Batch:
    index: int  # position in the whole plan (ranks take index % world_size)
    model: str
    parameter_set: str
    number: int  # position among the batches of the same model and parameter set
    seed: int
    samples: tuple[Sample, ...]


def model_dirnames(models: list[str]) -> dict[str, str]:
    """A folder name per model: the short name, or a folder's / hub id's last part, made unique."""
    out: dict[str, str] = {}
    for name in models:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.rstrip("/")).name).strip("-.") or "model"
        candidate, n = base, 2
        while candidate in out.values():
            candidate, n = f"{base}-{n}", n + 1
        out[name] = candidate
    return out


def expand(cfg: ExperimentConfig) -> list[Sample]:
    """The sample table: model x parameter set x prompt set x prompt x sample, in that order."""
    dirs = model_dirnames(cfg.model_names)

    def text(prompt) -> tuple:
        if isinstance(prompt, str):
            return prompt, None, None, None
        if hasattr(prompt, "music"):
            return f"{prompt.music} + {prompt.sfx}", (prompt.music, prompt.sfx), None, None
        continuation = (prompt.continuation.audio, prompt.continuation.prompt_seconds) \
            if prompt.continuation else None
        return prompt.text, None, prompt.melody, continuation

    return [Sample(f"{dirs[model]}/{pset}/{pname}/{pi}-{si}", model, pset, pname, pi, si,
                   *text(prompt))
            for model in cfg.model_names
            for pset in cfg.parameter_sets
            for pname, prompts in cfg.prompt_sets.items()
            for pi, prompt in enumerate(prompts)
            for si in range(cfg.samples_per_prompt)]


def batch_seed(seed: int, *identity: Any) -> int:
    """A 63-bit seed from the base seed and a batch's identity (stable across runs and machines)."""
    text = "/".join(str(part) for part in (seed, *identity))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def plan_batches(samples: list[Sample], batch_size: int, seed: int) -> list[Batch]:
    """Consecutive chunks of `batch_size` samples that share model, parameter set and kind of
    conditioning (plain grids: model and parameter set, as they always were)."""
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.model, sample.parameter_set, sample.conditioning),
                          []).append(sample)
    batches = []
    for (model, pset, conditioning), members in groups.items():
        identity = (model, pset, conditioning) if conditioning else (model, pset)
        for number, start in enumerate(range(0, len(members), batch_size)):
            batches.append(Batch(len(batches), model, pset, number,
                                 batch_seed(seed, *identity, number),
                                 tuple(members[start:start + batch_size])))
    return batches


def is_done(run_dir: Path, sample: Sample) -> bool:
    wav = run_dir / sample.path
    return wav.is_file() and wav.with_suffix(".json").is_file()


# ----------------------------------------------------------------------------------------------
# Generation with out-of-memory back-off


def generate_with_backoff(loaded: Any, prompts: list[str], params: Any, seed: int,
                          limit: list[int], on_event: Callable[..., None],
                          conditions: list | None = None) -> list[tuple]:
    """Generate `prompts`; returns one (wav, seed, batch size) per prompt.

    `limit` holds the largest batch known to fit ([0] = no limit yet). A CUDA out-of-memory
    error halves the batch (each half seeded from (seed, half)), lowers `limit` for the batches
    that follow and is reported through `on_event`.
    """
    import torch

    from acr.generate import generate_batch

    conditions = conditions or [None] * len(prompts)

    def halves() -> list[tuple]:
        middle = len(prompts) // 2
        return [*generate_with_backoff(loaded, prompts[:middle], params, batch_seed(seed, "a"),
                                       limit, on_event, conditions[:middle]),
                *generate_with_backoff(loaded, prompts[middle:], params, batch_seed(seed, "b"),
                                       limit, on_event, conditions[middle:])]

    if limit[0] and len(prompts) > limit[0]:
        return halves()
    try:
        wav = generate_batch(loaded, prompts, params, seed, **condition_arguments(conditions,
                                                                                 loaded))
    except torch.cuda.OutOfMemoryError:
        if len(prompts) == 1:
            raise
        torch.cuda.empty_cache()
        limit[0] = (len(prompts) + 1) // 2  # the larger half
        on_event("batch.oom", batch_size=len(prompts), retry_with=limit[0])
        return halves()
    return [(clip, seed, len(prompts)) for clip in wav]


def read_conditioning(samples: list[Sample], cfg: ExperimentConfig, loaded: Any) -> dict:
    """Every melody / continuation file, read once before the run starts: path -> (wav, rate).
    UsageError names a file that cannot be read, or a model without melody conditioning."""
    from acr.generate import read_conditioning_file

    files: dict = {}
    for sample in samples:
        if sample.melody and loaded is not None and \
                "self_wav" not in loaded.model.lm.condition_provider.conditioners:
            raise UsageError(f"prompt_sets.{sample.prompt_set}[{sample.prompt_index}].melody: "
                             f"model {sample.model!r} has no melody (chroma) conditioning")
        for path, key in ((sample.melody, "melody"),
                          (sample.continuation[0] if sample.continuation else None,
                           "continuation.audio")):
            if path and path not in files:
                files[path] = read_conditioning_file(
                    path, f"prompt_sets.{sample.prompt_set}[{sample.prompt_index}].{key}")
    for sample in samples:
        if sample.continuation and sample.continuation[1] >= \
                cfg.parameter_sets[sample.parameter_set].duration:
            raise UsageError(f"prompt_sets.{sample.prompt_set}[{sample.prompt_index}]"
                             f".continuation.prompt_seconds: {sample.continuation[1]:g} must be "
                             f"below the duration of parameter set {sample.parameter_set!r}")
    return files


def condition_arguments(conditions: list, loaded: Any) -> dict:
    """generate_batch's melody / continuation arguments for a batch of samples' conditions
    (all alike: see Sample.conditioning); each entry is None or (kind, wav, rate, seconds)."""
    import torch
    import torchaudio.functional as F

    present = [c for c in conditions if c is not None]
    if not present:
        return {}
    kind = present[0][0]
    rate, channels = loaded.sample_rate, loaded.channels
    prepared = []
    for _, wav, source_rate, seconds in present:
        wav = F.resample(wav, source_rate, rate) if source_rate != rate else wav
        wav = wav.mean(0, keepdim=True) if channels == 1 else wav.expand(channels, -1) \
            if wav.shape[0] == 1 else wav[:channels]
        prepared.append(wav[:, : int(seconds * rate)] if seconds else wav)
    if kind == "melody":
        return {"melody": (prepared, rate)}
    length = min(w.shape[-1] for w in prepared)
    return {"continuation": (torch.stack([w[:, :length] for w in prepared]), rate)}


def auto_batch_size(loaded: Any, samples_per_group: int) -> int:
    """A batch size from free device memory (a fixed default on the CPU and MPS)."""
    if not loaded.device.startswith("cuda"):
        return min(CPU_BATCH_SIZE, samples_per_group)
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    lm = loaded.model.lm
    per_sample = generation_bytes_per_sample(
        lm.dim, len(lm.transformer.layers), int(loaded.max_duration * loaded.frame_rate),
        lm.card, lm.num_codebooks)
    return max(1, min(64, samples_per_group, int(0.6 * free / per_sample)))


def generation_bytes_per_sample(dim: int, layers: int, frames: int, card: int,
                                codebooks: int) -> int:
    """GPU memory one sample needs while generating `frames` token frames, doubled for
    classifier-free guidance: fp16 key/value caches of every layer, activations, and logits
    (card x codebooks), with generous slack. Shared by auto batch sizes and `acr doctor`."""
    tokens = frames + codebooks
    return 2 * (layers * 2 * tokens * dim * 2 + 8 * tokens * dim * 2 + card * codebooks * 4 * 4)


# ----------------------------------------------------------------------------------------------
# Distributed (torchrun)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on the CPU, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def share_from_main(dist_info: Dist, value: Any) -> Any:
    """Rank 0's `value` on every rank (an exception on rank 0 reaches all of them)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave_dist(dist_info: Dist) -> None:
    """Wait for every rank (rank 0 may still be writing), then leave the process group: a rank
    that tears down while another still works can make gloo abort."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def rank_device(device: str, dist_info: Dist) -> str:
    if dist_info.world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{dist_info.local_rank}"
    return device


# ----------------------------------------------------------------------------------------------
# The recipe


def run_experiment(cfg: ExperimentConfig | None, out: Path | None = None,
                   resume: Path | None = None, argv: list[str] | None = None) -> Path:
    """The `acr experiment` recipe. Returns the run folder."""
    from acr.generate import resolve_params
    from acr.models import device_name, load_model, resolve_device
    from acr.runs import begin_run, open_run, resume_config

    dist_info = init_dist()
    # setup: check everything before the run folder is written to
    resumed = open_run(resume, "experiment") if resume is not None else None
    if resumed is not None:
        cfg = resume_config(resumed.dir, ExperimentConfig, cfg)
    assert cfg is not None
    device = resolve_device(rank_device(cfg.device, dist_info))
    samples = expand(cfg)
    if cfg.hybrid is not None:  # both stem models load (and are checked) up front
        first = hybrid_models(cfg, device)
        params = {name: {stem: resolve_params(stem_params(cfg, p, stem), loaded,
                                              f"parameter_sets.{name}")
                         for stem, loaded in first.items()}
                  for name, p in cfg.parameter_sets.items()}
    else:
        first = load_model(cfg.model_names[0], device)
        params = {name: resolve_params(p, first, f"parameter_sets.{name}")
                  for name, p in cfg.parameter_sets.items()}
    conditioning = read_conditioning(samples, cfg, first if cfg.hybrid is None else None)
    group_size = len(samples) // (len(cfg.model_names) * len(cfg.parameter_sets))
    lock = None
    if dist_info.main:
        run, lock = begin_run("experiment", cfg.name, dump_yaml(to_dict(cfg)), cfg.seed, device,
                              device_name(device), out, argv, resumed)
        batch_size = run.meta().get("batch_size") or (
            cfg.batch_size if cfg.batch_size != "auto" else auto_batch_size(first, group_size))
        run.update_meta(batch_size=batch_size, world_size=dist_info.world)
        if not (run.dir / FINDINGS).exists():
            write_findings(run.dir, [dict(to_dict(f), source="config") for f in cfg.findings])
        shared = (str(run.dir), batch_size)
    else:
        shared = None
    run_dir_text, batch_size = share_from_main(dist_info, shared)
    from acr.runs import Run

    run = Run(Path(run_dir_text))
    batches = plan_batches(samples, batch_size, cfg.seed)
    mine = [b for b in batches if b.index % dist_info.world == dist_info.rank]
    todo = [b for b in mine if not all(is_done(run.dir, s) for s in b.samples)]
    done_before = sum(len(b.samples) for b in mine) - sum(len(b.samples) for b in todo)
    if dist_info.main:
        console.info(f"run folder: {run.dir}")
        console.info(f"{len(samples)} samples in {len(batches)} batches of up to {batch_size} "
                     f"({len(cfg.model_names)} model(s) x {len(cfg.parameter_sets)} parameter "
                     f"set(s) x {sum(map(len, cfg.prompt_sets.values()))} prompt(s) x "
                     f"{cfg.samples_per_prompt}) on {device}"
                     + (f"; {done_before} already done" if done_before else "")
                     + (f"; {dist_info.world} ranks" if dist_info.world > 1 else ""))

    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    start = time.perf_counter()
    def partial_manifest() -> None:
        write_manifest(run.dir, cfg, samples, complete=False)

    try:
        with run.marked_on_error(dist_info.main, before=partial_manifest):
            new_samples, new_audio = _loop(run, cfg, device, first, params, mine, todo,
                                           done_before, dist_info, conditioning)
            wall = time.perf_counter() - start
            _gather(dist_info)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if lock is not None:
            lock.close()
    # cleanup: the manifest from the sidecars on disk, the summary, the lock
    if dist_info.main:
        manifest = write_manifest(run.dir, cfg, samples, complete=True)
        totals = manifest["totals"]
        run.finish("completed", wall_seconds=round(wall, 3), audio_seconds=totals["audio_seconds"])
        rate = f"{new_audio / wall:.2f}" if new_audio and dist_info.world == 1 else "-"
        console.table("experiment", ["samples", "generated now", "seconds of audio (now)",
                                     "wall time (s)", "real-time factor"],
                      [[f"{totals['samples']}/{totals['planned']}", str(new_samples),
                        f"{new_audio:.1f}", f"{wall:.1f}", rate]])
    leave_dist(dist_info)
    if cfg.analyze and dist_info.main:
        from acr.analysis.run import run_analysis

        console.info("analysing the run (analyze: true)")
        analysis = run_analysis(run.dir)
        run.event("analysis.done", folder=str(analysis))
    return run.dir


def _loop(run: Any, cfg: ExperimentConfig, device: str, first: Any, params: dict,
          mine: list[Batch], todo: list[Batch], done_before: int, dist_info: Dist,
          conditioning: dict) -> tuple[int, float]:
    """Generate this rank's missing batches, one model at a time (the plan is ordered by model);
    returns the samples and seconds of audio written now."""
    from acr.generate import resolve_params
    from acr.models import load_model

    limit, new_samples, new_audio = [0], 0, 0.0
    with console.progress("samples", sum(len(b.samples) for b in mine)) as update:
        finished = done_before
        update(finished)
        for batch in todo:
            if cfg.hybrid is not None:
                written = _run_hybrid_batch(run, cfg, first, batch, params[batch.parameter_set],
                                            dist_info)
                new_samples, new_audio = new_samples + len(written), new_audio + sum(written)
                finished += len(batch.samples)
                update(finished)
                continue
            loaded = load_model(batch.model, device)
            batch_params = params[batch.parameter_set] if loaded is first else \
                resolve_params(cfg.parameter_sets[batch.parameter_set], loaded,
                               f"parameter_sets.{batch.parameter_set}")
            written = _run_batch(run, cfg, loaded, batch, batch_params, limit, dist_info,
                                 conditioning)
            new_samples, new_audio = new_samples + len(written), new_audio + sum(written)
            finished += len(batch.samples)
            update(finished)
    return new_samples, new_audio


def hybrid_models(cfg: ExperimentConfig, device: str) -> dict:
    from acr.hybrid import load_stem_model

    return {stem: load_stem_model(stem, getattr(cfg.hybrid, f"{stem}_model"), device,
                                  f"hybrid.{stem}_model") for stem in ("music", "sfx")}


def stem_params(cfg: ExperimentConfig, params: Any, stem: str) -> Any:
    """A parameter set for one stem: the effects may have their own duration."""
    if stem == "sfx" and cfg.hybrid.sfx_duration is not None:
        return dataclasses.replace(params, duration=cfg.hybrid.sfx_duration, extend_stride=None)
    return dataclasses.replace(params, extend_stride=params.extend_stride)


def _batch_events(run: Any, batch: Batch, dist_info: Dist) -> Callable[..., None]:
    """An event logger that tags every event with the batch and the rank."""
    def event(kind: str, **fields: Any) -> None:
        run.event(kind, batch=batch.index, rank=dist_info.rank, **fields)
    return event


def _run_hybrid_batch(run: Any, cfg: ExperimentConfig, models: dict, batch: Batch,
                      params: dict, dist_info: Dist) -> list[float]:
    """Both stems of a batch of pairs (music seeded from the batch, effects from the batch and
    'sfx'), mixed pair by pair with the parameter set's blend."""
    from acr.generate import generate_batch
    from acr.hybrid import mix_stems, write_mix

    event = _batch_events(run, batch, dist_info)
    event("batch.start", size=len(batch.samples), seed=batch.seed)
    started = time.perf_counter()
    seeds = {"music": batch.seed, "sfx": batch_seed(batch.seed, "sfx")}
    clips = {stem: generate_batch(models[stem], [s.pair[i] for s in batch.samples],
                                  params[stem], seeds[stem])
             for i, stem in enumerate(("music", "sfx"))}
    seconds = time.perf_counter() - started
    blend = cfg.parameter_sets[batch.parameter_set].blend or cfg.hybrid.blend
    recipe = dataclasses.replace(cfg.hybrid, blend=blend)
    written = []
    for i, sample in enumerate(batch.samples):
        if is_done(run.dir, sample):
            continue
        mix, music, sfx, rate, record = mix_stems(clips["music"][i], models["music"].sample_rate,
                                                  clips["sfx"][i], models["sfx"].sample_rate,
                                                  recipe)
        stems = {stem: {"model": getattr(cfg.hybrid, f"{stem}_model"), "prompt": sample.pair[j],
                        "seed": seeds[stem], "parameters": to_dict(params[stem])}
                 for j, stem in enumerate(("music", "sfx"))}
        sidecar = {"id": sample.id, "prompt": sample.prompt, "model": "hybrid",
                   "parameter_set": sample.parameter_set, "prompt_set": sample.prompt_set,
                   "prompt_index": sample.prompt_index, "sample_index": sample.sample_index,
                   "parameters": to_dict(params["music"]), "seed": batch.seed,
                   "batch_index": batch.index, "batch_size": len(batch.samples),
                   "batch_seconds": round(seconds, 4),
                   "generation_seconds": round(seconds / len(batch.samples), 4),
                   "hybrid": {**record, **stems}, "acr_version": __version__}
        path = run.dir / sample.path
        written.append(write_mix(path.parent, path.stem, mix, music, sfx, rate, sidecar,
                                 cfg.sample_format)["duration"])
    event("batch.end", seconds=round(seconds, 3))
    return written


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _gather(dist_info: Dist) -> None:
    """Wait for every rank to finish its batches (rank 0 then writes the manifest)."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _run_batch(run: Any, cfg: ExperimentConfig, loaded: Any, batch: Batch, params: Any,
               limit: list[int], dist_info: Dist, files: dict) -> list[float]:
    """Generate one batch and write its missing samples; returns their durations."""
    from acr.generate import write_sample

    event = _batch_events(run, batch, dist_info)
    event("batch.start", size=len(batch.samples), seed=batch.seed)
    started = time.perf_counter()
    conditions = [("melody", *files[s.melody], None) if s.melody else
                  ("continuation", *files[s.continuation[0]], s.continuation[1])
                  if s.continuation else None for s in batch.samples]
    results = generate_with_backoff(loaded, [s.prompt for s in batch.samples], params,
                                    batch.seed, limit, event, conditions)
    seconds = time.perf_counter() - started
    written = []
    for sample, (clip, seed, size) in zip(batch.samples, results):
        if is_done(run.dir, sample):
            continue
        sidecar = {"id": sample.id, "prompt": sample.prompt, "model": sample.model,
                   "model_source": loaded.spec.source, "family": loaded.family,
                   "parameter_set": sample.parameter_set, "prompt_set": sample.prompt_set,
                   "prompt_index": sample.prompt_index, "sample_index": sample.sample_index,
                   "parameters": to_dict(params), "seed": seed, "batch_index": batch.index,
                   "batch_size": size, "batch_seconds": round(seconds, 4),
                   "generation_seconds": round(seconds / len(batch.samples), 4),
                   **({"melody": {"audio": sample.melody}} if sample.melody else {}),
                   **({"continuation": {"audio": sample.continuation[0],
                                        "prompt_seconds": sample.continuation[1]}}
                      if sample.continuation else {}),
                   "acr_version": __version__}
        record = write_sample(run.dir / sample.path, clip, loaded.sample_rate, sidecar,
                              cfg.sample_format, cfg.loudness_lufs)
        written.append(record["duration"])
    event("batch.end", seconds=round(seconds, 3))
    return written


# ----------------------------------------------------------------------------------------------
# Manifest and findings


def write_manifest(run_dir: Path, cfg: ExperimentConfig, samples: list[Sample],
                   complete: bool) -> dict:
    """experiment.json: the config summary, one row per sample written, totals."""
    from acr.runs import write_json

    rows = []
    for sample in samples:
        if not is_done(run_dir, sample):
            continue
        side = json.loads((run_dir / sample.path).with_suffix(".json").read_text())
        rows.append({"id": sample.id, "path": sample.path, "model": sample.model,
                     "parameter_set": sample.parameter_set, "prompt_set": sample.prompt_set,
                     "prompt_index": sample.prompt_index, "sample_index": sample.sample_index,
                     "prompt": sample.prompt, "parameters": side["parameters"],
                     "seed": side["seed"], "duration": side["duration"],
                     "sample_rate": side["sample_rate"],
                     "generation_seconds": side["generation_seconds"]})
    audio = sum(r["duration"] for r in rows)
    generation = sum(r["generation_seconds"] for r in rows)
    manifest = {
        "name": cfg.name, "description": cfg.description, "complete": complete,
        "config": {"models": cfg.model_names, "parameter_sets": {
            k: to_dict(v) for k, v in cfg.parameter_sets.items()},
            "prompt_sets": to_dict(cfg)["prompt_sets"],
            "samples_per_prompt": cfg.samples_per_prompt,
            "seed": cfg.seed},
        "findings": read_findings(run_dir),
        "samples": rows,
        "totals": {"samples": len(rows), "planned": len(samples),
                   "audio_seconds": round(audio, 3), "generation_seconds": round(generation, 3),
                   "real_time_factor": round(audio / generation, 3) if generation else None},
    }
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def read_findings(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / FINDINGS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def write_findings(run_dir: Path, findings: list[dict]) -> None:
    from acr.runs import write_json

    write_json(Path(run_dir) / FINDINGS, findings)


def add_note(run_dir: Path, title: str, text: str) -> dict:
    """Record a finding with an experiment run (findings.json, and experiment.json if present)."""
    import fcntl

    from acr.runs import open_run, utc_now, write_json

    run = open_run(run_dir, "experiment")
    if not title.strip():
        raise UsageError("--title: must not be empty; give the finding a short title")
    finding = {"title": title, "description": text, "source": "note", "time": utc_now()}
    with open(run.dir / ".findings.lock", "a") as guard:  # serialise concurrent notes
        fcntl.flock(guard, fcntl.LOCK_EX)
        findings = [*read_findings(run.dir), finding]
        write_findings(run.dir, findings)
        manifest_path = run.dir / MANIFEST
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            write_json(manifest_path, {**manifest, "findings": findings})
    run.event("finding.added", title=title)
    return finding

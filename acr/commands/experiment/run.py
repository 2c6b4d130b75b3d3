"""The `acr experiment` recipe, top to bottom: setup (the plan, the batch runner with its models,
the run folder and lock), the loop over this rank's missing batches, cleanup (the manifest from
the sidecars on disk, the summary, the analysis, the final status, then the lock released).
Resuming regenerates only batches that still miss a sample, and writes only the missing files.
Once the run folder exists, any failure marks it `failed` (Ctrl-C: `interrupted`).
"""
from __future__ import annotations

import dataclasses
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from acr.commands.experiment.batches import HybridBatches, PlainBatches
from acr.commands.experiment.manifest import FINDINGS, write_findings, write_manifest
from acr.commands.experiment.tracked import track_analysis, track_batches, track_clips
from acr.commands.experiment.plan import Batch, Sample, expand, is_done, plan_batches
from acr.commands.experiment.shares import refuse_active_shares
from acr.core import console
from acr.core.config.loader import dump_yaml, to_dict
from acr.core.config.schema import ExperimentConfig
from acr.core.distributed import (Dist, gather_from_all, init_dist, leave_dist, rank_device,
                                  wait_for_all)
from acr.core.image_prompts import copy_images
from acr.core.models import device_name, resolve_device
from acr.core.runs import Run, begin_shared_run, open_run, resume_config
from acr.core.tracking import Trackers, open_trackers

SPEED_HEADER = "x real time"  # seconds of audio per second of wall time (higher is faster)


def run_experiment(cfg: ExperimentConfig | None, out: Path | None = None,
                   resume: Path | None = None, argv: list[str] | None = None) -> Path:
    """The `acr experiment` recipe. Returns the run folder."""
    dist_info = init_dist()
    # setup: check everything before the run folder is written to
    resumed = open_run(resume, "experiment") if resume is not None else None
    if resumed is not None:
        cfg = resume_config(resumed.dir, ExperimentConfig, cfg)
        refuse_active_shares(resumed.dir)
    assert cfg is not None
    device = resolve_device(rank_device(cfg.device, dist_info))
    samples = expand(cfg)
    runner = HybridBatches(cfg, device, samples) if cfg.hybrid is not None else \
        PlainBatches(cfg, device, samples)
    samples = runner.samples
    used = used_config(cfg, runner.resolved_params(), device, dist_info)
    run, batch_size, lock = begin_shared_run(
        dist_info, "experiment", cfg.name, dump_yaml(to_dict(used)), cfg.seed, device,
        device_name(device), out, argv, resumed, lambda: chosen_batch_size(cfg, runner),
        run_name=cfg.name, models=list(cfg.weights), planned_samples=len(samples))  # acr runs

    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with run.marked_on_error(dist_info.main, before=lambda: write_manifest(
                run.dir, cfg, samples, complete=False)):
            trackers = open_trackers(run, cfg.tracking, to_dict(used), dist_info.main)
            try:
                _run(run, cfg, samples, runner, batch_size, device, dist_info, trackers)
            finally:
                trackers.close()
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if lock is not None:  # held to the very end: the manifest and the final status
            lock.close()
    return run.dir


def _run(run: Run, cfg: ExperimentConfig, samples: list[Sample], runner: Any,
         batch_size: int | dict[str, int], device: str, dist_info: Dist,
         trackers: Trackers) -> None:
    """Everything after the run folder exists: the loop, the manifest, the analysis, the end."""
    if dist_info.main and not (run.dir / FINDINGS).exists():
        write_findings(run.dir, [dict(to_dict(f), source="config") for f in cfg.findings])
    if dist_info.main:  # the images of image items, kept with the run (and exported)
        copy_images(run.dir, list(runner.descriptions.values()))
    batches = plan_batches(samples, batch_size, cfg.seed)
    mine = [b for b in batches if b.index % dist_info.world == dist_info.rank]
    todo = [b for b in mine if not all(is_done(run.dir, s) for s in b.samples)]
    done_before = sum(len(b.samples) for b in batches
                      if all(is_done(run.dir, s) for s in b.samples))
    if dist_info.main:
        sizes = batch_size if isinstance(batch_size, int) else \
            ", ".join(f"{size} ({model})" for model, size in batch_size.items())
        console.info(f"run folder: {run.dir}")
        console.info(f"{len(samples)} samples in {len(batches)} batches of up to {sizes} "
                     f"({len(cfg.model_names)} model(s) x {len(cfg.parameter_sets)} parameter "
                     f"set(s) x {sum(map(len, cfg.prompt_sets.values()))} prompt(s) x "
                     f"{cfg.samples_per_prompt}) on {device}"
                     + (f"; {done_before} already done" if done_before else "")
                     + (f"; {dist_info.world} ranks" if dist_info.world > 1 else ""))

    # the loop: this rank's missing batches
    trackers.wait_open()  # their opening done before the first batch, not beside it
    start = time.perf_counter()
    new_samples, new_audio = 0, 0.0
    with _world_progress(run, samples, mine, dist_info) as update:
        finished = sum(len(b.samples) for b in mine) - sum(len(b.samples) for b in todo)
        update(finished)
        track_batches(trackers, run.dir, mine)  # a resumed run: what its last process wrote
        for batch in todo:
            written = runner.run(run, batch, _batch_events(run, batch, dist_info))
            track_batches(trackers, run.dir, [batch])
            new_samples, new_audio = new_samples + len(written), new_audio + sum(written)
            finished += len(batch.samples)
            update(finished)
        wait_for_all(dist_info)
        update(finished)
    wall = time.perf_counter() - start
    counts = gather_from_all(dist_info, (new_samples, new_audio))
    new_samples, new_audio = sum(c[0] for c in counts), sum(c[1] for c in counts)

    # cleanup (rank 0): the manifest from the sidecars on disk, the summary, the analysis
    if dist_info.main:
        manifest = write_manifest(run.dir, cfg, samples, complete=True)
        summary_table(manifest["totals"], new_samples, new_audio, wall)
    leave_dist(dist_info)  # the other ranks are done; rank 0 analyses and finishes alone
    if not dist_info.main:
        return
    analyse_and_finish(run, cfg, samples, len(batches), trackers, wall,
                       manifest["totals"]["audio_seconds"])


def summary_table(totals: dict, new_samples: int, new_audio: float, wall: float) -> None:
    """The run's summary: samples on disk, generated now, seconds of audio, speed."""
    speed = f"{new_audio / wall:.2f}" if new_audio and wall else "-"
    console.table("experiment", ["samples", "generated now", "seconds of audio (now)",
                                 "wall time (s)", SPEED_HEADER],
                  [[f"{totals['samples']}/{totals['planned']}", str(new_samples),
                    f"{new_audio:.1f}", f"{wall:.1f}", speed]])


def analyse_and_finish(run: Run, cfg: ExperimentConfig, samples: list[Sample], batches: int,
                       trackers: Trackers, wall: float, audio_seconds: float) -> None:
    """Once every sample is on disk and in the manifest: the first clips of every setting to
    the trackers, the analysis (analyze: true; its results to the trackers too), then the
    final status. The trackers' step is the one after the last of the run's `batches`."""
    end_step = batches + 1
    track_clips(trackers, end_step, run.dir, samples, cfg.tracking.audio_clips)
    if cfg.analyze:
        from acr.commands.analyze import run_analysis

        console.info("analysing the run (analyze: true)")
        trackers.drain()  # no tracker thread mid-work when the analysis forks its workers
        analysis = run_analysis(run.dir)
        run.event("analysis.done", folder=str(analysis))
        track_analysis(trackers, end_step, analysis)
    run.finish("completed", wall_seconds=round(wall, 3), audio_seconds=audio_seconds,
               **({"analysis": analysis_record(analysis)} if cfg.analyze else {}))


def used_config(cfg: ExperimentConfig, resolved: dict[str, list], device: str,
                dist_info: Dist) -> ExperimentConfig:
    """The config as it runs, for config.yaml: the device picked (under torchrun its type, as
    each rank takes its own GPU) and each parameter set's extend_stride as resolved (`resolved`:
    parameter set -> the parameters every model, or stem, uses). Where the models of an axis
    (or the two stems) resolve it differently, it stays null: each model's own default, as each
    sample's sidecar records."""
    def stride(name: str, params: Any) -> Any:
        strides = {p.extend_stride for p in resolved[name]}
        return dataclasses.replace(params, extend_stride=strides.pop()) \
            if len(strides) == 1 else params

    shared_gpu = dist_info.world > 1 and device.startswith("cuda") and \
        cfg.device in ("auto", "cuda")
    return dataclasses.replace(
        cfg, device="cuda" if shared_gpu else device,
        parameter_sets={name: stride(name, p) for name, p in cfg.parameter_sets.items()})


def analysis_record(analysis: Path) -> dict:
    """The baseline's key metric means, for meta.json (`acr runs` lists them from there while
    summary.json keeps the modification time recorded here)."""
    from acr.core.metrics import baseline_means
    from acr.core.safe_load import read_json

    baseline, means = baseline_means(read_json(analysis / "summary.json"))
    return {"baseline": baseline, "means": means,
            "summary_mtime_ns": (analysis / "summary.json").stat().st_mtime_ns}


def chosen_batch_size(cfg: ExperimentConfig, runner: Any) -> int | dict[str, int]:
    """The config's batch size, or the runner's auto sizes: one number when every model has
    the same, else a size per model (what meta.json records and a resumed run keeps)."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    sizes = runner.auto_batch_sizes()
    return next(iter(sizes.values())) if len(set(sizes.values())) == 1 else sizes


@contextmanager
def _world_progress(run: Run, samples: list[Sample], mine: list[Batch], dist_info: Dist
                    ) -> Iterator[Callable[[int], None]]:
    """Progress drawn by rank 0 only. One process counts its own samples; under torchrun
    rank 0 counts the samples on disk (every rank's), whenever one of its own batches ends."""
    if not dist_info.main:
        yield lambda finished: None
        return
    if dist_info.world == 1:
        with console.progress("samples", sum(len(b.samples) for b in mine)) as update:
            yield update
        return
    with console.progress("samples", len(samples)) as update:
        yield lambda finished: update(sum(is_done(run.dir, s) for s in samples))


def _batch_events(run: Run, batch: Batch, dist_info: Dist) -> Any:
    """An event logger that tags every event with the batch and the rank."""
    def event(kind: str, **fields: Any) -> None:
        run.event(kind, batch=batch.index, rank=dist_info.rank, **fields)
    return event


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

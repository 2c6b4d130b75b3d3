"""The `acr experiment` recipe, top to bottom: setup (the plan, the batch runner with its models,
the run folder and lock), the loop over this rank's missing batches, cleanup (the manifest from
the sidecars on disk, the summary, the analysis). Resuming regenerates only batches that still
miss a sample, and writes only the missing files.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from acr.commands.experiment.batches import HybridBatches, PlainBatches
from acr.commands.experiment.manifest import FINDINGS, write_findings, write_manifest
from acr.commands.experiment.plan import Batch, expand, is_done, plan_batches
from acr.core import console
from acr.core.config.loader import dump_yaml, to_dict
from acr.core.config.schema import ExperimentConfig
from acr.core.distributed import Dist, init_dist, leave_dist, rank_device, wait_for_all
from acr.core.models import device_name, resolve_device
from acr.core.runs import Run, begin_shared_run, open_run, resume_config


def run_experiment(cfg: ExperimentConfig | None, out: Path | None = None,
                   resume: Path | None = None, argv: list[str] | None = None) -> Path:
    """The `acr experiment` recipe. Returns the run folder."""
    dist_info = init_dist()
    # setup: check everything before the run folder is written to
    resumed = open_run(resume, "experiment") if resume is not None else None
    if resumed is not None:
        cfg = resume_config(resumed.dir, ExperimentConfig, cfg)
    assert cfg is not None
    device = resolve_device(rank_device(cfg.device, dist_info))
    samples = expand(cfg)
    runner = HybridBatches(cfg, device) if cfg.hybrid is not None else \
        PlainBatches(cfg, device, samples)
    group_size = len(samples) // (len(cfg.model_names) * len(cfg.parameter_sets))
    run, batch_size, lock = begin_shared_run(
        dist_info, "experiment", cfg.name, dump_yaml(to_dict(cfg)), cfg.seed, device,
        device_name(device), out, argv, resumed,
        lambda: cfg.batch_size if cfg.batch_size != "auto" else runner.auto_batch_size(group_size))
    if dist_info.main and not (run.dir / FINDINGS).exists():
        write_findings(run.dir, [dict(to_dict(f), source="config") for f in cfg.findings])
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

    # the loop: this rank's missing batches
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    start = time.perf_counter()
    def partial_manifest() -> None:
        write_manifest(run.dir, cfg, samples, complete=False)

    try:
        with run.marked_on_error(dist_info.main, before=partial_manifest):
            new_samples, new_audio = 0, 0.0
            with console.progress("samples", sum(len(b.samples) for b in mine)) as update:
                finished = done_before
                update(finished)
                for batch in todo:
                    written = runner.run(run, batch, _batch_events(run, batch, dist_info))
                    new_samples, new_audio = new_samples + len(written), new_audio + sum(written)
                    finished += len(batch.samples)
                    update(finished)
            wall = time.perf_counter() - start
            wait_for_all(dist_info)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if lock is not None:
            lock.close()

    # cleanup: the manifest from the sidecars on disk, the summary, the analysis
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
        from acr.commands.analyze import run_analysis

        console.info("analysing the run (analyze: true)")
        analysis = run_analysis(run.dir)
        run.event("analysis.done", folder=str(analysis))
    return run.dir


def _batch_events(run: Run, batch: Batch, dist_info: Dist) -> Any:
    """An event logger that tags every event with the batch and the rank."""
    def event(kind: str, **fields: Any) -> None:
        run.event(kind, batch=batch.index, rank=dist_info.rank, **fields)
    return event


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

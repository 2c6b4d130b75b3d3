"""What an experiment shows its trackers (TensorBoard, W&B): per batch (step = batch index + 1)
its generation seconds and real-time factor; after the last batch (step = batches + 1) the first
clips of every setting as audio, with the prompt as caption; after the analysis, at the same
step, each setting's metric means, the significant comparisons and the report's plots."""
from __future__ import annotations

from pathlib import Path
from acr.commands.experiment.plan import Batch, Sample, is_done
from acr.core.safe_load import read_json
from acr.core.tracking import Clip, Trackers


def track_batches(trackers: Trackers, run_dir: Path, batches: list[Batch]) -> None:
    """Each of `batches` that is complete on disk and not yet tracked, in order: its
    generation seconds and real-time factor (wall / audio seconds), read from its sidecars
    (so a resumed run also logs a batch its killed process wrote but did not log)."""
    if not trackers.active:
        return
    for batch in batches:
        if batch.index + 1 < trackers.step or \
                not all(is_done(run_dir, s) for s in batch.samples):
            continue
        sidecars = [read_json(run_dir / Path(s.path).with_suffix(".json"))
                    for s in batch.samples]
        seconds = max(float(c.get("batch_seconds", 0.0)) for c in sidecars)
        audio = sum(float(c.get("duration", 0.0)) for c in sidecars)
        trackers.scalars(batch.index + 1, "batch", {
            "generation/seconds": seconds, "generation/audio_seconds": audio,
            "generation/samples": len(sidecars),
            "generation/real_time_factor": seconds / audio if audio else None})


def track_clips(trackers: Trackers, step: int, run_dir: Path, samples: list[Sample],
                per_setting: int) -> None:
    """The first `per_setting` clips of every setting (model / parameter set) on disk, each
    captioned with its sidecar's prompt (an image item's description, which samples expanded
    from the config alone lack: a launched run finished by its resume)."""
    if not trackers.active or not per_setting:
        return
    chosen: dict[str, list[Sample]] = {}
    for sample in samples:
        setting = f"{sample.model}/{sample.parameter_set}"
        picked = chosen.setdefault(setting, [])
        if len(picked) < per_setting and is_done(run_dir, sample):
            picked.append(sample)
    trackers.clips(step, "clips", [
        Clip(f"audio/{setting}/{index}", run_dir / sample.path, read_json(
            (run_dir / sample.path).with_suffix(".json")).get("prompt", sample.prompt))
        for setting, picked in chosen.items() for index, sample in enumerate(picked)])


def track_analysis(trackers: Trackers, step: int, analysis_dir: Path) -> None:
    """Per-setting metric means, significant comparisons (the pairs whose Holm-corrected
    test says they differ: Holm p and rank-biserial effect) and the plots of the analysis."""
    if not trackers.active:
        return
    summary = read_json(analysis_dir / "summary.json")
    values: dict[str, float] = {}
    for setting, metrics in summary.get("groups", {}).items():
        for metric, stats in metrics.items():
            if isinstance(stats, dict) and isinstance(stats.get("mean"), (int, float)):
                values[f"metrics/{metric}/{setting}"] = stats["mean"]
    for metric, result in summary.get("tests", {}).items():
        for pair in (result.get("settings") or {}).get("pairs", []):
            if pair.get("significant"):
                key = f"significant/{metric}/{pair['a']}~{pair['b']}"
                values[f"{key}/p"] = pair.get("p_holm", pair.get("p"))
                if pair.get("rank_biserial") is not None:
                    values[f"{key}/rank_biserial"] = pair["rank_biserial"]
    trackers.scalars(step, "analysis", values)
    trackers.images(step, "plots", {f"plots/{path.stem}": path
                                    for path in sorted((analysis_dir / "plots").glob("*.png"))})

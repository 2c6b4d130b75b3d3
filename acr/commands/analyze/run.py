"""The `acr analyze` recipe, top to bottom: find the clips and their groups (clips.py), compute
or reuse per-clip features (cache.py, features.py), set-level metrics (sets.py) and the model-
based tier (model_based.py), statistics over prompts (stats.py), then write metrics.csv,
summary.json, the plots (plots.py) and report.md (report.py).

A re-run whose inputs are all unchanged (every clip's size and modification time, its sidecar,
the reference, the options, the listening answers) reuses the last run's results: it only
rewrites the counts in summary.json and report.md. Heavy modules are imported where they are
used (the listening tests, transformers) or while the feature workers work (matplotlib:
import_the_rest).

Analysis reads audio files and their sidecars only; it never loads a generation model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from acr import __version__
from acr.commands.analyze import report
from acr.commands.analyze.cache import cached_features, stamp
from acr.commands.analyze.clips import baseline_setting, in_config_order, prompt_table, read_order
from acr.commands.analyze.features import CORE_METRICS, METRIC_VERSION, ClipFeatures
from acr.commands.analyze.workers import default_workers, started
from acr.core import console
from acr.core.audio import Unreadable
from acr.core.clips import AUDIO_SUFFIXES, GROUP_COLUMNS, NOT_CLIPS, Clip, discover
from acr.core.errors import UsageError
from acr.core.models import DEFAULT_CLAP
from acr.core.runs import ANALYSIS, LISTENING, write_atomic, write_json
from acr.core.safe_load import read_json

OUTPUTS = "outputs.json"  # in the cache folder: the inputs' fingerprint and what was written


@dataclasses.dataclass
class Outcome:
    """What an analysis wrote besides metrics.csv: summary.json's content, the plots, and the
    listening tests' report section."""
    summary: dict
    plots: list[Path]
    listening_lines: list[str]


def run_analysis(path: Path, out: Path | None = None, reference: Path | None = None,
                 model_metrics: bool = True, clap_model: str | None = None,
                 quiet: bool = False, workers: int | None = None) -> Path:
    """Analyse a run folder or any folder of audio; returns the analysis folder. `workers`:
    processes for the per-clip features (default: one per CPU)."""
    # setup: inputs first, nothing written until they are known to be good
    path = Path(path)
    check_folder(path, "")
    out_dir = Path(out) if out is not None else path / ANALYSIS
    order = read_order(path)  # an experiment run's config order and baseline
    clips = in_config_order(discover(path, skip=out_dir, skip_tops=NOT_CLIPS), order)
    if not clips:
        raise UsageError(f"{path}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found; "
                         "give a run folder or a folder of audio files")
    reference_clips = []
    if reference is not None:
        check_folder(Path(reference), "--reference ")
        reference_clips = discover(Path(reference))
        if not reference_clips:
            raise UsageError(f"--reference {reference}: no audio files found")
    started = time.perf_counter()  # (out_dir is created by its first write: none on bad input)

    clap_name = clap_model or DEFAULT_CLAP
    fingerprint = inputs_fingerprint(path, out_dir, clips, reference_clips, order,
                                     clap_name if model_metrics else None)
    outcome = reuse(out_dir, fingerprint)
    if outcome is None:
        outcome = analyse(path, out_dir, clips, reference, reference_clips, order,
                          model_metrics, clap_name, workers)
        write_json(out_dir / "cache" / OUTPUTS, {
            "fingerprint": fingerprint, "plots": [p.relative_to(out_dir).as_posix()
                                                  for p in outcome.plots],
            "listening_lines": outcome.listening_lines})
    summary = outcome.summary
    write_json(out_dir / "summary.json", summary)
    write_atomic(out_dir / "report.md", report.render(summary, outcome.plots, read_findings(path),
                                                      out_dir, outcome.listening_lines))
    model_info = summary["model_based"]
    if model_info["status"] == "failed":
        console.warn(f"model-based metrics (CLAP, FAD) failed, the rest of the analysis is "
                     f"complete: {model_info['reason']}")
    if not quiet:
        settings = summary["analysed"]["settings"]
        report.terminal_table(summary, settings, summary["analysed"]["baseline"])
        console.info(report.counts_line(summary["analysed"]))
        for item in summary["skipped"]:
            console.warn(f"skipped {item['path']}: {item['reason']}")
        for flag, paths in summary["flags"].items():
            console.warn(f"{len(paths)} clip(s) flagged {flag}: {', '.join(paths[:3])}"
                         + (" ..." if len(paths) > 3 else ""))
        console.info(f"analysis took {time.perf_counter() - started:.1f} s")
    return out_dir


def inputs_fingerprint(path: Path, out_dir: Path, clips: list[Clip], reference_clips: list[Clip],
                       order, clap_name: str | None) -> str:
    """A digest of everything an analysis depends on: acr's and the metrics' versions, the
    options, each clip's (and reference clip's) path, size, modification time and groups, its
    sidecar's, the config order, the listening tests' files and whether CLAP can load."""
    parts: list = [__version__, METRIC_VERSION, str(path.resolve()), str(out_dir.resolve()),
                   dataclasses.asdict(order) if order is not None else None]
    for clip in clips + [None] + reference_clips:  # None: where the reference starts
        if clip is None:
            parts.append("reference")
            continue
        sidecar = clip.path.with_suffix(".json")
        parts.append([str(clip.path.resolve()), stamp(clip.path), clip.groups,
                      stamp(sidecar) if sidecar.is_file() else None])
    listening = path / LISTENING
    if listening.is_dir():
        parts.append(sorted([p.relative_to(path).as_posix(), *stamp(p)]
                            for p in listening.rglob("*") if p.is_file()))
    if clap_name is not None:
        from acr.core.transformers_models import in_local_cache

        parts.append([clap_name, in_local_cache(clap_name)])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def reuse(out_dir: Path, fingerprint: str) -> Outcome | None:
    """The last analysis's outcome, when its inputs had this fingerprint and its outputs are all
    there; its counts say that every clip came from the cache."""
    record_path, summary_path = out_dir / "cache" / OUTPUTS, out_dir / "summary.json"
    if not (record_path.is_file() and summary_path.is_file() and
            (out_dir / "metrics.csv").is_file()):
        return None
    try:
        record, summary = read_json(record_path), read_json(summary_path)
        analysed = summary["analysed"]
    except (ValueError, KeyError, TypeError):
        return None  # damaged: analysed again
    plots = [out_dir / name for name in record.get("plots", [])]
    if record.get("fingerprint") != fingerprint or not all(p.is_file() for p in plots):
        return None
    analysed["computed"], analysed["cached"] = 0, analysed["clips"]
    return Outcome(summary, plots, record.get("listening_lines", []))


def analyse(path: Path, out_dir: Path, clips: list[Clip], reference: Path | None,
            reference_clips: list[Clip], order, model_metrics: bool, clap_name: str,
            workers: int | None) -> Outcome:
    """The analysis proper: features, set metrics, statistics, metrics.csv, plots. (What
    only the steps after the features use is imported after them; import_the_rest imports
    the slow part of it meanwhile.)"""
    from acr.commands.analyze import plots

    # per clip (what comes after is imported meanwhile: the plot workers inherit matplotlib)
    workers = workers or default_workers()
    grid_clips, _, _ = plots.spectrogram_clips(clips, list(dict.fromkeys(c.setting
                                                                        for c in clips)))
    with console.progress("analysing", len(clips)) as update:
        results, computed = cached_features(clips, out_dir / "cache", update, workers,
                                            meanwhile=import_the_rest,
                                            thumbnails=frozenset(grid_clips.values()))
    ref_results, _ = cached_features(reference_clips, out_dir / "cache", workers=workers) \
        if reference_clips else ([], 0)
    skipped = [{"path": c.rel, "reason": str(r)} for c, r in zip(clips, results)
               if isinstance(r, Unreadable)]
    good = [(c, r) for c, r in zip(clips, results) if isinstance(r, ClipFeatures)]
    if not good:
        raise UsageError(f"{path}: none of the {len(clips)} audio files could be read "
                         f"(first: {skipped[0]['path']}: {skipped[0]['reason']})")
    clips = [c for c, _ in good]
    features = [r for _, r in good]
    settings = list(dict.fromkeys(c.setting for c in clips))
    base = baseline_setting(settings, order)
    unit = "prompts" if all(c.has_prompt for c in clips) else "clips"  # what the blocks are

    # set level, and the model-based tier
    novelty, set_metrics = set_level(clips, features, ref_results, settings, base)
    readable_reference = [c for c, r in zip(reference_clips, ref_results)
                          if isinstance(r, ClipFeatures)]
    from acr.commands.analyze import model_based

    model_info, clap_scores = model_based.model_metrics(
        clips, readable_reference, settings, base, model_metrics, clap_name)

    # per metric statistics (small groups give NaN spreads by design: no numpy warnings)
    from acr.core import stats

    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"numpy\..*")
    warnings.filterwarnings("ignore", message=".*(Degrees of freedom|Mean of empty slice).*")
    values = {m: [_number(f.metrics.get(m)) for f in features] for m in CORE_METRICS}
    values["novelty"] = [float(v) for v in novelty]
    if clap_scores is not None:
        values["clap_score"] = [float(v) for v in clap_scores]
    tables = {m: prompt_table(clips, values[m], settings) for m in values}
    # the plots are drawn in worker processes while the statistics are computed here
    thumbnails = {c.path: f.thumbnail for c, f in good if f.thumbnail is not None}
    with started(plots.plan(out_dir / "plots", clips, tables, values, settings, thumbnails),
                 workers) as drawn:
        summary_groups = {s: {m: stats.describe(list(tables[m][s].values()),
                                                seed=hash_seed(s, m)) for m in values}
                          for s in settings}
        tests = metric_tests(clips, values, tables, unit)

        # outputs
        rows = []
        for i, (clip, feature) in enumerate(zip(clips, features)):
            row = {"path": clip.rel, **{c: clip.groups.get(c) for c in GROUP_COLUMNS}}
            row.update({m: feature.metrics.get(m) for m in CORE_METRICS + ["key"]})
            row["novelty"] = float(novelty[i])
            if clap_scores is not None:
                row["clap_score"] = float(clap_scores[i])
            row["flags"] = " ".join(feature.flags)
            rows.append(row)
        write_atomic(out_dir / "metrics.csv", report.metrics_csv(rows))
        flags = {flag: [c.rel for c, f in zip(clips, features) if flag in f.flags]
                 for flag in ("silent", "nan", "clipped")}
        summary = {
            "analysed": {"path": str(path), "clips": len(clips), "computed": computed,
                         "cached": len(clips) - computed, "skipped": len(skipped),
                         "settings": settings, "baseline": base, "blocks": unit,
                         "reference": str(reference) if reference else None,
                         "metric_version": METRIC_VERSION},
            "groups": summary_groups, "keys": key_summary(clips, features, settings),
            "tests": tests, "sets": set_metrics, "model_based": model_info,
            "flags": {k: v for k, v in flags.items() if v}, "skipped": skipped,
        }
        listening = None
        if (path / LISTENING).is_dir():
            from acr.commands.listen import listening_summary

            listening = listening_summary(path, rows, out_dir / "plots")  # None without answers
        if listening is not None:
            summary["listening"] = listening.summary
        plot_files = drawn()
        plot_files += listening.plots if listening is not None else []
    return Outcome(summary, plot_files, listening.report_lines if listening is not None else [])


def import_the_rest() -> None:
    """The modules an analysis needs after the per-clip features (the statistics, matplotlib:
    half a second), imported while the feature workers work, and matplotlib's
    first-drawing caches loaded (plotting.warm_up), which the plot workers then inherit."""
    from acr.core import stats  # noqa: F401
    from acr.core.plotting import warm_up

    warm_up()


def check_folder(path: Path, option: str) -> None:
    """A folder to analyse must be a folder: say what was expected when it is not."""
    expected = "give a run folder or a folder of audio files" if not option else \
        "give a folder of reference audio files"
    if path.is_file():
        raise UsageError(f"{option}{path}: is a file, not a folder; {expected} (a single file "
                         "is not analysed on its own: put it in a folder)")
    if not path.is_dir():
        raise UsageError(f"{option}{path}: no such folder; {expected}")


def set_level(clips: list[Clip], features: list[ClipFeatures], ref_results: list,
              settings: list[str], base: str) -> tuple[np.ndarray, dict]:
    """(novelty per clip, set metrics per setting) on the clips' embeddings, standardised with
    the reference's; Fréchet distances go to the reference, else to the baseline setting."""
    from acr.commands.analyze import sets

    embeddings = np.array([f.embedding for f in features])
    reference_embeddings = np.array([r.embedding for r in ref_results
                                     if isinstance(r, ClipFeatures)])
    joint = sets.standardize(np.vstack([embeddings, reference_embeddings])
                             if len(reference_embeddings) else embeddings)
    standardized, reference_std = joint[: len(embeddings)], joint[len(embeddings):]
    novelty = sets.novelty(standardized)
    set_metrics = {}
    for setting in settings:
        rows = np.array([i for i, c in enumerate(clips) if c.setting == setting])
        target = reference_std if len(reference_std) else \
            standardized[[i for i, c in enumerate(clips) if c.setting == base]]
        set_metrics[setting] = {
            "clips": int(len(rows)), "diversity": sets.diversity(standardized[rows]),
            "novelty_mean": float(np.nanmean(novelty[rows])) if len(rows) > 1 else float("nan"),
            "frechet_distance": sets.frechet_distance(standardized[rows], target),
            "frechet_to": "reference" if len(reference_std) else base}
    return novelty, set_metrics


def metric_tests(clips: list[Clip], values: dict[str, list[float]], tables: dict,
                 unit: str = "prompts") -> dict:
    """Per metric: settings compared paired over prompts (or clips, `unit`), prompt sets
    compared unpaired on prompt-level values pooled over settings."""
    from acr.core import stats

    pooled_clips = [dataclasses.replace(c, groups={**c.groups, "_setting": "all"})
                    for c in clips]
    owners = {c.block: c.groups.get("prompt_set") for c in reversed(clips)}  # first clip wins
    tests = {}
    for metric in values:
        by_prompt_set: dict[str, list[float]] = {}
        for block, value in prompt_table(pooled_clips, values[metric])["all"].items():
            if owners[block] is not None:
                by_prompt_set.setdefault(str(owners[block]), []).append(value)
        tests[metric] = {"settings": stats.paired_tests(tables[metric], unit),
                         "prompt_sets": stats.unpaired_tests(by_prompt_set)
                         if by_prompt_set else None}
    return tests


def key_summary(clips: list[Clip], features: list[ClipFeatures], settings: list[str]) -> dict:
    """Per setting: the most common key, its share, and how many distinct keys."""
    out = {}
    for setting in settings:
        keys = [f.metrics.get("key") for c, f in zip(clips, features)
                if c.setting == setting and f.metrics.get("key")]
        if keys:
            top = max(set(keys), key=keys.count)
            out[setting] = {"most_common": top, "share": keys.count(top) / len(keys),
                            "distinct": len(set(keys))}
    return out


def read_findings(path: Path) -> list[dict]:
    """The run's findings.json (an experiment's findings), or none."""
    findings = path / "findings.json"
    if findings.is_file():
        try:
            return json.loads(findings.read_text(encoding="utf-8"))
        except ValueError:
            return []
    return []


def hash_seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "big")


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else float("nan")

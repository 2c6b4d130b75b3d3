"""The `acr analyze` recipe: find clips and their groups, compute (or reuse) per-clip metrics,
set-level metrics and statistics, then write metrics.csv, summary.json, plots and report.md."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acr.analysis.features import KEY_METRICS, METRIC_VERSION, ClipFeatures, Extractor

BATCH = 16


class Unreadable(Exception):
    """A clip that could not be read; its message is the reason shown in the report."""


def read_clip(path: Path) -> tuple[np.ndarray, int]:
    """[channels, samples] float32 and the sample rate; Unreadable with the reason otherwise."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise Unreadable(f"unreadable: {reason}") from exc
    if data.shape[0] == 0:
        raise Unreadable("empty: no samples")
    return np.ascontiguousarray(data.T), int(rate)


def analyse_clips(paths: list[Path], extractor: Extractor | None = None
                  ) -> list[ClipFeatures | Unreadable]:
    """Features of every file (in order), batching files of the same rate and shape.

    Files are read two at a time in threads (decoding releases the GIL); a file that cannot be
    read yields its Unreadable instead of features."""
    extractor = extractor or Extractor()
    results: list[ClipFeatures | Unreadable | None] = [None] * len(paths)

    def load(path: Path):
        try:
            return read_clip(path)
        except Unreadable as exc:
            return exc

    groups: dict[tuple, list[int]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        loaded = list(pool.map(load, paths))
    for index, item in enumerate(loaded):
        if isinstance(item, Unreadable):
            results[index] = item
        else:
            audio, rate = item
            groups.setdefault((rate, *audio.shape), []).append(index)
    for (rate, *_), members in groups.items():
        for start in range(0, len(members), BATCH):
            chunk = members[start:start + BATCH]
            features = extractor.batch([loaded[i][0] for i in chunk], rate)
            for index, feature in zip(chunk, features):
                results[index] = feature
    return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Clips and their groups

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
GROUP_COLUMNS = ["model", "parameter_set", "prompt_set", "prompt_index", "sample_index", "prompt"]


@dataclass
class Clip:
    path: Path
    rel: str  # relative to the analysed folder (metrics.csv's `path`)
    groups: dict  # GROUP_COLUMNS -> value or None (from the sidecar)

    @property
    def setting(self) -> str:
        return self.groups.get("_setting") or "all"

    @property
    def block(self) -> str:
        """The repeated-measures block: the prompt (within its prompt set), else the file."""
        g = self.groups
        if g.get("prompt_set") is not None and g.get("prompt_index") is not None:
            return f"{g['prompt_set']}/{g['prompt_index']}"
        return g.get("prompt") or self.rel


def discover(root: Path, skip: Path | None = None) -> list[Clip]:
    """Audio files under `root` (not under `skip` or hidden), with groups from their sidecars."""
    clips = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file() or \
                any(part.startswith(".") for part in rel.parts) or \
                (skip is not None and path.is_relative_to(skip)):
            continue
        groups = {column: None for column in GROUP_COLUMNS}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if data.get("stem_of"):
                continue  # a stem of a hybrid mix: the mix is the clip analysed
            groups.update({c: data.get(c) for c in GROUP_COLUMNS if c in data})
        clips.append(Clip(path, rel.as_posix(), groups))
    models = {c.groups["model"] for c in clips}
    for clip in clips:  # a setting: the parameter set, with the model when there are several
        parts = [clip.groups["model"]] if len(models) > 1 else []
        parts += [clip.groups["parameter_set"]] if clip.groups["parameter_set"] else []
        if not parts and clip.groups["model"]:
            parts = [clip.groups["model"]]
        clip.groups["_setting"] = ":".join(str(p) for p in parts) or None
    return clips


# ----------------------------------------------------------------------------------------------
# The cache: per-clip results keyed by file content and metric version


def cached_features(clips: list[Clip], cache_dir: Path, on_progress=None
                    ) -> tuple[list[ClipFeatures | Unreadable], int]:
    """Features of every clip, computing only those not cached; returns (results, computed)."""
    from acr.runs import file_digest, write_json

    keys = [f"{file_digest(c.path)}-v{METRIC_VERSION}" for c in clips]
    results: list[ClipFeatures | Unreadable | None] = []
    for key in keys:
        entry = cache_dir / f"{key}.json"
        if entry.is_file():
            data = json.loads(entry.read_text(encoding="utf-8"))
            results.append(ClipFeatures(data["metrics"], data["embedding"], data["flags"]))
        else:
            results.append(None)
    missing = [i for i, r in enumerate(results) if r is None]
    extractor = Extractor()
    for start in range(0, len(missing), 4 * BATCH):
        chunk = missing[start:start + 4 * BATCH]
        for index, result in zip(chunk, analyse_clips([clips[i].path for i in chunk], extractor)):
            results[index] = result
            if isinstance(result, ClipFeatures):
                write_json(cache_dir / f"{keys[index]}.json", dataclasses.asdict(result))
        if on_progress:
            on_progress(len(clips) - len(missing) + start + len(chunk))
    return results, len(missing)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# The recipe


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else float("nan")


def prompt_table(clips: list[Clip], values: list[float]) -> dict[str, dict[str, float]]:
    """setting -> {block: mean over its samples} (samples aggregated to prompt level)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for clip, value in zip(clips, values):
        if np.isfinite(value):
            sums.setdefault(clip.setting, {}).setdefault(clip.block, []).append(value)
    settings = list(dict.fromkeys(c.setting for c in clips))
    return {s: {b: float(np.mean(v)) for b, v in sums.get(s, {}).items()} for s in settings}


def baseline_setting(settings: list[str]) -> str:
    named = [s for s in settings if s.split(":")[-1] == "baseline"]
    return named[0] if named else settings[0]


def run_analysis(path: Path, out: Path | None = None, reference: Path | None = None,
                 model_metrics: bool = True, clap_model: str | None = None,
                 quiet: bool = False) -> Path:
    """Analyse a run folder or any folder of audio; returns the analysis folder."""
    from acr import console
    from acr.analysis import model_based, plots, report, sets, stats
    from acr.analysis.features import CORE_METRICS
    from acr.errors import UsageError
    from acr.runs import write_atomic, write_json

    # setup: inputs first, nothing written until they are known to be good
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder; give a run folder or a folder of audio files")
    out_dir = Path(out) if out is not None else path / "analysis"
    clips = discover(path, skip=out_dir)
    if not clips:
        raise UsageError(f"{path}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found; "
                         "give a run folder or a folder of audio files")
    reference_clips = []
    if reference is not None:
        if not Path(reference).is_dir():
            raise UsageError(f"--reference {reference}: no such folder")
        reference_clips = discover(Path(reference))
        if not reference_clips:
            raise UsageError(f"--reference {reference}: no audio files found")
    started = time.perf_counter()  # (out_dir is created by its first write: none on bad input)

    # per clip
    with console.progress("analysing", len(clips)) as update:
        results, computed = cached_features(clips, out_dir / "cache", update)
    ref_results, _ = cached_features(reference_clips, out_dir / "cache") if reference_clips \
        else ([], 0)
    skipped = [{"path": c.rel, "reason": str(r)} for c, r in zip(clips, results)
               if isinstance(r, Unreadable)]
    good = [(c, r) for c, r in zip(clips, results) if isinstance(r, ClipFeatures)]
    if not good:
        raise UsageError(f"{path}: none of the {len(clips)} audio files could be read "
                         f"(first: {skipped[0]['path']}: {skipped[0]['reason']})")
    clips = [c for c, _ in good]
    features = [r for _, r in good]
    settings = list(dict.fromkeys(c.setting for c in clips))

    # set level: standardised embeddings of the clips (and reference) together
    embeddings = np.array([f.embedding for f in features])
    reference_embeddings = np.array([r.embedding for r in ref_results
                                     if isinstance(r, ClipFeatures)])
    joint = sets.standardize(np.vstack([embeddings, reference_embeddings])
                             if len(reference_embeddings) else embeddings)
    standardized, reference_std = joint[: len(embeddings)], joint[len(embeddings):]
    novelty = sets.novelty(standardized)
    base = baseline_setting(settings)
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

    # model based (Tier B)
    model_info, clap_scores = _model_based(clips, reference_clips, settings, base,
                                           model_metrics, clap_model or model_based.DEFAULT_CLAP)

    # per metric statistics (small groups give NaN spreads by design: no numpy warnings)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"numpy\..*")
    warnings.filterwarnings("ignore", message=".*(Degrees of freedom|Mean of empty slice).*")
    values = {m: [_number(f.metrics.get(m)) for f in features] for m in CORE_METRICS}
    values["novelty"] = [float(v) for v in novelty]
    if clap_scores is not None:
        values["clap_score"] = [float(v) for v in clap_scores]
    metric_names = list(values)
    tables = {m: prompt_table(clips, values[m]) for m in metric_names}
    summary_groups = {s: {m: stats.describe(list(tables[m][s].values()), seed=hash_seed(s, m))
                          for m in metric_names} for s in settings}
    # prompt sets are compared on prompt-level values pooled over settings
    pooled_clips = [dataclasses.replace(c, groups={**c.groups, "_setting": "all"})
                    for c in clips]
    owners = {c.block: c.groups.get("prompt_set") for c in reversed(clips)}  # first clip wins
    tests = {}
    for metric in metric_names:
        by_prompt_set: dict[str, list[float]] = {}
        for block, value in prompt_table(pooled_clips, values[metric])["all"].items():
            if owners[block] is not None:
                by_prompt_set.setdefault(str(owners[block]), []).append(value)
        tests[metric] = {"settings": stats.paired_tests(tables[metric]),
                         "prompt_sets": stats.unpaired_tests(by_prompt_set)
                         if by_prompt_set else None}
    keys = _key_summary(clips, features, settings)

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
    write_atomic(out_dir / "metrics.csv", _csv(rows))
    flags = {flag: [c.rel for c, f in zip(clips, features) if flag in f.flags]
             for flag in ("silent", "nan", "clipped")}
    summary = {
        "analysed": {"path": str(path), "clips": len(clips), "computed": computed,
                     "cached": len(clips) - computed, "skipped": len(skipped),
                     "settings": settings, "baseline": base,
                     "reference": str(reference) if reference else None,
                     "metric_version": METRIC_VERSION},
        "groups": summary_groups, "keys": keys, "tests": tests, "sets": set_metrics,
        "model_based": model_info, "flags": {k: v for k, v in flags.items() if v},
        "skipped": skipped,
    }
    write_json(out_dir / "summary.json", summary)
    plot_files = _plots(out_dir / "plots", clips, tables, values, settings)
    findings = _findings(path)
    write_atomic(out_dir / "report.md", report.render(summary, plot_files, findings, out_dir))
    if not quiet:
        _terminal_table(summary, settings, base)
        counts = f"{computed} analysed, {len(clips) - computed} cached" + (
            f", {len(skipped)} skipped" if skipped else "")
        console.info(f"{len(clips)} clips ({counts})")
        for item in skipped:
            console.warn(f"skipped {item['path']}: {item['reason']}")
        for flag, paths in summary["flags"].items():
            console.warn(f"{len(paths)} clip(s) flagged {flag}: {', '.join(paths[:3])}"
                         + (" ..." if len(paths) > 3 else ""))
        console.info(f"analysis took {time.perf_counter() - started:.1f} s")
    return out_dir


def hash_seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "big")


def _key_summary(clips: list[Clip], features: list[ClipFeatures], settings: list[str]) -> dict:
    out = {}
    for setting in settings:
        keys = [f.metrics.get("key") for c, f in zip(clips, features)
                if c.setting == setting and f.metrics.get("key")]
        if keys:
            top = max(set(keys), key=keys.count)
            out[setting] = {"most_common": top, "share": keys.count(top) / len(keys),
                            "distinct": len(set(keys))}
    return out


def _model_based(clips, reference_clips, settings, base, enabled, name):
    from acr.analysis import model_based, sets

    if not enabled:
        return {"status": "skipped", "reason": "--no-model-metrics"}, None
    try:
        audio, text = model_based.clap_embeddings([c.path for c in clips],
                                                  [c.groups.get("prompt") for c in clips], name)
    except model_based.Unavailable as exc:
        return {"status": "unavailable", "model": name, "reason": str(exc)}, None
    info: dict = {"status": "ok", "model": name, "fad": {}}
    scores = sets.cosine_scores(audio, text) if text is not None else None
    target = model_based.clap_embeddings([c.path for c in reference_clips], [], name)[0] \
        if reference_clips else audio[[i for i, c in enumerate(clips) if c.setting == base]]
    for setting in settings:
        rows = [i for i, c in enumerate(clips) if c.setting == setting]
        info["fad"][setting] = sets.frechet_distance(audio[rows], target)
    return info, scores


def _plots(folder: Path, clips, tables, values, settings) -> list[Path]:
    from acr.analysis import plots

    files = []
    for metric, table in tables.items():
        if any(np.isfinite(v) for t in table.values() for v in t.values()):
            files.append(plots.box_with_pairs(metric, table, folder / f"box-{metric}.png"))
    prompt_sets = list(dict.fromkeys(str(c.groups["prompt_set"]) for c in clips
                                     if c.groups.get("prompt_set") is not None))
    if prompt_sets:
        for metric in [m for m in KEY_METRICS if np.isfinite(values[m]).any()]:
            grid = np.full((len(prompt_sets), len(settings)), np.nan)
            for r, name in enumerate(prompt_sets):
                for c, setting in enumerate(settings):
                    cell = [v for clip, v in zip(clips, values[metric])
                            if clip.setting == setting and str(clip.groups["prompt_set"]) == name
                            and np.isfinite(v)]
                    grid[r, c] = np.mean(cell) if cell else np.nan
            files.append(plots.heatmap(metric, prompt_sets, settings, grid,
                                       folder / f"heatmap-{metric}.png"))
    blocks = list(dict.fromkeys(c.block for c in clips))[:8]
    columns = settings[:6]
    cells = {}
    for clip in clips:
        if clip.block in blocks and clip.setting in columns:
            cells.setdefault((clip.block, clip.setting), clip.path)
    labels = {c.block: (c.groups.get("prompt") or c.block) for c in clips}
    files.append(plots.spectrogram_grid({(labels[b], s): p for (b, s), p in cells.items()},
                                        [labels[b] for b in blocks], columns,
                                        folder / "spectrograms.png"))
    files.append(plots.loudness_panel(tables, folder / "loudness.png"))
    usable = [m for m in values if np.nanstd(np.array(values[m], dtype=float)) > 0]
    if len(usable) >= 2 and len(clips) >= 3:
        from scipy.stats import spearmanr

        matrix = np.atleast_2d(spearmanr(np.array([values[m] for m in usable]).T,
                                         nan_policy="omit").statistic)
        files.append(plots.correlation_matrix(usable, np.nan_to_num(matrix),
                                              folder / "correlations.png"))
    return files


def _findings(path: Path) -> list[dict]:
    findings = path / "findings.json"
    if findings.is_file():
        try:
            return json.loads(findings.read_text(encoding="utf-8"))
        except ValueError:
            return []
    return []


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not np.isfinite(v) else
                             "" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


# terminal column: (short header, number format)
SHORT = {"loudness_lufs": ("LUFS", ".1f"), "spectral_centroid_hz": ("centroid Hz", ".0f"),
         "spectral_flatness": ("flatness", ".2g"), "onset_rate_hz": ("onsets/s", ".1f"),
         "tempo_bpm": ("BPM", ".0f"), "repetition": ("repetition", ".2f")}


def _terminal_table(summary: dict, settings: list[str], base: str) -> None:
    """Key metrics per setting: mean ± half the 95% CI; * = differs from the baseline."""
    from acr import console

    rows = []
    for setting in settings:
        row = [setting]
        for metric in KEY_METRICS:
            d = summary["groups"][setting][metric]
            if d["mean"] is None:
                row.append("-")
                continue
            mark = ""
            for pair in summary["tests"][metric]["settings"]["pairs"]:
                if {pair["a"], pair["b"]} == {base, setting} and pair.get("significant"):
                    mark = "*"
            low, high = d["ci95"]
            form = SHORT[metric][1]
            spread = f"±{(high - low) / 2:{form}}" if low is not None and np.isfinite(low) else ""
            row.append(f"{d['mean']:{form}}{spread}{mark}")
        rows.append(row)
    console.table(f"mean ± 95% CI (over prompts); * differs from {base} (Holm p < 0.05)",
                  ["setting", *[SHORT[m][0] for m in KEY_METRICS]], rows)

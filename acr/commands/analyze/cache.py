"""Per-clip features: computed in worker processes over batches of clips (each worker reads
and analyses its clips one at a time, so memory stays flat however many there are) and cached
in one index file per metric version, keyed by each file's path, size and modification time: a
re-run reads that file and stats the clips, and computes only the clips that changed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from acr.commands.analyze.features import METRIC_VERSION, ClipFeatures, Extractor, prepare
from acr.commands.analyze.workers import in_batches
from acr.core.audio import Unreadable, read_clip
from acr.core.clips import Clip
from acr.core.runs import write_json
from acr.core.safe_load import read_json

SAVE_EVERY = 256  # computed clips between index writes (an interrupted run keeps its work)
_EXTRACTOR: Extractor | None = None  # one per process: its filterbanks are built once


def analyse_paths(items: list[tuple[Path, bool]]) -> list[ClipFeatures | Unreadable]:
    """Features of each (file, whether to make its spectrogram grid cell), in order; a file
    that cannot be read yields its Unreadable."""
    global _EXTRACTOR
    _EXTRACTOR = _EXTRACTOR or Extractor()
    results: list[ClipFeatures | Unreadable] = []
    for path, thumbnail in items:
        try:
            audio, rate = read_clip(path)
        except Unreadable as exc:
            results.append(exc)
            continue
        results.append(_EXTRACTOR.clip(audio, rate, thumbnail))
    return results


def stamp(path: Path) -> list[int]:
    """What says a file is unchanged: its size and modification time (ns)."""
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def index_path(cache_dir: Path) -> Path:
    return cache_dir / f"features-v{METRIC_VERSION}.json"


def cached_features(clips: list[Clip], cache_dir: Path,
                    on_progress: Callable[[int], None] | None = None,
                    workers: int | None = None, meanwhile: Callable[[], Any] | None = None,
                    thumbnails: frozenset[Path] = frozenset()
                    ) -> tuple[list[ClipFeatures | Unreadable], int]:
    """Features of every clip, computing only those not cached; returns (results, computed):
    computed counts the clips analysed now (not the unreadable files, which are never cached).
    `meanwhile`: see workers.in_batches. `thumbnails`: the files whose computed features also
    carry their spectrogram grid cell."""
    index_file = index_path(cache_dir)
    index: dict = {}
    if index_file.is_file():
        index = read_json(index_file, hint="; delete it and run again (it is recomputed)")
    keys = [str(c.path.resolve()) for c in clips]
    stamps = [stamp(c.path) for c in clips]
    results: list[ClipFeatures | Unreadable | None] = []
    for key, now in zip(keys, stamps):
        entry = index.get(key)
        results.append(ClipFeatures(entry["metrics"], entry["embedding"], entry["flags"])
                       if entry is not None and entry.get("stamp") == now else None)
    missing = [i for i, r in enumerate(results) if r is None]
    done, unsaved = len(clips) - len(missing), 0
    items = [(clips[i].path, clips[i].path in thumbnails) for i in missing]
    for batch, batch_results in in_batches(analyse_paths, items, workers, meanwhile, prepare):
        for j, result in zip(batch, batch_results):
            i = missing[j]
            results[i] = result
            if isinstance(result, ClipFeatures):
                index[keys[i]] = {"stamp": stamps[i], "metrics": result.metrics,
                                  "embedding": result.embedding, "flags": result.flags}
                unsaved += 1
        done += len(batch)
        if unsaved >= SAVE_EVERY:
            write_json(index_file, index)
            unsaved = 0
        if on_progress:
            on_progress(done)
    if unsaved:
        write_json(index_file, index)
    computed = sum(isinstance(results[i], ClipFeatures) for i in missing)
    return results, computed  # type: ignore[return-value]

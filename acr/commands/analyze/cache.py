"""Per-clip features: computed in worker processes over batches of clips (each worker reads
and analyses its clips one at a time, so memory stays flat however many there are) and cached
in one index file per metric version, keyed by each file's path, size and modification time: a
re-run reads that file and stats the clips, and computes only the clips that changed."""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

from acr.commands.analyze.clips import Clip
from acr.commands.analyze.features import METRIC_VERSION, ClipFeatures, Extractor
from acr.core.audio import Unreadable, read_clip
from acr.core.runs import write_json
from acr.core.safe_load import read_json

SAVE_EVERY = 256  # computed clips between index writes (an interrupted run keeps its work)
_EXTRACTOR: Extractor | None = None  # one per process: its filterbanks are built once


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def analyse_paths(paths: list[Path]) -> list[ClipFeatures | Unreadable]:
    """Features of each file, in order; a file that cannot be read yields its Unreadable."""
    global _EXTRACTOR
    _EXTRACTOR = _EXTRACTOR or Extractor()
    results: list[ClipFeatures | Unreadable] = []
    for path in paths:
        try:
            audio, rate = read_clip(path)
        except Unreadable as exc:
            results.append(exc)
            continue
        results.append(_EXTRACTOR.clip(audio, rate))
    return results


def _one_thread_each() -> None:
    """Worker start: one BLAS / FFT thread per worker process (the workers share the CPUs)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def analyse_clips(paths: list[Path], workers: int | None = None
                  ) -> Iterator[tuple[list[int], list[ClipFeatures | Unreadable]]]:
    """(indices, results) for batches of `paths` as they finish, in order: `workers` processes
    (default: one per CPU) each analyse a batch at a time; one worker analyses in this one."""
    workers = min(workers or default_workers(), len(paths))
    if not paths:
        return
    size = max(1, min(8, math.ceil(len(paths) / (4 * workers))))  # several batches a worker
    batches = [list(range(start, min(start + size, len(paths))))
               for start in range(0, len(paths), size)]
    if workers <= 1:
        for batch in batches:
            yield batch, analyse_paths([paths[i] for i in batch])
        return
    # fork where there is fork: workers start at once, with everything imported already
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_one_thread_each) as pool:
        finished = pool.imap(analyse_paths, [[paths[i] for i in batch] for batch in batches])
        for batch, results in zip(batches, finished):
            yield batch, results


def stamp(path: Path) -> list[int]:
    """What says a file is unchanged: its size and modification time (ns)."""
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def index_path(cache_dir: Path) -> Path:
    return cache_dir / f"features-v{METRIC_VERSION}.json"


def cached_features(clips: list[Clip], cache_dir: Path,
                    on_progress: Callable[[int], None] | None = None,
                    workers: int | None = None) -> tuple[list[ClipFeatures | Unreadable], int]:
    """Features of every clip, computing only those not cached; returns (results, computed):
    computed counts the clips analysed now (not the unreadable files, which are never cached)."""
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
    for batch, batch_results in analyse_clips([clips[missing[j]].path for j in range(
            len(missing))], workers):
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

"""Per-clip features, computed in batches of clips of the same rate and shape, and cached on
disk keyed by file content and metric version (a re-run computes only changed clips)."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from acr.commands.analyze.clips import Clip
from acr.commands.analyze.features import METRIC_VERSION, ClipFeatures, Extractor
from acr.core.audio import Unreadable, read_clip
from acr.core.runs import file_digest, write_json
from acr.core.safe_load import read_json

BATCH = 16


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



def cached_features(clips: list[Clip], cache_dir: Path, on_progress=None
                    ) -> tuple[list[ClipFeatures | Unreadable], int]:
    """Features of every clip, computing only those not cached; returns (results, computed):
    computed counts the clips analysed now (not the unreadable files, which are never cached)."""
    keys = [f"{file_digest(c.path)}-v{METRIC_VERSION}" for c in clips]
    results: list[ClipFeatures | Unreadable | None] = []
    for key in keys:
        entry = cache_dir / f"{key}.json"
        if entry.is_file():
            data = read_json(entry, hint="; delete it and run again (it is recomputed)")
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
    computed = sum(isinstance(results[i], ClipFeatures) for i in missing)
    return results, computed  # type: ignore[return-value]

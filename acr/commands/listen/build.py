"""`acr listen build`: a blind test written to RUN/listening/<name>/ (design.json, index.html,
audio/ under opaque names, an empty responses/). The folder is written under a hidden name and
renamed, so it is complete or absent; an existing test is never rebuilt over its responses."""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from pathlib import Path

import numpy as np

from acr import __version__
from acr.commands.listen.clips import RunClip, pick_settings, run_clips
from acr.commands.listen.design import (ANCHOR_HZ, BROWSER, DESIGNS, FORMAT, NAME, REFERENCE_MIN,
                                        Design, opaque_id, slot_trials, test_folder, trial_label,
                                        trial_pool, write_anchor)
from acr.commands.listen.page import render_test_page
from acr.core.errors import UsageError
from acr.core.runs import Run, utc_now, write_json


def build_test(run_dir: Path, kind: str = "mos", per_rater: int | None = None, raters: int = 10,
               seed: int | None = None, settings: list[str] | None = None,
               reference: Path | None = None, name: str | None = None,
               no_preference: bool = True) -> Path:
    """Write RUN/listening/<name>/ (index.html, audio/, design.json); returns the folder."""
    run_dir = Path(run_dir)
    if kind not in DESIGNS:
        raise UsageError(f"--design {kind}: unknown; use one of {', '.join(DESIGNS)}")
    name = name or kind
    if not NAME.match(name) or name == BROWSER:
        raise UsageError(f"--name {name}: use letters, digits, - and _ (not {BROWSER!r}, the run "
                         "browser's folder)")
    if raters < 1:
        raise UsageError(f"--raters {raters}: give 1 or more rater slots")
    if per_rater is not None and per_rater < 1:
        raise UsageError(f"--per-rater {per_rater}: give 1 or more trials per rater")
    if reference is not None and kind != "mushra":
        raise UsageError("--reference goes with --design mushra (hidden reference and anchor)")
    if reference is not None and not Path(reference).is_dir():
        raise UsageError(f"--reference {reference}: no such folder")
    folder = test_folder(run_dir, name)
    if folder.exists():
        raise UsageError(f"{folder}: exists; a test is never rebuilt over its responses: choose "
                         "another --name or remove the folder")
    clips = pick_settings(run_clips(run_dir), settings)
    chosen = [s for s in dict.fromkeys(c.setting for c in clips)]
    reference = Path(reference) if reference is not None else None
    items = trial_pool(kind, clips, chosen, reference)
    seed = int(seed) if seed is not None else secrets.randbelow(2 ** 31)
    per_rater = min(per_rater or len(items), len(items))

    # clips: an opaque id and file for every stimulus; open and hidden references differ in name
    registry: dict[str, dict] = {}
    sources: dict[str, tuple[Path, str]] = {}  # clip id -> (source file, how: copy | anchor)

    def register(role: str, source, item: dict) -> str:
        if isinstance(source, RunClip):
            rel, path, setting = source.rel, run_dir / source.rel, source.setting
        else:  # a reference: named by its place in --reference, not by where that lives
            rel = Path(source).relative_to(reference).as_posix()
            path, setting = Path(source), role
        clip_id = opaque_id(seed, name, role, rel)
        if clip_id not in registry:
            suffix = ".wav" if role == "anchor" else path.suffix.lower()
            registry[clip_id] = {
                "role": role, "setting": setting,
                "path": source.rel if isinstance(source, RunClip) else None,
                "reference": None if isinstance(source, RunClip) else rel,
                "block": item["block"], "prompt": item["prompt"],
                "sample_index": source.sample_index if isinstance(source, RunClip) else None,
                "src": f"audio/{clip_id}{suffix}"}
            sources[clip_id] = (path, "anchor" if role == "anchor" else "copy")
        return clip_id

    pool = []
    for number, item in enumerate(items):
        entry = {"id": f"i{number + 1}", "block": item["block"], "prompt": item["prompt"],
                 "clips": [register(role, source, item) for role, source in item["clips"]]}
        if "reference" in item:
            entry["reference"] = register("reference", item["reference"], item)
        pool.append(entry)
    order = np.random.default_rng([seed]).permutation(len(pool))
    slots = []
    for slot in range(raters):
        trials = slot_trials(pool, slot, per_rater, order, seed, kind, reference is not None)
        slots.append([{"id": t["id"], "item": pool[t["item"]]["id"],
                       "repeat_of": t["repeat_of"],
                       "clips": [{"label": trial_label(kind, position),
                                  "clip": pool[t["item"]]["clips"][index]}
                                 for position, index in enumerate(t["order"])]}
                      for t in trials])
    design = {"format": FORMAT, "name": name, "design": kind, "seed": seed,
              "settings": chosen, "per_rater": per_rater, "no_preference": no_preference,
              "reference_min": REFERENCE_MIN if reference is not None else None,
              "anchor_hz": ANCHOR_HZ if reference is not None else None,
              "clips": registry, "items": pool, "slots": slots}
    design["id"] = hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:16]
    design.update(created=utc_now(), acr_version=__version__)

    # write into a hidden folder, then rename: a test folder is complete or absent
    staging = folder.parent / f".{name}-building"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "audio").mkdir(parents=True)
        for clip_id, (path, how) in sources.items():
            target = staging / registry[clip_id]["src"]
            if how == "copy":
                shutil.copyfile(path, target)
            else:
                write_anchor(path, target)
        test = Design(design, folder)
        (staging / "index.html").write_text(render_test_page(test), encoding="utf-8")
        write_json(staging / "design.json", design)
        (staging / "responses").mkdir()
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if (run_dir / "events.jsonl").is_file():
        Run(run_dir).event("listen.build", name=name, design=kind, seed=seed, slots=raters,
                           trials_per_slot=len(slots[0]), items=len(pool))
    return folder

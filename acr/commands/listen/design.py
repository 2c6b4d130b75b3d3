"""A blind listening test from a run: which clips, which trials, in which order for each rater
slot, and the attention checks; written as RUN/listening/<name>/design.json beside the page.

Designs (ITU-T P.800 ACR, pairwise preference, ITU-R BS.1534 MUSHRA):
- mos: one clip a trial, overall quality 1-5 (and, when the clip has a prompt, how well it
  matches the prompt, 1-5); the pool is every clip.
- ab: two clips of one prompt from two settings, "which is better" (or "no preference"); the
  pool holds every pair of settings for every prompt, so pairs are balanced across settings.
- mushra: every setting of one prompt (and sample) at once, 0-100; with references, the open
  reference, a hidden copy of it and a 3.5 kHz low-pass anchor join every trial.

Each slot (one rater) gets `per_rater` items of the pool (consecutive runs of one seeded
permutation, so every item is rated about equally often), in its own seeded order, with sides
(labels) shuffled per trial, and attention checks: repeats of earlier trials (A/B sides swapped),
and in MUSHRA with references the hidden reference itself (it must score >= 90).
Clip files are copied to audio/ under opaque names, so nothing in the page names a setting.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acr.commands.listen.clips import RunClip
from acr.core import console
from acr.core.clips import AUDIO_SUFFIXES
from acr.core.errors import UsageError
from acr.core.runs import LISTENING

FORMAT = "acr-listening/1"
DESIGNS = ("mos", "ab", "mushra")
BROWSER = "browse"  # RUN/listening/browse/: the run browser, not a test
CHECK_SHARE = 0.1  # repeated trials: a tenth of a slot's trials, at least one
MOS_LABELS = ["Bad", "Poor", "Fair", "Good", "Excellent"]  # P.800 ACR, 1-5
ANCHOR_HZ = 3500.0  # BS.1534-3 low-pass anchor
REFERENCE_MIN = 90  # BS.1534-3 post-screening: the hidden reference scores at least this
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class Design:
    """design.json of a test, with the lookups the page, the checks and the analysis need."""

    data: dict
    folder: Path

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def kind(self) -> str:
        return self.data["design"]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def settings(self) -> list[str]:
        return self.data["settings"]

    def clip(self, clip_id: str) -> dict:
        return self.data["clips"][clip_id]

    def trials(self, slot: int) -> list[dict]:
        return self.data["slots"][slot]

    @property
    def slot_count(self) -> int:
        return len(self.data["slots"])


def test_folder(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / LISTENING / name


def load_design(folder: Path) -> Design:
    path = Path(folder) / "design.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); rebuild the test with acr listen build")
    if data.get("format") != FORMAT:
        raise UsageError(f"{path}: format {data.get('format')!r}, not {FORMAT}; rebuild the test")
    return Design(data, Path(folder))


def list_tests(run_dir: Path) -> list[Design]:
    """The listening tests built in a run (folders of RUN/listening/ with a design.json)."""
    root = Path(run_dir) / LISTENING
    return [load_design(p) for p in sorted(root.iterdir()) if (p / "design.json").is_file()] \
        if root.is_dir() else []


def find_test(run_dir: Path, name: str | None) -> Design:
    """The test called `name`, or the only test of the run."""
    tests = list_tests(run_dir)
    if name is not None:
        for test in tests:
            if test.name == name:
                return test
        raise UsageError(f"{test_folder(run_dir, name)}: no listening test of that name; "
                         + (f"the run has {', '.join(t.name for t in tests)}" if tests else
                            "build one with acr listen build"))
    if not tests:
        raise UsageError(f"{run_dir}: no listening test built; run acr listen build {run_dir} "
                         "first")
    if len(tests) > 1:
        raise UsageError(f"{run_dir}: several listening tests ({', '.join(t.name for t in tests)})"
                         "; choose one with --name")
    return tests[0]


def opaque_id(seed: int, name: str, role: str, rel: str) -> str:
    return hashlib.sha256(f"{seed}|{name}|{role}|{rel}".encode()).hexdigest()[:12]


def _blocks(clips: list[RunClip]) -> dict[str, dict[str, list[RunClip]]]:
    """block -> setting -> clips (by sample index)."""
    out: dict[str, dict[str, list[RunClip]]] = {}
    for clip in clips:
        out.setdefault(clip.block, {}).setdefault(clip.setting, []).append(clip)
    for by_setting in out.values():
        for group in by_setting.values():
            group.sort(key=lambda c: (c.sample_index, c.rel))
    return out


def _reference_file(folder: Path, clip: RunClip) -> Path:
    """FOLDER/<prompt set>/<prompt index>.<audio suffix>, the reference of a prompt."""
    if clip.prompt_set is None or clip.prompt_index is None:
        raise UsageError(f"--reference: {clip.rel} has no prompt set and index (not from acr "
                         "experiment); references are matched as FOLDER/<prompt set>/<prompt "
                         "index>.wav")
    for suffix in sorted(AUDIO_SUFFIXES):
        path = folder / str(clip.prompt_set) / f"{clip.prompt_index}{suffix}"
        if path.is_file():
            return path
    raise UsageError(f"--reference {folder}: no reference for prompt {clip.block} "
                     f"({clip.prompt!r}); expected {folder / str(clip.prompt_set)}/"
                     f"{clip.prompt_index}.wav")


def trial_pool(kind: str, clips: list[RunClip], settings: list[str], reference: Path | None
               ) -> list[dict]:
    """The items trials are drawn from (block, prompt, and clips as (role, RunClip or the
    reference file)); a UsageError when the design does not fit the run."""
    blocks = _blocks(clips)
    if kind in ("ab", "mushra") and len(settings) < 2:
        raise UsageError(f"--design {kind} compares settings, and the run (or --settings) has "
                         f"only {', '.join(settings)}; use --design mos, or pick 2 or more")
    items: list[dict] = []
    if kind == "mos":
        items = [{"block": c.block, "prompt": c.prompt, "clips": [("sample", c)]}
                 for c in clips]
    elif kind == "ab":
        for block, by_setting in blocks.items():
            present = [s for s in settings if s in by_setting]
            for number, (i, j) in enumerate((i, j) for i in range(len(present))
                                            for j in range(i + 1, len(present))):
                a, b = by_setting[present[i]], by_setting[present[j]]
                k = number % min(len(a), len(b))  # spread the pairs over the samples
                items.append({"block": block, "prompt": a[k].prompt,
                              "clips": [("sample", a[k]), ("sample", b[k])]})
    else:
        for block, by_setting in blocks.items():
            if any(s not in by_setting for s in settings):
                console.warn(f"mushra: prompt {block} lacks setting(s) "
                             f"{', '.join(s for s in settings if s not in by_setting)}; left out")
                continue
            for k in range(min(len(by_setting[s]) for s in settings)):
                first = by_setting[settings[0]][k]
                item = {"block": block, "prompt": first.prompt,
                        "clips": [("sample", by_setting[s][k]) for s in settings]}
                if reference is not None:
                    ref = _reference_file(reference, first)
                    item["clips"] += [("hidden_reference", ref), ("anchor", ref)]
                    item["reference"] = ref
                items.append(item)
    if not items:
        raise UsageError(f"--design {kind}: no trials can be made from this run (ab needs two "
                         "settings of one prompt; mushra every setting of a prompt)")
    return items


def slot_trials(items: list[dict], slot: int, per_rater: int, order: np.ndarray, seed: int,
                 kind: str, has_reference: bool) -> list[dict]:
    """One slot's trials: its share of the pool in its own order, labels shuffled per trial,
    and repeated trials as attention checks."""
    rng = np.random.default_rng([seed, slot])
    picked = [int(order[(slot * per_rater + i) % len(order)]) for i in range(per_rater)]
    picked = [picked[i] for i in rng.permutation(len(picked))]
    trials = [{"item": item, "repeat_of": None,
               "order": [int(i) for i in rng.permutation(len(items[item]["clips"]))]}
              for item in picked]
    checks = 0 if kind == "mushra" and has_reference else \
        max(1, int(round(CHECK_SHARE * len(trials))))
    for check in range(min(checks, len(trials))):
        original = trials[check]  # the slot's first trials come back later, in new positions
        order = original["order"][::-1] if kind == "ab" else \
            [int(i) for i in rng.permutation(len(original["order"]))]
        position = int(rng.integers(check + 2, len(trials) + 1)) if len(trials) > check + 1 \
            else len(trials)
        trials.insert(position, {"item": original["item"], "repeat_of": original,
                                 "order": order})
    for number, trial in enumerate(trials):  # ids in page order: a repeat looks like any trial
        trial["id"] = f"s{slot}t{number + 1}"
    for trial in trials:
        trial["repeat_of"] = trial["repeat_of"]["id"] if trial["repeat_of"] else None
    return trials


def trial_label(kind: str, position: int) -> str:
    return str(position + 1) if kind == "mushra" else "AB"[position] if kind == "ab" else "A"


def write_anchor(source: Path, target: Path) -> None:
    """The BS.1534 low-pass anchor: the reference through a 3.5 kHz low-pass filter (8th-order
    Butterworth, applied forwards and backwards: no phase shift), as 16-bit WAV."""
    import soundfile as sf
    from scipy import signal

    try:
        data, rate = sf.read(str(source), dtype="float64", always_2d=True)
    except Exception as exc:
        raise UsageError(f"{source}: unreadable reference ({str(exc).splitlines()[0]})")
    if rate <= 2 * ANCHOR_HZ:
        filtered = data
    else:
        sos = signal.butter(8, ANCHOR_HZ, btype="low", fs=rate, output="sos")
        filtered = signal.sosfiltfilt(sos, data, axis=0)
    sf.write(str(target), np.clip(filtered, -1, 1), rate, subtype="PCM_16", format="WAV")

"""The fine-tuning dataset: audio files, their captions, segments and the train / valid split.

Captions come from, in this order of precedence: `metadata.csv` (header `file,description[,...]`),
`*.jsonl` manifests (`{"path": ..., "description": ...}` per line), an AudioCraft `.json` sidecar
beside the file (description, with genre / bpm / key / moods / instrument folded into the text),
or a `.txt` beside the file.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acr.core.clips import AUDIO_SUFFIXES
from acr.core.errors import UsageError

FOLDED = ("genre", "bpm", "key", "moods", "instrument", "keywords")
MIN_TAIL_SECONDS = 1.0  # a long file's last partial segment is kept (padded) from this length


@dataclass
class AudioFile:
    path: Path
    rel: str
    caption: str
    caption_source: str
    seconds: float
    sample_rate: int
    channels: int


@dataclass
class Segment:
    file: str  # rel of its AudioFile
    index: int  # position in the file
    start: float  # seconds
    seconds: float  # audio in the segment (the rest is padding, masked in the loss)
    caption: str


@dataclass
class Scan:
    files: list[AudioFile]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason)
    caption_sources: dict[str, int] = field(default_factory=dict)


def fold_sidecar(data: dict) -> str | None:
    """AudioCraft metadata as one description: 'text. genre: rock. bpm: 120. moods: a, b.'"""
    parts = [str(data["description"]).strip()] if data.get("description") else []
    for key in FOLDED:
        value = data.get(key)
        if value in (None, "", []):
            continue
        text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}: {text}")
    return ". ".join(p.rstrip(".") for p in parts) if parts else None


def _manifest_captions(folder: Path) -> dict[str, tuple[str, str]]:
    """rel path -> (caption, source) from metadata.csv and *.jsonl manifests."""
    captions: dict[str, tuple[str, str]] = {}
    for manifest in sorted(folder.glob("*.jsonl"), reverse=True):  # csv wins: written last
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name = entry.get("path") or entry.get("file")
                text = fold_sidecar(entry) or entry.get("caption") or entry.get("text")
            except (ValueError, AttributeError):
                raise UsageError(f"{manifest}:{number}: not a JSON object; each line must be "
                                 '{"path": ..., "description": ...}')
            if name and text:
                rel = _relative(folder, manifest.parent / name)
                captions[rel] = (str(text).strip(), manifest.name)
    table = folder / "metadata.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            name_key = next((fields[k] for k in ("file", "path", "filename") if k in fields), None)
            text_key = next((fields[k] for k in ("description", "caption", "text")
                             if k in fields), None)
            if name_key is None or text_key is None:
                raise UsageError(f"{table}:1: header needs a file column and a description "
                                 f"column (found: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                if row.get(name_key) and (row.get(text_key) or "").strip():
                    rel = _relative(folder, folder / row[name_key].strip())
                    captions[rel] = (row[text_key].strip(), "metadata.csv")
    return captions


def _relative(folder: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _beside(path: Path) -> tuple[str, str] | None:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            text = fold_sidecar(json.loads(sidecar.read_text(encoding="utf-8")))
        except ValueError:
            text = None
        if text:
            return text, "json sidecar"
    note = path.with_suffix(".txt")
    if note.is_file() and note.read_text(encoding="utf-8").strip():
        return note.read_text(encoding="utf-8").strip(), "txt"
    return None


def scan(folder: Path) -> Scan:
    """Every audio file under `folder` with its caption; UsageError when nothing is usable."""
    import soundfile as sf

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"data: {folder}: no such folder; point `data:` at a folder of audio "
                         "files with captions")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                   and p.is_file() and not any(part.startswith(".")
                                               for part in p.relative_to(folder).parts))
    if not paths:
        raise UsageError(f"data: {folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    manifests = _manifest_captions(folder)
    result = Scan([])
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        found = manifests.get(rel) or _beside(path)
        try:
            info = sf.info(str(path))
        except Exception as exc:
            result.skipped.append((rel, f"unreadable: {str(exc).splitlines()[0]}"))
            continue
        if info.frames == 0:
            result.skipped.append((rel, "empty: no samples"))
            continue
        if found is None:
            result.skipped.append((rel, "no caption"))
            continue
        result.caption_sources[found[1]] = result.caption_sources.get(found[1], 0) + 1
        result.files.append(AudioFile(path, rel, found[0], found[1], info.frames / info.samplerate,
                                      info.samplerate, info.channels))
    if not result.files:
        reasons = {reason.split(":")[0] for _, reason in result.skipped}
        if reasons == {"no caption"}:
            raise UsageError(f"data: {folder}: none of the {len(paths)} audio files has a "
                             "caption; add metadata.csv (file,description), a .jsonl manifest, "
                             "or a .txt / .json beside each file")
        raise UsageError(f"data: {folder}: no usable audio: {len(result.skipped)} file(s) "
                         f"skipped (first: {result.skipped[0][0]}: {result.skipped[0][1]})")
    return result


def segments_of(file: AudioFile, seconds: float) -> list[Segment]:
    """Consecutive segments; a short file gives one padded segment, a long file's tail is kept
    from MIN_TAIL_SECONDS (or a whole segment, if shorter)."""
    full = int(file.seconds // seconds)
    out = [Segment(file.rel, i, i * seconds, seconds, file.caption) for i in range(full)]
    tail = file.seconds - full * seconds
    if full == 0 or tail >= min(MIN_TAIL_SECONDS, seconds):
        out.append(Segment(file.rel, full, full * seconds, min(tail, seconds), file.caption))
    return out


def split(files: list[AudioFile], valid_split: float, seed: int
          ) -> tuple[list[AudioFile], list[AudioFile]]:
    """Deterministic train / valid split by file (at least one valid file from two files up)."""
    order = sorted(files, key=lambda f: f.rel)
    np.random.default_rng(seed).shuffle(order)
    n_valid = 0
    if valid_split > 0 and len(order) >= 2:
        n_valid = min(len(order) - 1, max(1, round(valid_split * len(order))))
    valid = sorted(order[:n_valid], key=lambda f: f.rel)
    return sorted(order[n_valid:], key=lambda f: f.rel), valid


def describe(scan_result: Scan, train: list[Segment], valid: list[Segment],
             n_train_files: int, n_valid_files: int) -> list[str]:
    """The dataset in a few lines (printed before training)."""
    hours = sum(f.seconds for f in scan_result.files) / 3600
    sources = ", ".join(f"{n} from {s}" for s, n in scan_result.caption_sources.items())
    lines = [f"dataset: {len(scan_result.files)} files ({hours * 60:.1f} min), captions: "
             f"{sources}",
             f"segments: {len(train)} train from {n_train_files} files, {len(valid)} valid from "
             f"{n_valid_files} files"]
    if scan_result.skipped:
        lines.append(f"skipped {len(scan_result.skipped)} file(s): " + "; ".join(
            f"{rel} ({reason})" for rel, reason in scan_result.skipped[:10])
            + (" ..." if len(scan_result.skipped) > 10 else ""))
    return lines


# ----------------------------------------------------------------------------------------------
# A demo dataset


DEMO_CLASSES = {
    "chords": ("warm piano chords, slow, in {key}", "chords"),
    "arpeggio": ("bright plucked arpeggio, {key}, gentle", "arpeggio"),
    "drums": ("punchy drum loop at {bpm} bpm, kick, snare and hi-hat", "drums"),
}


def make_demo_data(folder: Path, files_per_class: int = 6, seconds: float = 6.0,
                   rate: int = 44100) -> list[Path]:
    """Write captioned tones, chords and drum loops (44.1 kHz stereo) plus metadata.csv."""
    import soundfile as sf

    from acr.core.runs import write_atomic
    from acr.core.synth import drums, progression, tone

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"--make-demo-data {folder}: folder exists and is not empty; give a "
                         "new folder")
    folder.mkdir(parents=True, exist_ok=True)
    keys = [("C major", 60), ("G major", 67), ("D major", 62), ("A minor", 57), ("E minor", 64),
            ("F major", 65)]
    rows, written = [["file", "description"]], []
    for name, (template, kind) in DEMO_CLASSES.items():
        for i in range(files_per_class):
            key, root = keys[i % len(keys)]
            minor = "minor" in key
            third = 3 if minor else 4
            bpm = 90 + 10 * i
            if kind == "chords":
                triads = [[root, root + third, root + 7], [root + 5, root + 9, root + 12],
                          [root + 7, root + 11, root + 14], [root, root + third, root + 7]]
                mono = progression(triads, rate, seconds / 4)
            elif kind == "arpeggio":
                notes = [root, root + third, root + 7, root + 12] * int(seconds * 2)
                mono = 0.25 * np.concatenate([tone(440 * 2 ** ((n + 12 - 69) / 12), 0.125,
                                                   rate, harmonics=2) for n in notes])
                mono = mono[: int(seconds * rate)]
            else:
                mono = drums(bpm, seconds, rate, seed=i)
            pan = 0.15 * (i % 3 - 1)
            stereo = np.stack([mono * (1 - pan), mono * (1 + pan)])
            path = folder / f"{name}-{i:02d}.wav"
            sf.write(str(path), stereo.T.astype(np.float32), rate, subtype="PCM_16")
            written.append(path)
            rows.append([path.name, template.format(key=key, bpm=bpm)])
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_atomic(folder / "metadata.csv", buffer.getvalue())
    return written


def frames(seconds: float, frame_rate: float) -> int:
    return int(math.ceil(seconds * frame_rate - 1e-9))

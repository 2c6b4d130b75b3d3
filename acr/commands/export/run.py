"""`acr export`: a shareable, verifiable zip of one or more run folders.

The zip holds a rendered README.md, each run's records (config, meta, manifest or history,
events, findings), its analysis (not the cache), optionally its samples (WAV, or FLAC re-encoded
losslessly) and a fine-tune's model/ (never optimizer state), and MANIFEST.json with the size and
sha256 of every other entry. Each run sits under `<name>/<run folder>/`, its name taken from its
config.yaml. Every text entry is redacted (redact.py), and with FLAC every record that names a
re-encoded WAV names the FLAC instead. Entries are streamed into the zip (archive.py): memory
does not grow with the package, and the same runs give a byte-identical zip.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import yaml

from acr.commands.export.archive import BLOCK, Entry, file_blocks, write_package
from acr.commands.export.readme import render_readme
from acr.commands.export.redact import Redactor
from acr.core import console
from acr.core.config.schema import NAME_PATTERN
from acr.core.errors import UsageError
from acr.core.runs import ANALYSIS, current_status
from acr.core.safe_load import read_json

LARGE_BYTES = 500 * 1024 * 1024
RECORDS = ["config.yaml", "meta.json", "events.jsonl", "experiment.json", "findings.json",
           "history.csv", "summary.json"]
TEXT_SUFFIXES = {".yaml", ".json", ".jsonl", ".csv", ".md", ".txt"}
EXPORTED_AUDIO = {".wav", ".flac"}
# WAV sample formats that FLAC holds exactly (float and 32-bit WAVs stay WAV)
FLAC_SUBTYPES = {"PCM_16": "PCM_16", "PCM_24": "PCM_24"}
_PATH_CHAR = r"[^\s\"'`,;|()\[\]{}<>=]"
WAV_REFERENCE = re.compile(rf"(?<!{_PATH_CHAR}){_PATH_CHAR}+\.wav(?![\w.-])", re.IGNORECASE)


@dataclass
class RunSource:
    """A run folder being exported: where it is, its place in the package, what goes in."""

    dir: Path
    prefix: str
    meta: dict
    files: list[Path]


def _check_inside(path: Path, root: Path) -> None:
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{path}: a symbolic link to {path.readlink()}, outside the run "
                         "folder; acr export packages only what is inside it (replace the link "
                         "with a copy)")


def _run_files(run_dir: Path, samples: str, include_model: bool) -> list[Path]:
    """The files of a run that go into the package, checked for links that leave the run."""
    picked = []
    for path in sorted(run_dir.rglob("*")):
        _check_inside(path, run_dir)
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir)
        top = rel.parts[0]
        if any(part.startswith(".") for part in rel.parts) or path.suffix == ".tmp":
            continue
        if len(rel.parts) == 1 and rel.name in RECORDS:
            picked.append(path)
        elif top == ANALYSIS and (len(rel.parts) < 2 or rel.parts[1] != "cache"):
            picked.append(path)
        elif top in ("plots", "images"):  # images: those image prompts were described from
            picked.append(path)
        elif top == "samples" and (path.suffix == ".json" or
                                   (samples == "all" and path.suffix.lower() in EXPORTED_AUDIO)):
            picked.append(path)
        elif top == "model" and include_model:
            picked.append(path)
        elif top == "listening":  # acr listen: pages, their audio, designs and answers, whole
            picked.append(path)
    return picked


def run_name(run_dir: Path) -> str:
    """The run's name: `name:` in its config.yaml, else its parent folder's name."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = None
    name = config.get("name") if isinstance(config, dict) else None
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name):
        return name
    parent = run_dir.resolve().parent.name
    return parent if re.fullmatch(NAME_PATTERN, parent) else "run"


def _read_meta(run_dir: Path) -> dict:
    meta_path = run_dir / "meta.json"
    if not run_dir.is_dir() or not meta_path.is_file():
        raise UsageError(f"{run_dir}: not a run folder (no meta.json); give folders that "
                         "acr generate / experiment / finetune created")
    meta = read_json(meta_path, hint="; is this a run folder?")
    if not isinstance(meta, dict):
        raise UsageError(f"{meta_path}: not a run's meta.json (no JSON object)")
    return meta


def find_runs(run_dirs: list[Path], samples: str, include_model: bool, force: bool
              ) -> list[RunSource]:
    """The runs to export, each with a distinct `<name>/<run folder>` prefix."""
    runs, seen, taken = [], set(), set()
    for run_dir in map(Path, run_dirs):
        meta = _read_meta(run_dir)
        if meta.get("status") in ("running", "failed") and not force:
            killed = current_status(run_dir, meta) == "interrupted"  # (said running: unheld)
            state = "was killed (its meta.json says running; no process holds it)" if killed \
                else f"is {meta['status']}"
            raise UsageError(f"{run_dir}: the run {state}"
                             + (f" ({meta['error']})" if meta.get("error") else "")
                             + "; finish or resume it first, or pass --force to export it as is")
        resolved = run_dir.resolve()
        if resolved in seen:
            raise UsageError(f"{run_dir}: given twice")
        seen.add(resolved)
        prefix = base = f"{run_name(run_dir)}/{resolved.name}"
        copy = 2
        while prefix in taken:  # two runs of one name in folders of one name
            prefix, copy = f"{base}-{copy}", copy + 1
        taken.add(prefix)
        runs.append(RunSource(run_dir, prefix, meta, _run_files(run_dir, samples, include_model)))
    return runs


def _text_blocks(path: Path, rewrite: Callable[[str], str]) -> Iterator[bytes]:
    """A text file rewritten line by line (paths and tokens never span lines)."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        block, size = [], 0
        for line in fh:
            block.append(rewrite(line))
            size += len(line)
            if size >= BLOCK:
                yield "".join(block).encode("utf-8", "surrogateescape")
                block, size = [], 0
        if block:
            yield "".join(block).encode("utf-8", "surrogateescape")


def _flac_blocks(path: Path, workdir: Path) -> Iterator[bytes]:
    """A WAV re-encoded as FLAC of the same bit depth (block by block, through a temporary
    file: FLAC's header is completed only once all audio is in)."""
    import soundfile as sf

    target = workdir / "sample.flac"
    with sf.SoundFile(str(path)) as source, \
            sf.SoundFile(str(target), "w", samplerate=source.samplerate,
                         channels=source.channels, format="FLAC",
                         subtype=FLAC_SUBTYPES[source.subtype]) as sink:
        for block in source.blocks(blocksize=1 << 16, dtype="int32", always_2d=True):
            sink.write(block)
    try:
        yield from file_blocks(target)
    finally:
        target.unlink(missing_ok=True)


def _wav_subtype(path: Path) -> str:
    import soundfile as sf

    try:
        return sf.info(str(path)).subtype
    except RuntimeError as exc:  # soundfile's LibsndfileError
        raise UsageError(f"{path}: cannot read it as audio ({exc}); remove or replace it, or "
                         "export with --audio-format wav")


def _renamed_wavs(text: str, renamed: dict[str, str], prefix: str) -> str:
    """`text` with every reference to a re-encoded WAV (relative to the run, or to the package)
    naming its FLAC."""
    def swap(match: re.Match) -> str:
        reference = match.group(0)
        rel = reference[len(prefix) + 1:] if reference.startswith(prefix + "/") else reference
        if rel not in renamed:
            return reference
        return reference[:len(reference) - len(rel)] + renamed[rel]

    return WAV_REFERENCE.sub(swap, text)


def run_entries(run: RunSource, redactor: Redactor, audio_format: str, workdir: Path
                ) -> tuple[list[Entry], int]:
    """The package entries of one run, and how many WAVs stay WAV under --audio-format flac."""
    renamed, kept = {}, 0
    if audio_format == "flac":
        for path in run.files:
            rel = path.relative_to(run.dir).as_posix()
            if path.suffix.lower() == ".wav" and not rel.startswith("listening/"):
                # (listening-test pages name their WAVs: they stay as they are)
                if _wav_subtype(path) in FLAC_SUBTYPES:
                    renamed[rel] = rel[:-4] + ".flac"
                else:
                    kept += 1

    def rewrite(text: str) -> str:
        text = redactor.text(text)
        return _renamed_wavs(text, renamed, run.prefix) if renamed else text

    entries = []
    for path in run.files:
        rel = path.relative_to(run.dir).as_posix()
        name, size = f"{run.prefix}/{renamed.get(rel, rel)}", path.stat().st_size
        if rel in renamed:
            entries.append(Entry(name, size, partial(_flac_blocks, path, workdir)))
        elif path.suffix in TEXT_SUFFIXES:
            entries.append(Entry(name, size, partial(_text_blocks, path, rewrite)))
        else:
            entries.append(Entry(name, size, partial(file_blocks, path)))
    return entries, kept


def _readme(runs: list[RunSource], entries: list[Entry], redactor: Redactor) -> Entry:
    by_name = {entry.name: entry for entry in entries}

    def read(name: str) -> bytes | None:
        return by_name[name].read() if name in by_name else None

    described = []
    for run in runs:
        meta = json.loads(read(f"{run.prefix}/meta.json"))
        described.append({"prefix": run.prefix, "meta": meta,
                          "command_line": redactor.command(meta["argv"])
                          if meta.get("argv") else None})
    text = redactor.text(render_readme(described, sorted(by_name), read)).encode()
    return Entry("README.md", len(text), lambda: [text])


def export_runs(run_dirs: list[Path], out: Path | None, samples: str = "all",
                audio_format: str = "wav", include_model: bool = False, force: bool = False
                ) -> tuple[Path, dict]:
    """Write the package; returns its path and a summary (entries, bytes by kind)."""
    out = Path(out) if out is not None else Path(f"{Path(run_dirs[0]).resolve()}.zip")
    if out.exists() and not force:
        raise UsageError(f"{out}: exists; choose another -o or pass --force to replace it")
    runs = find_runs(run_dirs, samples, include_model, force)
    redactor = Redactor.for_runs({run.dir: run.prefix for run in runs})
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as workdir:
        entries, kept = [], 0
        for run in runs:
            run_part, run_kept = run_entries(run, redactor, audio_format, Path(workdir))
            entries += run_part
            kept += run_kept
        if kept:
            console.warn(f"{kept} WAV(s) stay WAV: float and 32-bit samples do not fit FLAC "
                         "losslessly")
        entries.append(_readme(runs, entries, redactor))
        files = write_package(out, entries)
    kinds: dict[str, int] = {}
    for name, listed in files.items():
        kind = name.split("/")[2] if name.count("/") >= 2 else "records"
        kind = kind if kind in ("samples", "analysis", "model", "plots", "listening", "images") \
            else "records"
        kinds[kind] = kinds.get(kind, 0) + listed["size"]
    if kinds.get("samples", 0) > LARGE_BYTES:
        console.warn("samples make this package large; --audio-format flac shrinks them "
                     "losslessly, --samples none leaves them out")
    return out, {"entries": len(files) + 1, "bytes": out.stat().st_size, "kinds": kinds,
                 "runs": [run.prefix for run in runs]}

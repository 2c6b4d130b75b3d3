"""`acr export`: a shareable, verifiable zip of one or more run folders.

The zip holds a rendered README.md, each run's records (config, meta, manifest or history,
events, findings), its analysis (not the cache), optionally its samples (WAV or lossless FLAC)
and a fine-tune's model/ (never optimizer state), and MANIFEST.json with the size and sha256 of
every other entry. Entries are sorted and carry fixed timestamps and permissions, so the same
runs give a byte-identical zip; `--verify` rechecks a zip against its manifest.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from acr import __version__
from acr.commands.export.readme import render_readme
from acr.core import console
from acr.core.atomic import replacing
from acr.core.errors import UsageError
from acr.core.safe_load import read_json

FORMAT = "acr-export/1"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
LARGE_BYTES = 500 * 1024 * 1024
RECORDS = ["config.yaml", "meta.json", "events.jsonl", "experiment.json", "findings.json",
           "history.csv", "summary.json"]
TEXT_SUFFIXES = {".yaml", ".json", ".jsonl", ".csv", ".md", ".txt"}
AUDIO_SUFFIXES = {".wav", ".flac"}
TOKEN = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,})\b")


@dataclass
class Entry:
    name: str  # path inside the zip
    data: bytes


def scrub(text: str, run_dir: Path, prefix: str) -> str:
    """No absolute home paths or token-like secrets in shared text: the run folder becomes its
    path in the package, the home folder `~`, tokens `<redacted>`."""
    for absolute in {str(run_dir.resolve()), str(run_dir)}:
        if absolute not in ("", "."):
            text = text.replace(absolute, prefix)
    home = str(Path.home())
    if home not in ("", "/"):
        text = text.replace(home, "~")
    return TOKEN.sub("<redacted>", text)


def _check_inside(path: Path, root: Path) -> None:
    if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{path}: a symbolic link to {os.readlink(path)}, outside the run "
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
        elif top == "analysis" and (len(rel.parts) < 2 or rel.parts[1] != "cache"):
            picked.append(path)
        elif top == "plots":
            picked.append(path)
        elif top == "samples" and (path.suffix == ".json" or
                                   (samples == "all" and path.suffix.lower() in AUDIO_SUFFIXES)):
            picked.append(path)
        elif top == "model" and include_model:
            picked.append(path)
    return picked


def _flac(path: Path) -> bytes:
    """A WAV re-encoded as FLAC (lossless; 16-bit PCM stays 16-bit, float becomes 24-bit)."""
    import soundfile as sf

    info = sf.info(str(path))
    data, rate = sf.read(str(path), dtype="int32" if info.subtype != "FLOAT" else "float64",
                         always_2d=True)
    buffer = io.BytesIO()
    subtype = "PCM_16" if info.subtype == "PCM_16" else "PCM_24"
    sf.write(buffer, data, rate, format="FLAC", subtype=subtype)
    return buffer.getvalue()


def package_name(run_dir: Path, meta: dict) -> str:
    """`<run name>/<run folder>`, the run's place inside the package."""
    resolved = run_dir.resolve()
    return f"{resolved.parent.name or 'run'}/{resolved.name}"


def collect(run_dirs: list[Path], samples: str, audio_format: str, include_model: bool,
            force: bool) -> tuple[list[Entry], list[dict]]:
    """Every entry of the package (but README and MANIFEST) and one summary per run."""
    entries, runs, prefixes = [], [], set()
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        meta_path = run_dir / "meta.json"
        if not run_dir.is_dir() or not meta_path.is_file():
            raise UsageError(f"{run_dir}: not a run folder (no meta.json); give folders that "
                             "acr generate / experiment / finetune created")
        meta = read_json(meta_path)
        if meta.get("status") in ("running", "failed") and not force:
            raise UsageError(f"{run_dir}: the run is {meta['status']}"
                             + (f" ({meta['error']})" if meta.get("error") else "")
                             + "; finish or resume it first, or pass --force to export it as is")
        prefix = package_name(run_dir, meta)
        if prefix in prefixes:
            raise UsageError(f"{run_dir}: given twice")
        prefixes.add(prefix)
        for path in _run_files(run_dir, samples, include_model):
            rel = path.relative_to(run_dir).as_posix()
            if path.suffix.lower() == ".wav" and audio_format == "flac":
                entries.append(Entry(f"{prefix}/{rel[:-4]}.flac", _flac(path)))
            elif path.suffix in TEXT_SUFFIXES:
                text = path.read_text(encoding="utf-8")
                entries.append(Entry(f"{prefix}/{rel}", scrub(text, run_dir, prefix).encode()))
            else:
                entries.append(Entry(f"{prefix}/{rel}", path.read_bytes()))
        runs.append({"dir": run_dir, "prefix": prefix, "meta": meta})
    return entries, runs


def write_zip(path: Path, entries: list[Entry]) -> None:
    """Sorted entries, fixed times and permissions: the same entries give the same bytes."""
    with replacing(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as archive:
            for entry in sorted(entries, key=lambda e: e.name):
                info = zipfile.ZipInfo(entry.name, date_time=FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.create_system = 3
                stored = entry.name.endswith((".flac", ".png", ".bin"))
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                archive.writestr(info, entry.data, compresslevel=None if stored else 6)


def manifest(entries: list[Entry]) -> Entry:
    files = {e.name: {"size": len(e.data), "sha256": hashlib.sha256(e.data).hexdigest()}
             for e in sorted(entries, key=lambda e: e.name)}
    return Entry("MANIFEST.json", (json.dumps({"format": FORMAT, "acr": __version__,
                                               "files": files}, indent=2) + "\n").encode())


def export_runs(run_dirs: list[Path], out: Path | None, samples: str = "all",
                audio_format: str = "wav", include_model: bool = False, force: bool = False
                ) -> tuple[Path, dict]:
    """Write the package; returns its path and a summary (entries, bytes by kind)."""
    out = Path(out) if out is not None else Path(f"{Path(run_dirs[0]).resolve()}.zip")
    if out.exists() and not force:
        raise UsageError(f"{out}: exists; choose another -o or pass --force to replace it")
    entries, runs = collect(run_dirs, samples, audio_format, include_model, force)
    readme = Entry("README.md", render_readme(runs, entries).encode())
    everything = [*entries, readme]
    write_zip(out, [*everything, manifest(everything)])
    kinds: dict[str, int] = {}
    for entry in everything:
        kind = entry.name.split("/")[2] if entry.name.count("/") >= 2 else "records"
        kind = kind if kind in ("samples", "analysis", "model", "plots") else "records"
        kinds[kind] = kinds.get(kind, 0) + len(entry.data)
    if kinds.get("samples", 0) > LARGE_BYTES:
        console.warn("samples make this package large; --audio-format flac shrinks them "
                     "losslessly, --samples none leaves them out")
    return out, {"entries": len(everything) + 1, "bytes": out.stat().st_size, "kinds": kinds,
                 "runs": [r["prefix"] for r in runs]}


def verify(path: Path) -> list[str]:
    """Every problem of a package against its MANIFEST.json (empty when it checks out)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UsageError(f"{path}: not a zip file")
    problems = []
    with archive:
        names = archive.namelist()
        if "MANIFEST.json" not in names:
            raise UsageError(f"{path}: no MANIFEST.json; not an acr export package")
        listed = json.loads(archive.read("MANIFEST.json"))
        if listed.get("format") != FORMAT:
            problems.append(f"MANIFEST.json: unknown format {listed.get('format')!r}")
        files = listed.get("files", {})
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
                problems.append(f"{name}: unsafe entry name (absolute or with ..)")
            elif name != "MANIFEST.json" and name not in files:
                problems.append(f"{name}: in the zip but not in MANIFEST.json")
        for name, expected in files.items():
            if name not in names:
                problems.append(f"{name}: listed in MANIFEST.json but missing from the zip")
                continue
            try:
                data = archive.read(name)
            except (zipfile.BadZipFile, OSError) as exc:  # a corrupt member fails its CRC
                problems.append(f"{name}: unreadable ({exc})")
                continue
            if len(data) != expected["size"]:
                problems.append(f"{name}: size {len(data)} != {expected['size']} in the manifest")
            if hashlib.sha256(data).hexdigest() != expected["sha256"]:
                problems.append(f"{name}: sha256 differs from the manifest")
    return problems

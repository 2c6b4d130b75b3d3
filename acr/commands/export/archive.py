"""The package zip: entries streamed in block by block, MANIFEST.json computed on the way, and
`verify`, which rechecks a zip against its manifest without trusting anything in it.

Entries are written in name order with a fixed timestamp and permissions, then MANIFEST.json
(the size and sha256 of every other entry) last: the same entries give the same bytes, and no
entry is ever held in memory whole.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from acr import __version__
from acr.core.atomic import replacing
from acr.core.errors import UsageError

FORMAT = "acr-export/1"
MANIFEST = "MANIFEST.json"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
BLOCK = 1 << 20
STORED_SUFFIXES = (".flac", ".png", ".bin")  # already compressed (or weights): stored as is
LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header, 30 bytes
LOCAL_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class Entry:
    """One file of the package: its name in the zip, its size as far as known before writing
    (it decides whether the entry needs ZIP64 fields), and its bytes, produced in blocks."""

    name: str
    size: int
    chunks: Callable[[], Iterable[bytes]]

    def read(self) -> bytes:
        """The whole content (for small records only)."""
        return b"".join(self.chunks())


def file_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(BLOCK), b"")


def _info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.create_system = 3
    stored = name.endswith(STORED_SUFFIXES)
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.file_size = size  # replaced by the real size once written
    return info


def manifest_bytes(files: dict[str, dict]) -> bytes:
    return (json.dumps({"format": FORMAT, "acr": __version__, "files": dict(sorted(files.items()))},
                       indent=2) + "\n").encode()


def write_package(path: Path, entries: list[Entry]) -> dict[str, dict]:
    """Write the zip; returns the manifest's files table ({name: {size, sha256}})."""
    files: dict[str, dict] = {}
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for entry in sorted(entries, key=lambda e: e.name):
            digest, size = hashlib.sha256(), 0
            with archive.open(_info(entry.name, entry.size), "w") as out:
                for chunk in entry.chunks():
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            files[entry.name] = {"size": size, "sha256": digest.hexdigest()}
        data = manifest_bytes(files)
        archive.writestr(_info(MANIFEST, len(data)), data)
    return files


def _zip64_compressed_size(extra: bytes) -> int:
    """The compressed size from a local header's ZIP64 extra field (id 1: sizes, 8 bytes each,
    uncompressed first)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack("<2H", extra[at:at + 4])
        if kind == 1 and length >= 16:
            return struct.unpack("<Q", extra[at + 12:at + 20])[0]
        at += 4 + length
    return 1 << 63  # unknown: treat the entry as cut off


def _truncation(path: Path) -> str:
    """Where a zip without its end record (a cut-off copy) stops, from its local headers."""
    complete, cut = [], None
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while True:
            fh.seek(offset)
            header = fh.read(LOCAL_HEADER.size)
            if len(header) < LOCAL_HEADER.size or header[:4] != LOCAL_SIGNATURE:
                break
            fields = LOCAL_HEADER.unpack(header)
            flags, compressed, name_length, extra_length = fields[2], fields[7], fields[9], \
                fields[10]
            name = fh.read(name_length).decode("utf-8" if flags & 0x800 else "cp437", "replace")
            extra = fh.read(extra_length)
            if compressed == 0xFFFFFFFF:  # ZIP64: the sizes are in the extra field
                compressed = _zip64_compressed_size(extra)
            end = offset + LOCAL_HEADER.size + name_length + extra_length + compressed
            if end > size or flags & 0x08:
                cut = name
                break
            complete.append(name)
            offset = end
    if cut is not None:
        return (f"{cut}: cut off: the archive is truncated inside this entry ({len(complete)} "
                "entries before it are intact); copy the package again")
    last = f"after {complete[-1]} " if complete else ""
    return (f"the archive is truncated {last}(its table of contents is missing); copy the "
            "package again")


def _manifest_files(archive: zipfile.ZipFile, names: list[str]) -> tuple[dict | None, list[str]]:
    """The manifest's files table (None when it cannot be used) and its problems."""
    if MANIFEST not in names:
        return None, [f"{MANIFEST}: missing, so no entry can be checked (not an acr export "
                      "package, or its manifest was removed)"]
    try:
        listed = json.loads(archive.read(MANIFEST))
    except UnicodeDecodeError:
        return None, [f"{MANIFEST}: not UTF-8 text, so no entry can be checked"]
    except json.JSONDecodeError as exc:
        return None, [f"{MANIFEST}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                      f"{exc.colno}), so no entry can be checked"]
    except Exception as exc:  # a damaged member (CRC, deflate stream, header): see _check
        return None, [f"{MANIFEST}: damaged, cannot be read ({_reason(exc)}), so no entry can "
                      "be checked"]
    files = listed.get("files") if isinstance(listed, dict) else None
    if not isinstance(files, dict):
        return None, [f"{MANIFEST}: no \"files\" table, so no entry can be checked"]
    problems = []
    if listed.get("format") != FORMAT:
        problems.append(f"{MANIFEST}: unknown format {listed.get('format')!r} (expected "
                        f"{FORMAT!r})")
    usable = {}
    for name, expected in files.items():
        if (isinstance(expected, dict) and isinstance(expected.get("size"), int)
                and isinstance(expected.get("sha256"), str)):
            usable[name] = expected
        else:
            problems.append(f"{name}: listed in {MANIFEST} without a size and sha256")
    return usable, problems


def _reason(exc: Exception) -> str:
    kind = type(exc)
    return f"{kind.__module__ + '.' if kind.__module__ != 'builtins' else ''}" \
           f"{kind.__qualname__}: {exc}"


def _check(archive: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict) -> list[str]:
    name = info.filename
    digest, size = hashlib.sha256(), 0
    try:
        with archive.open(info) as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                digest.update(block)
                size += len(block)
    except Exception as exc:
        # The zip is untrusted input: a bad CRC, a broken deflate stream (zlib.error), a cut or
        # rewritten header, an unknown compression method... each is this entry's problem.
        return [f"{name}: damaged, cannot be read ({_reason(exc)})"]
    problems = []
    if size != expected["size"]:
        problems.append(f"{name}: size {size} != {expected['size']} in the manifest")
    if digest.hexdigest() != expected["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def verify(path: Path) -> list[str]:
    """Every problem of a package against its MANIFEST.json, one line each naming the entry
    (empty when it checks out). A file that is not a zip at all is a usage error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        with open(path, "rb") as fh:
            if fh.read(4) == LOCAL_SIGNATURE:
                return [_truncation(path)]
        raise UsageError(f"{path}: not a zip file; give a package written by acr export")
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        problems = [f"{name}: appears {count} times in the zip"
                    for name, count in sorted(Counter(names).items()) if count > 1]
        files, manifest_problems = _manifest_files(archive, names)
        problems += manifest_problems
        if files is None:
            return problems
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
                problems.append(f"{name}: unsafe entry name (absolute or with ..)")
            elif name != MANIFEST and name not in files:
                problems.append(f"{name}: in the zip but not in {MANIFEST}")
        by_name = {info.filename: info for info in infos}
        for name, expected in files.items():
            if name not in by_name:
                problems.append(f"{name}: listed in {MANIFEST} but missing from the zip")
            else:
                problems += _check(archive, by_name[name], expected)
    return problems

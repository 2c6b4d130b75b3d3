"""The one way acr reads a checkpoint or a JSON record from a run folder, a model folder or a
cache: nothing it reads can run code.

Checkpoints (`state_dict.bin`, `compression_state_dict.bin`, `checkpoints/*.pt`, the code cache)
load with torch's weights-only unpickler: tensors and plain values (numbers, strings, lists,
tuples, dicts) and nothing else. A file that would need more, such as a pickle that calls a
function, is refused before any of it runs: `UnsafeFile`, a UsageError (exit code 2). A file that
is no checkpoint or JSON at all (empty, truncated, garbage) is an `UnreadableFile`. YAML is read
by the config loader with yaml's SafeLoader.
"""
from __future__ import annotations

import json
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

from acr.core.errors import UsageError

ZIP_MAGIC = b"PK\x03\x04"


class UnsafeFile(UsageError):
    """A file whose loading would need to run code (a pickle beyond tensors and plain values)."""


class UnreadableFile(UsageError):
    """A file that is not a checkpoint / JSON at all (empty, truncated, something else)."""


def unsafe_message(path: Path) -> str:
    return f"{path} is not a safe acr checkpoint (it would need to run code to load)"


def is_pickle(data: bytes) -> bool:
    """Whether `data` is a complete pickle stream (read opcode by opcode, nothing executed)."""
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - anything that is not a pickle stream
        return False


def looks_pickled(path: Path) -> bool:
    """A torch zip archive or a plain pickle stream: something an unpickler would run."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == ZIP_MAGIC:
        return zipfile.is_zipfile(path)
    return is_pickle(Path(path).read_bytes())


def load_checkpoint(path: Path, map_location: Any = "cpu", mmap: bool = False,
                    hint: str = "") -> Any:
    """torch.load(path) with weights_only=True: tensors and plain values only.

    `mmap` maps the tensors' storage instead of reading it (a cheap check of a large file; only
    for torch's zip format). `hint` (how to fix it) is appended to an error. Raises UnsafeFile
    when loading would run code, UnreadableFile when the file is not a checkpoint."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path}: no such file{hint}")
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == ZIP_MAGIC
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        if looks_pickled(path):
            raise UnsafeFile(unsafe_message(path) + hint) from exc
        raise UnreadableFile(f"{path} is not a torch checkpoint ({_first_line(exc)}){hint}") \
            from exc
    except (RuntimeError, EOFError, ValueError, IndexError, KeyError, OSError) as exc:
        raise UnreadableFile(f"{path} is not a readable torch checkpoint ({_first_line(exc)})"
                             f"{hint}") from exc


def read_json(path: Path, hint: str = "") -> Any:
    """The JSON value in `path`; UnsafeFile for a pickle in its place, UnreadableFile for
    anything else that is not JSON."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if data[:4] == ZIP_MAGIC or is_pickle(data):
            raise UnsafeFile(unsafe_message(path) + hint) from exc
        raise UnreadableFile(f"{path} is not valid JSON ({_first_line(exc)}){hint}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

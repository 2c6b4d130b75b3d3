"""Run folders: create, record (config.yaml, meta.json, events.jsonl), finish. Writes are atomic.

A run folder is `experiments/<name>/<UTC timestamp>-<short id>/` or the `--out` folder the user
gave; an existing non-empty folder is never reused (resuming commands open theirs explicitly).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from acr.core.atomic import replacing
from acr.core.distributed import Dist, share_from_main
from acr.core.environment import git_commit, versions
from acr.core.launch import LAUNCHER_DIR
from acr.core.errors import UsageError
from acr.core.safe_load import read_json

DEFAULT_ROOT = Path("experiments")
LISTENING = "listening"  # RUN/listening/: listening tests, the run browser, the responses
ANALYSIS = "analysis"  # RUN/analysis/: acr analyze's report, tables, plots and feature cache
STATUSES = ("running", "completed", "failed", "interrupted")
# meta.json: true while the run's tasks (a launched experiment's) work on it, taking its lock
# only for moments; a process that (re)starts the run holds its lock to the end and clears it
HELD_BY_TASKS = "held_by_tasks"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_atomic(path: Path, text: str) -> None:
    """Write text to `path` through a temporary file in the same folder and os.replace."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become null (json.dumps would write the invalid
    `NaN`), numpy scalars become Python numbers, tuples become lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and \
            getattr(value, "shape", None) == ():  # a numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")


def file_digest(path: Path) -> str:
    """sha256 of a file's content (cache keys, manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_out_dir(out: Path | None) -> None:
    """Refuse an --out folder that already holds something (before any work starts); a folder
    holding only launcher/ is one a launcher reserved for the run its job starts."""
    if out is not None and Path(out).exists():
        if not Path(out).is_dir():
            raise UsageError(f"--out {out}: exists and is not a folder; choose another path")
        if any(p.name != LAUNCHER_DIR for p in Path(out).iterdir()):
            raise UsageError(f"--out {out}: folder exists and is not empty; acr never reuses a "
                             "run folder: choose a new path or remove it")


def new_run_dir(name: str, out: Path | None = None, root: Path = DEFAULT_ROOT) -> Path:
    """Create (and return) a new, empty run folder."""
    if out is not None:
        check_out_dir(out)
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(root) / name / f"{stamp}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


@dataclass
class Run:
    """An open run folder."""

    dir: Path

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def meta(self) -> dict:
        return read_json(self.meta_path)

    def update_meta(self, **fields: Any) -> None:
        write_json(self.meta_path, {**self.meta(), **fields})

    def event(self, kind: str, **fields: Any) -> None:
        """Append one line to events.jsonl (append-only log)."""
        line = json.dumps(json_safe({"time": utc_now(), "event": kind, **fields}),
                          ensure_ascii=False)
        with open(self.dir / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def finish(self, status: str, **fields: Any) -> None:
        assert status in STATUSES
        self.update_meta(status=status, ended=utc_now(), **fields)
        self.event("run.end", status=status, **fields)

    @contextmanager
    def marked_on_error(self, active: bool = True, before: Callable[[], None] | None = None
                        ) -> Iterator[None]:
        """Mark the run `interrupted` (Ctrl-C, SIGTERM) or `failed` (with the error) if the
        block raises, after calling `before` (e.g. to write a partial manifest); re-raise."""
        try:
            yield
        except BaseException as exc:
            if active:
                if before is not None:
                    try:
                        before()
                    except Exception:  # the run is marked all the same
                        pass
                if isinstance(exc, KeyboardInterrupt):
                    self.finish("interrupted")
                else:
                    self.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise


class RunLock:
    """An exclusive lock on a run folder (`.lock`, holding the owner's pid).

    `close()` releases it and removes the file, so a finished run folder holds no stale lock."""

    def __init__(self, folder: Path, handle: Any):
        self.path, self.handle = Path(folder) / ".lock", handle

    def close(self) -> None:
        if self.handle.closed:
            return
        self.path.unlink(missing_ok=True)  # while still held: no one can lock the old file
        self.handle.close()


def lock_run(folder: Path, wait: float = 0.0) -> RunLock:
    """Hold an exclusive lock on a run folder until `close()` (or the process ends).

    A second acr process on the same folder gets a UsageError naming the holder's pid, after
    trying for `wait` seconds (0: at once)."""
    path = Path(folder) / ".lock"
    deadline = time.monotonic() + wait
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                handle.close()
                time.sleep(0.2)
                continue
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise UsageError(f"{folder}: in use by another acr process (pid {pid}); wait for it "
                             "to finish or stop it first")
        try:
            held = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            held = False
        if held:
            break
        handle.close()  # the holder removed the file we waited on (RunLock.close): lock anew
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return RunLock(folder, handle)


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the run folder's lock (a run that says `running` while no
    one holds its lock was killed). Takes no lock: a shared probe, released at once."""
    try:
        handle = open(Path(folder) / ".lock", "r", encoding="utf-8")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def current_status(folder: Path, meta: dict) -> object:
    """A run's status: what its meta.json says, except `interrupted` for a run it says is
    running while no process holds its lock (every command holds it to the end: the process
    was killed) and no launched run's tasks work on it (HELD_BY_TASKS)."""
    status = meta.get("status")
    if status == "running" and not meta.get(HELD_BY_TASKS) and not is_locked(folder):
        return "interrupted"
    return status


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the hidden `.name-XXXX.tmp` files a killed process left behind; return how many."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def open_run(folder: Path, command: str) -> Run:
    """An existing run folder of `command`, for resuming; UsageError if it is not one."""
    folder = Path(folder)
    run = Run(folder)
    if not (folder / "config.yaml").is_file() or not run.meta_path.is_file():
        raise UsageError(f"{folder}: not a run folder (no config.yaml / meta.json); give the "
                         f"folder an `acr {command}` run created")
    meta = run.meta()
    if meta.get("command") != command:
        raise UsageError(f"{folder}: a run of `acr {meta.get('command')}`, not `acr {command}`")
    return run


def config_differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every key whose value differs between two
    resolved configs."""
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: (k not in old, str(k))):
        path = f"{prefix}{key}"
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, path + ".")
        elif a != b:
            out.append((path, a, b))
    return out


# Keys whose config value asks acr to pick at run time; config.yaml records the pick.
PICKED_AT_RUN_TIME = {"device": "auto", "extend_stride": None}


def as_resolved(given: dict, recorded: dict, top: bool = True) -> dict:
    """`given` with each value that asks acr to pick (device: auto, any extend_stride: null,
    and a null at the top level, e.g. a fine-tune's segment_duration) replaced by what the run
    `recorded` for it: a run's config.yaml holds what was used, and the config it started from
    still matches it. Any other value is compared as given."""
    out = {}
    for key, value in given.items():
        theirs = recorded.get(key)
        if isinstance(value, dict) and isinstance(theirs, dict):
            out[key] = as_resolved(value, theirs, top=False)
        elif key in recorded and ((top and value is None) or (
                key in PICKED_AT_RUN_TIME and value == PICKED_AT_RUN_TIME[key])):
            out[key] = theirs
        else:
            out[key] = value
    return out


def resume_config(run_dir: Path, schema: type, given: Any | None) -> Any:
    """The config to resume a run with: the run's own, or `given` (a CONFIG, or the run's own
    with flags and --set applied) where it changes only what cannot change the results
    (`schema.RESUME_MAY_CHANGE`, e.g. the device; a batch size equal to the one the run used).
    Any other difference is refused, naming each key, before anything is written."""
    import yaml

    from acr.core.config.loader import load_config, to_dict

    recorded = load_config(schema, run_dir / "config.yaml")
    if given is None:
        return recorded
    theirs = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    ours = as_resolved(to_dict(given), theirs)
    used_batch_size = Run(run_dir).meta().get("batch_size")
    refused = [(key, a, b) for key, a, b in config_differences(theirs, ours)
               if key.split(".")[0] not in schema.RESUME_MAY_CHANGE
               and not (key == "batch_size" and b == used_batch_size)]
    if refused:
        may = ", ".join(schema.RESUME_MAY_CHANGE)
        raise UsageError(f"{run_dir}: the config changed since this run started, and a resumed "
                         f"run may change only {may} (anything else would change its results); "
                         "resume without these changes, or start a new run:",
                         *[f"  {key}: run has {json.dumps(a)}, config has {json.dumps(b)}"
                           for key, a, b in refused])
    return dataclasses.replace(recorded, **{k: getattr(given, k)
                                            for k in schema.RESUME_MAY_CHANGE})


def begin_run(command: str, name: str, config_yaml: str, seed: int | None, device: str,
              device_label: str, out: Path | None, argv: list[str] | None,
              resumed: Run | None) -> tuple[Run, RunLock]:
    """Start a new run, or reopen `resumed`; either way lock it and remove stale temporaries.
    A new run that fails here is marked `failed`; a resumed run another process holds is left
    as it is (that process owns it). A resumed run whose config changed (what resume_config
    allows: the device, ...) gets the new config.yaml, and the run.resume event lists the
    changes. Returns (run, lock)."""
    import yaml

    if resumed is None:
        run = start_run(command, name, config_yaml, seed, device, device_label, out=out,
                        argv=argv)
        with run.marked_on_error():
            return run, lock_run(run.dir)
    lock = lock_run(resumed.dir)
    try:
        with resumed.marked_on_error():
            removed = remove_stale_temporaries(resumed.dir)
            changed = config_differences(
                yaml.safe_load((resumed.dir / "config.yaml").read_text(encoding="utf-8")),
                yaml.safe_load(config_yaml))
            if changed:
                write_atomic(resumed.dir / "config.yaml", config_yaml)
            resumed.update_meta(status="running", ended=None, device=device,
                                device_name=device_label,
                                resumed=[*resumed.meta().get("resumed", []), utc_now()],
                                **({HELD_BY_TASKS: False} if resumed.meta().get(HELD_BY_TASKS)
                                   else {}))
            resumed.event("run.resume", removed_temporaries=removed,
                          **({"changed": {key: [a, b] for key, a, b in changed}}
                             if changed else {}))
    except BaseException:
        lock.close()
        raise
    return resumed, lock


def begin_shared_run(dist_info: Dist, command: str, name: str, config_yaml: str, seed: int | None,
                     device: str, device_label: str, out: Path | None, argv: list[str] | None,
                     resumed: Run | None, choose_batch_size: Callable[[], Any],
                     **meta: Any) -> tuple[Run, Any, RunLock | None]:
    """begin_run on rank 0, with the batch size (the one a resumed run recorded, else
    `choose_batch_size()`, called before a new run folder exists) and `meta` recorded; every
    rank gets (run, batch size, lock or None on the other ranks)."""
    lock, shared = None, None
    if dist_info.main:
        recorded = resumed.meta().get("batch_size") if resumed is not None else None
        batch_size = recorded or choose_batch_size()
        run, lock = begin_run(command, name, config_yaml, seed, device, device_label, out, argv,
                              resumed)
        with run.marked_on_error():
            run.update_meta(batch_size=batch_size, world_size=dist_info.world, **meta)
        shared = (str(run.dir), batch_size)
    run_dir, batch_size = share_from_main(dist_info, shared)
    return Run(Path(run_dir)), batch_size, lock


@contextmanager
def held_new_run(command: str, name: str, config_yaml: str, seed: int | None, device: str,
                 device_label: str, out: Path | None, argv: list[str] | None) -> Iterator[Run]:
    """A new run (begin_run) for a command that never resumes one: its lock held to the end
    of the block (`acr runs` tells a killed run from a running one by it), and the block's
    failure marking the run failed (interrupted by Ctrl-C)."""
    run, lock = begin_run(command, name, config_yaml, seed, device, device_label, out, argv,
                          None)
    try:
        with run.marked_on_error():
            yield run
    finally:
        lock.close()


def start_run(command: str, name: str, config_yaml: str, seed: int | None, device: str,
              device_name: str, out: Path | None = None, root: Path = DEFAULT_ROOT,
              argv: list[str] | None = None) -> Run:
    """Create a run folder and write config.yaml, meta.json (status running) and the first event."""
    run = Run(new_run_dir(name, out, root))
    write_atomic(run.dir / "config.yaml", config_yaml)
    write_json(run.meta_path, {
        "command": command,
        "argv": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "versions": versions(),
        "device": device,
        "device_name": device_name,
        # CPU results are byte-reproducible for a given thread count (float sums are ordered by it)
        "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
        "git_commit": git_commit(),
        "seed": seed,
        "started": utc_now(),
        "ended": None,
        "status": "running",
    })
    run.event("run.start", command=command, dir=str(run.dir))
    return run

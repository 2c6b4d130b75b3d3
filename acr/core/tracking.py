"""Experiment tracking: optional mirrors of a run folder in TensorBoard and Weights & Biases.

The run folder stays the source of truth; a tracker only copies what the run writes. `Trackers`
fans every call out to the sinks the config asks for (`tracking:`), and a sink that fails (not
installed, bad credentials, disk full) costs one warning and is switched off: it never fails
the run.

Resume without gaps or duplicates: every call is first appended to RUN/tracking.jsonl (its
step, group, kind and values; clips and images by their paths in the run), then sent. A
resumed run reopens the same W&B run (the id in meta.json, resume="allow") and the same
TensorBoard folder, and replays the journal into each sink from where that sink's own files
end: TensorBoard's writer is flushed after every call and reopened with `purge_step` at the
journal's last step (its readers drop whatever a killed process wrote from there on), and W&B
gets every step after the last history row in its transaction logs (RUN/wandb/*/run-*.wandb:
wandb-core buffers, and a killed process loses what it had not written). A tracker added on
resume (`--resume RUN --track wandb`) gets the whole journal. Calls of the new process at a
step (and group) the journal already has are skipped: the run redoes that work, identically.
"""
from __future__ import annotations

import dataclasses
import json
import math
import netrc
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Optional

from acr.core import console
from acr.core.runs import Run

JOURNAL = "tracking.jsonl"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
TRACKER_FOLDERS = (TENSORBOARD_DIR, WANDB_DIR)  # RUN/<these>: the trackers' copies, not clips
WANDB_HOST = "api.wandb.ai"


@dataclasses.dataclass
class Clip:
    """One audio clip to log: where it is on disk and what it says."""

    tag: str
    path: Path
    caption: str


def flat_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: scalar}: what hyperparameter tables take (lists and
    mappings inside lists as JSON text, null as the text 'null')."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_config(value, f"{prefix}{key}."))
        return out
    key = prefix.rstrip(".")
    if data is None:
        out[key] = "null"
    elif isinstance(data, (bool, int, float, str)):
        out[key] = data
    else:
        out[key] = json.dumps(data, ensure_ascii=False)
    return out


def wandb_api_key_configured() -> bool:
    """Whether W&B would find an API key here, looked up the way wandb does without the
    network: WANDB_API_KEY, then the netrc file (NETRC or ~/.netrc) entry of the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", f"https://{WANDB_HOST}").split("://")[-1]
    host = host.split("/")[0].split(":")[0]
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    try:
        return bool(path.is_file() and netrc.netrc(str(path)).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(asked: Optional[str]) -> str:
    """online | offline | disabled: as asked, else offline unless an API key is configured
    (so that nothing ever waits on the network for a login)."""
    if asked:
        return asked
    return "online" if wandb_api_key_configured() else "offline"


# ----------------------------------------------------------------------------------------------
# Sinks: the same five calls on each


class TensorBoardSink:
    """Event files in RUN/tensorboard/, written by torch's SummaryWriter."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, purge_step: Optional[int]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir).resolve() / TENSORBOARD_DIR),
                                    purge_step=purge_step, flush_secs=30)

    def flush(self) -> None:
        self.writer.flush()  # each call on disk: a killed process loses nothing it logged

    def config(self, config: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(flat_config(config), {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def clips(self, step: int, clips: list[Clip]) -> None:
        from acr.core.audio import read_clip

        for clip in clips:
            audio, rate = read_clip(clip.path)  # (channels, samples)
            mono = audio.mean(axis=0) if audio.ndim == 2 else audio
            self.writer.add_audio(clip.tag, mono[None, :], step, sample_rate=rate)
            self.writer.add_text(f"{clip.tag}/caption", clip.caption, step)

    def images(self, step: int, images: dict[str, Path]) -> None:
        import matplotlib.image

        for tag, path in images.items():
            pixels = matplotlib.image.imread(str(path))[..., :3]
            self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def text(self, step: int, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.writer.add_text(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run (offline unless an API key is configured) with its files in RUN/wandb/."""

    name = "wandb"

    def __init__(self, run_dir: Path, options: Any, run_id: str, label: str, config: dict):
        import wandb

        self.wandb = wandb
        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(  # an absolute dir: wandb's service has a working folder of its own
            dir=str(Path(run_dir).resolve()), project=options.project, entity=options.entity,
            tags=list(options.tags) or None, mode=wandb_mode(options.mode), id=run_id,
            name=label, resume="allow", config=config,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                    x_disable_meta=True, save_code=False))

    def config(self, config: dict) -> None:
        pass  # given to wandb.init (a resumed run gets it again, unchanged)

    def flush(self) -> None:
        pass  # wandb-core writes on its own schedule (see wandb_last_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def clips(self, step: int, clips: list[Clip]) -> None:
        from acr.core.audio import read_clip

        logged = {}
        for clip in clips:
            audio, rate = read_clip(clip.path)
            logged[clip.tag] = self.wandb.Audio(audio.T if audio.ndim == 2 else audio,
                                                sample_rate=rate, caption=clip.caption)
        self.run.log(logged, step=step)

    def images(self, step: int, images: dict[str, Path]) -> None:
        self.run.log({tag: self.wandb.Image(str(path)) for tag, path in images.items()},
                     step=step)

    def text(self, step: int, values: dict[str, str]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


# ----------------------------------------------------------------------------------------------
# The fan-out


class Trackers:
    """The sinks of one run (none when tracking is off, or on a rank other than 0).

    Every call names its step and a group (what kind of record it is). A call at a step before
    the journal's last, or at that step in a group the journal has there, is skipped (a resumed
    run repeating work the run already tracked). A sink that raises is warned about once and
    closed."""

    def __init__(self, run: Optional[Run], sinks: list[Any], done_step: int = -1,
                 done_groups: Iterable[str] = ()):
        self.run, self.sinks = run, sinks
        self.step, self.groups = done_step, set(done_groups)
        self.journal = open(run.dir / JOURNAL, "a", encoding="utf-8") \
            if run is not None and sinks else None

    @property
    def active(self) -> bool:
        return bool(self.sinks)

    def _call(self, step: int, group: str, kind: str, values: Any) -> None:
        if not self.sinks or step < self.step or (step == self.step and group in self.groups):
            return
        line = {"step": step, "group": group, "kind": kind, "values": values}
        if self.journal is not None:
            self.journal.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.journal.flush()
        self.send(self.sinks, line)
        self.groups = self.groups | {group} if step == self.step else {group}
        self.step = step

    def send(self, sinks: list[Any], line: dict) -> None:
        """One journal line to `sinks` (paths made absolute in the run folder)."""
        values, run_dir = line["values"], self.run.dir if self.run is not None else Path()
        if line["kind"] == "clips":
            values = [Clip(tag, run_dir / path, caption) for tag, path, caption in values]
        elif line["kind"] == "images":
            values = {tag: run_dir / path for tag, path in values.items()}
        for sink in list(sinks):
            try:
                getattr(sink, line["kind"])(line["step"], values)
                sink.flush()
            except Exception as exc:
                self.drop(sink, exc)

    def scalars(self, step: int, group: str, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items()
                  if v is not None and math.isfinite(float(v))}
        if finite:
            self._call(step, group, "scalars", finite)

    def clips(self, step: int, group: str, clips: list[Clip]) -> None:
        if clips and self.sinks:  # (no sinks: no run folder to place the paths in)
            self._call(step, group, "clips", [[c.tag, self._in_run(c.path), c.caption]
                                              for c in clips])

    def images(self, step: int, group: str, images: dict[str, Path]) -> None:
        if images and self.sinks:
            self._call(step, group, "images", {tag: self._in_run(path)
                                               for tag, path in images.items()})

    def text(self, step: int, group: str, values: dict[str, str]) -> None:
        self._call(step, group, "text", values)

    def _in_run(self, path: Path) -> str:
        """A path as the journal keeps it: relative to the run folder (which may move)."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.run.dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    def close(self) -> None:
        for sink in list(self.sinks):
            try:
                sink.close()
            except Exception as exc:
                self.drop(sink, exc)
        self.sinks = []
        if self.journal is not None:
            self.journal.close()
            self.journal = None
            record = {**self.run.meta().get("tracking", {}), "step": self.step,
                      "groups": sorted(self.groups)}
            self.run.update_meta(tracking=record)

    def drop(self, sink: Any, exc: BaseException) -> None:
        """Warn once about a sink that failed, record it in events.jsonl and close it."""
        console.warn(f"tracking: {sink.name} failed ({type(exc).__name__}: {exc}); it is off "
                     "for the rest of this run (the run folder is complete without it)")
        if self.run is not None:
            self.run.event("tracking.failed", sink=sink.name,
                           error=f"{type(exc).__name__}: {exc}")
        self.sinks = [s for s in self.sinks if s is not sink]
        try:
            sink.close()
        except Exception:
            pass


def read_journal(run_dir: Path) -> list[dict]:
    """The lines of RUN/tracking.jsonl (a line a killed process left half-written is
    dropped)."""
    path = Path(run_dir) / JOURNAL
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def wandb_last_step(run_dir: Path, run_id: str) -> int:
    """The last history step in the run's W&B transaction logs (RUN/wandb/*-ID/run-ID.wandb,
    wandb's LevelDB-style log of protobuf records: a 7-byte header, 32 KiB blocks of records
    of a crc32, a length, a type and data); -1 when there is none."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    last = -1
    for path in Path(run_dir, WANDB_DIR).glob(f"*-{run_id}/run-{run_id}.wandb"):
        if path.parent.is_symlink():
            continue
        data, pos, pending = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            room = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
            if room < 7 or (kind == 0 and length == 0):
                pos += room
                continue
            if pos + 7 + length > len(data):
                break  # cut short by a kill
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(pending)
                if record.WhichOneof("record_type") == "history":
                    steps = [int(json.loads(i.value_json)) for i in record.history.item
                             if i.key == "_step"]
                    last = max([last, *steps])
    return last


def open_trackers(run: Run, tracking: Any, config: dict, main: bool = True) -> Trackers:
    """The run's trackers as `tracking` (the config's TrackingOptions) asks for; none on ranks
    other than 0 (`main`). A new run records a W&B run id in meta.json; a resumed one reuses it
    and replays the journal into each sink from where its files end (module docstring)."""
    if not main or tracking is None or not (tracking.tensorboard or tracking.wandb):
        return Trackers(None, [])
    record = dict(run.meta().get("tracking") or {})
    journal = read_journal(run.dir)
    done_step = journal[-1]["step"] if journal else -1
    done_groups = {line["group"] for line in journal if line["step"] == done_step}
    replay: list[tuple[Any, int]] = []  # (sink, first step to replay into it)
    if tracking.tensorboard:
        fresh = not (run.dir / TENSORBOARD_DIR).is_dir()
        try:
            sink = TensorBoardSink(run.dir, None if fresh or not journal else done_step)
            replay.append((sink, 0 if fresh else done_step))
        except Exception as exc:
            _warn_unavailable(run, "tensorboard", exc)
    if tracking.wandb is not None and tracking.wandb.mode != "disabled":
        fresh = "wandb_id" not in record
        record.setdefault("wandb_id", secrets.token_hex(4))
        try:
            first = 0 if fresh else wandb_last_step(run.dir, record["wandb_id"]) + 1
            sink = WandbSink(run.dir, tracking.wandb, record["wandb_id"],
                             f"{run.dir.parent.name}/{run.dir.name}", config)
            replay.append((sink, first))
        except Exception as exc:
            _warn_unavailable(run, "wandb", exc)
    sinks = [sink for sink, _ in replay]
    record.update({"sinks": [s.name for s in sinks], "step": done_step,
                   "groups": sorted(done_groups)})
    if tracking.tensorboard:
        record["tensorboard"] = TENSORBOARD_DIR
    run.update_meta(tracking=record)
    trackers = Trackers(run, sinks, done_step, done_groups)
    for sink, first in replay:
        if first == 0:
            try:
                sink.config(config)
            except Exception as exc:
                trackers.drop(sink, exc)
                continue
        lines = [line for line in journal if line["step"] >= first]
        for line in lines:
            if sink in trackers.sinks:
                trackers.send([sink], line)
        if lines and sink in trackers.sinks:
            run.event("tracking.replay", sink=sink.name, calls=len(lines), from_step=first)
    return trackers


def _warn_unavailable(run: Run, name: str, exc: BaseException) -> None:
    console.warn(f"tracking: {name} is unavailable ({type(exc).__name__}: {exc}); the run goes "
                 "on without it")
    run.event("tracking.failed", sink=name, error=f"{type(exc).__name__}: {exc}")

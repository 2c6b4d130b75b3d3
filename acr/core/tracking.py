"""Experiment tracking: optional mirrors of a run folder in TensorBoard and Weights & Biases.

The run folder stays the source of truth; a tracker only copies what the run writes. `Trackers`
fans every call out to the sinks the config asks for (`tracking:`), and a sink that fails (not
installed, bad credentials, disk full) costs one warning and is switched off: it never fails
the run.

Off the run's path: each sink is fed by a thread of its own (`SinkWorker`), which opens it
while the run sets up (its process was started earlier: start_trackers), then sends it the
run's calls in order from a queue, a few at a time (SinkWorker._next: woken at every call, the
threads and the sinks' processes slowed a tiny model's fine-tune step by 9%). The run waits
for the opening before its loop (Trackers.wait_open, bounded). A call costs the run one
journal line and a queue entry; `close()` waits until every sink has had every call, then
closes them all at once; a sink that hangs holds the run at most `tracking.close_wait_seconds`
(120 s unless the config says otherwise), then is ended (SinkWorker.abandon). Both sinks work
in child processes of their own (child_sink.py): on a thread, a sink's Python work takes the
run's interpreter whenever the run's thread wants it back, which slowed a Python-bound tiny
model by up to 1.8x while W&B worked, and by a few percent with TensorBoard's writer (building
and serialising its records). TensorBoard's sink is written with TensorBoard's own event writer and
summary records, so its child imports no torch.

Resume without gaps or duplicates: every call is first appended to RUN/tracking.jsonl (its
step, group, kind and values; clips and images by their paths in the run), then queued. A
resumed run reopens the same W&B run (the id in meta.json, resume="allow") and the same
TensorBoard folder, and replays the journal into each sink from where that sink's own files
end (a killed process loses what its sinks had not yet written): TensorBoard from the last
step its event files show (reopened with `purge_step` there: its readers drop whatever a
killed process wrote from that step on), W&B from the step after the last history row in its
transaction logs (RUN/wandb/*/run-*.wandb). A tracker added on resume (`--resume RUN --track
wandb`) gets the whole journal. Calls of the new process at a step (and group) the journal
already has are skipped: the run redoes that work, identically.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import json
import math
import netrc
import os
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from acr.core import child_sink, console
from acr.core.child_sink import ChildSink, describe
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


# WANDB_MODE's values, as wandb 0.31 takes them (exactly) -> the mode acr gives a run ("shared"
# writes to a run online; acr's run is then a plain online one)
WANDB_MODES = {"online": "online", "run": "online", "shared": "online", "offline": "offline",
               "dryrun": "offline", "disabled": "disabled"}


def wandb_mode(asked: Optional[str]) -> str:
    """online | offline | disabled: as asked, else as WANDB_MODE says (wandb's own variable: a
    cluster's nodes without a network, with an API key in the shared home), else offline
    unless an API key is configured (so that nothing ever waits on the network for a login).
    A WANDB_MODE that is no mode counts as unset here; wandb refuses it as it starts, which
    costs a warning like any tracker that fails."""
    if asked:
        return asked
    environment = WANDB_MODES.get(os.environ.get("WANDB_MODE", ""))
    if environment is not None:
        return environment
    return "online" if wandb_api_key_configured() else "offline"


# ----------------------------------------------------------------------------------------------
# Sinks: the same five calls on each


class TensorBoardSink:
    """Event files in RUN/tensorboard/, written by TensorBoard's own event writer and summary
    functions, without torch (the sink works in a child process, which then imports no torch):
    scalars, audio, images and text as torch's SummaryWriter writes them; the config as the
    HParams of one session, grouped under the run folder's path."""

    name = "tensorboard"

    def __init__(self, folder: Path, purge_step: Optional[int]):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        fast_event_checksums()
        self.session = str(Path(folder).resolve().parent)  # (the run folder)
        self.writer = EventFileWriter(str(Path(folder).resolve()), flush_secs=30)
        if purge_step is not None:  # (as SummaryWriter(purge_step=) starts its file)
            self._add(Event(step=purge_step, file_version="brain.Event:2"))
            self._add(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def _add(self, event: Any) -> None:
        event.wall_time = time.time()
        self.writer.add_event(event)

    def _summary(self, step: int, summary: Any) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._add(Event(step=step, summary=summary))

    def config(self, config: dict) -> None:
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        self._summary(0, hparams_pb(flat_config(config), trial_id=self.session))
        self._summary(0, tensorboard_text("config", "```\n" + json.dumps(config, indent=2)
                                          + "\n```"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding every value of the call, each a simple_value (as `add_scalar`
        writes it, one event per value)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._summary(step, Summary(value=[Summary.Value(tag=key, simple_value=float(value))
                                           for key, value in values.items()]))

    def clips(self, step: int, clips: list[Clip]) -> None:
        for clip in clips:
            self._summary(step, tensorboard_audio(clip.tag, clip.path))
            self._summary(step, tensorboard_text(f"{clip.tag}/caption", clip.caption))

    def images(self, step: int, images: dict[str, Path]) -> None:
        for tag, path in images.items():
            self._summary(step, tensorboard_image(tag, path))

    def text(self, step: int, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._summary(step, tensorboard_text(key, value))

    def close(self) -> None:
        self.writer.close()


def open_tensorboard_sink(folder: Path) -> tuple[TensorBoardSink, int]:
    """The run's TensorBoard sink and the step its journal is replayed from (run in the sink's
    child process): all of it into an empty folder (0: the config first), else from the last
    step its event files show, the writer reopened with `purge_step` there."""
    last = tensorboard_last_step(folder)
    after_the_newest_file(folder)
    sink = TensorBoardSink(folder, last if last >= 1 else None)
    return sink, 0 if last < 0 else max(last, 1)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TensorBoard's event records carry, by google-crc32c's C code."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_event_checksums() -> None:
    """Make TensorBoard's event writer checksum its records with masked_crc32c. It uses the
    pure-Python CRC-32C of its TensorFlow stub: 6 ms of the interpreter for a 1 s clip's 64 KB
    (on a thread of the run's process, that slowed a fine-tune's loop by about 7%; in the
    sink's child, it is CPU time taken beside the run on a machine of few cores). Without
    google-crc32c's C code (no wheel for the platform), or in a TensorBoard that checksums
    elsewhere, nothing changes."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return
    if google_crc32c.implementation == "c" and hasattr(record_writer, "masked_crc32c"):
        record_writer.masked_crc32c = masked_crc32c


def tensorboard_audio(tag: str, path: Path) -> Any:
    """TensorBoard's audio summary of a WAV file: the file's own bytes when it is mono 16-bit
    PCM (what `add_audio` would encode from it anyway), else the clip mixed to mono and encoded
    so (16-bit PCM WAV)."""
    import io

    import soundfile
    from tensorboard.compat.proto.summary_pb2 import Summary

    info = soundfile.info(str(path))
    if info.format == "WAV" and info.subtype == "PCM_16" and info.channels == 1:
        encoded, frames = Path(path).read_bytes(), info.frames
    else:
        from acr.core.audio import read_clip

        audio, _ = read_clip(path)  # (channels, samples)
        mono = audio.mean(axis=0) if audio.ndim == 2 else audio
        buffer = io.BytesIO()
        soundfile.write(buffer, mono.clip(-1.0, 1.0), info.samplerate, format="WAV",
                        subtype="PCM_16")
        encoded, frames = buffer.getvalue(), mono.shape[-1]
    return Summary(value=[Summary.Value(tag=tag, audio=Summary.Audio(
        sample_rate=info.samplerate, num_channels=1, length_frames=frames,
        encoded_audio_string=encoded, content_type="audio/wav"))])


PNG_COLOUR_SPACES = {0: 1, 4: 2, 2: 3, 6: 4}  # a PNG's colour type -> TensorBoard's colorspace


def tensorboard_image(tag: str, path: Path) -> Any:
    """TensorBoard's image summary of a PNG file: its own bytes, with the size and colours its
    header gives (nothing decoded, nothing encoded)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    data = Path(path).read_bytes()
    if len(data) < 26 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    colours = PNG_COLOUR_SPACES.get(data[25], 4)  # (a palette PNG: shown as RGBA)
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
        height=height, width=width, colorspace=colours, encoded_image_string=data))])


def tensorboard_text(tag: str, text: str) -> Any:
    """TensorBoard's text summary, tagged as `add_text` tags it (TAG/text_summary)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.text.metadata import create_summary_metadata

    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=f"{tag}/text_summary", tensor=tensor,
                                        metadata=create_summary_metadata(None, None))])


def tensorboard_last_step(folder: Path) -> int:
    """The last step TensorBoard's readers see in the event files of `folder` (read in their
    order, as the readers do): -1 without any summary, 0 with only the config's. A writer
    reopened with `purge_step` starts its file with a SessionLog.START at that step, which
    hides what earlier files hold from that step on."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    last = -1
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():  # (a cut-off record ends it)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                last = min(last, event.step - 1)
            elif event.HasField("summary"):
                last = max(last, event.step)
    return last


NEWEST_FILE_WAIT_LIMIT = 2.0  # seconds: after_the_newest_file waits no longer


def after_the_newest_file(folder: Path) -> None:
    """Wait until the clock is past the second of the newest event file in `folder`.
    TensorBoard's readers take the files in name order, and a file's name starts with the second
    its writer opened it: a writer reopened within that second (a kill and a quick resume)
    could sort before the file it continues."""
    seconds = []
    for path in Path(folder).glob("events.out.tfevents.*"):
        try:
            seconds.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    wait = max(seconds) + 1 - time.time() if seconds else 0.0
    if wait > 0:
        time.sleep(min(wait, NEWEST_FILE_WAIT_LIMIT))  # (a file from a clock that runs ahead)


class WandbSink:
    """A W&B run (in the mode wandb_mode gives) with its files in RUN/wandb/."""

    name = "wandb"

    def __init__(self, run_dir: Path, options: Any, run_id: str, label: str, config: dict):
        import wandb

        self.wandb = wandb
        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        mode = wandb_mode(options.mode)
        # the mode for this process too, not only for this run: wandb 0.31 builds its telemetry
        # exporter from the process's mode (WANDB_MODE's, else online), which an
        # offline run leaves alone: it then imported requests and OpenTelemetry (about 40 ms at
        # the first log), started two threads, and sent to W&B's server every minute and at exit
        wandb.setup(settings=wandb.Settings(mode=mode))
        self.run = wandb.init(  # an absolute dir: wandb's service has a working folder of its own
            dir=str(Path(run_dir).resolve()), project=options.project, entity=options.entity,
            tags=list(options.tags) or None, mode=mode, id=run_id,
            name=label, resume="allow", config=config,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                    x_disable_meta=True, save_code=False))

    def config(self, config: dict) -> None:
        pass  # given to wandb.init (a resumed run gets it again, unchanged)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def clips(self, step: int, clips: list[Clip]) -> None:
        # the run's WAV files as they are (wandb copies them): nothing decoded, nothing encoded
        self.run.log({clip.tag: self.wandb.Audio(str(clip.path), caption=clip.caption)
                      for clip in clips}, step=step)

    def images(self, step: int, images: dict[str, Path]) -> None:
        self.run.log({tag: self.wandb.Image(str(path)) for tag, path in images.items()},
                     step=step)

    def text(self, step: int, values: dict[str, str]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


def open_wandb_sink(run_dir: Path, options: Any, run_id: str, label: str, config: dict,
                    fresh: bool) -> tuple[WandbSink, int]:
    """The run's W&B sink and the step its journal is replayed from: all of it for a new W&B
    run, else the step after the last one in its transaction logs (run in the sink's child
    process: wandb's import and start cost that process's time, not the run's)."""
    first = 0 if fresh else wandb_last_step(run_dir, run_id) + 1
    return WandbSink(run_dir, options, run_id, label, config), first


# ----------------------------------------------------------------------------------------------
# The fan-out: one thread per sink


@dataclasses.dataclass
class SinkStart:
    """How a worker starts its sink: `open()` makes it (on the worker's thread) and says from
    which step the journal is replayed into it (0: all of it, and the config first)."""

    name: str
    open: Callable[[], tuple[Any, int]]


_CLOSE = object()  # the last entry of a worker's queue
GATHER_SECONDS = 0.5  # how long a sink's thread collects calls before it sends them together
OPEN_WAIT_SECONDS = 2.0  # how long a run waits for its sinks to open before its loop (wait_open)


class SinkWorker:
    """One sink on a thread of its own: the thread starts it, replays what a resumed run's
    journal has and its files lack, then sends it the journal lines `put` queues, in order,
    leaving the writing to disk to the sink's own schedule (a resume replays whatever a kill
    lost: module docstring). A sink that fails, at its start or later, costs one
    warning and a `tracking.failed` event; the lines after are dropped. `close()` waits for every
    line queued before it, then closes the sink. One that hangs is ended by `abandon()`."""

    def __init__(self, start: SinkStart, run: Run, config: dict, journal: list[dict]):
        self.name, self.run = start.name, run
        self.alive, self.started, self.abandoned = True, False, False
        self.sink: Any = None  # once open
        self.said = threading.Lock()  # held by the one report of the sink's end (_say)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.gathered: collections.deque = collections.deque()  # taken from the queue: _next
        self.hurry = threading.Event()  # mark() or close() waits: send what is queued now
        self.thread = threading.Thread(target=self._work, args=(start, config, journal),
                                       name=f"acr-tracking-{start.name}", daemon=True)
        self.thread.start()

    def put(self, line: dict) -> None:
        if self.alive:
            self.queue.put(line)

    def mark(self) -> threading.Event:
        """An event the thread sets once it has started the sink and handled every line
        queued before it."""
        reached = threading.Event()
        self.queue.put(reached)
        self.hurry.set()
        return reached

    def close(self) -> None:
        """Ask the thread to send what is queued and close the sink (returns at once)."""
        self.queue.put(_CLOSE)
        self.hurry.set()

    def join(self, seconds: Optional[float] = None) -> bool:
        """Wait for the thread to end, at most `seconds`; whether it has."""
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def _say(self) -> bool:
        """Whether the caller is the first to report this sink's end (a failure, or abandon()
        from the run's thread): each sink's end costs one warning and one event (_report)."""
        return self.said.acquire(blocking=False)

    def _report(self, what: str, error: str) -> None:
        """The report of this sink's end: the warning "tracking: NAME WHAT" and a
        `tracking.failed` event with `error`."""
        console.warn(f"tracking: {self.name} {what}")
        try:
            self.run.event("tracking.failed", sink=self.name, error=error)
        except OSError:
            pass  # (a full disk: the warning has said it)

    def abandon(self, seconds: float) -> bool:
        """Stop waiting for a sink that has not taken its calls or closed within `seconds` (its
        library stuck on the network or a disk: wandb.finish() can wait forever): the sink off,
        its child process ended, and (unless its end was said already) one warning and a
        `tracking.failed` event. The call the thread waits on then fails, quietly, and the
        thread goes on serving the queue (so drain() and close() never wait for it again). A
        sink still opening has no process here to end yet: the thread ends it once its opening
        returns (_serve); until then it waits in the child (wandb.init gives up after its
        init_timeout), or ends with the run's process. Whether a process was ended."""
        if self.abandoned:
            return False
        self.alive, self.abandoned = False, True
        if self._say():
            self._report(f"did not finish within {seconds:g} s (stuck on its network or "
                         "disk?); it is off, and the run goes on without it (tracking."
                         "close_wait_seconds sets how long a run waits)",
                         f"TimeoutError: did not finish within {seconds:g} s")
        sink = self.sink
        if isinstance(sink, ChildSink):
            sink.kill()
            return True
        return False

    def _work(self, start: SinkStart, config: dict, journal: list[dict]) -> None:
        """The thread: serve the sink; if even its failure handling fails (an event that cannot
        be written on a full disk, a BaseException from a library), the sink is off and the
        queue is still served, so that drain() and close() never wait forever."""
        self._closing = False
        try:
            self._serve(start, config, journal)
        except BaseException:
            self.alive = False
            while not self._closing:
                line = self._next()
                if line is _CLOSE:
                    break
                if isinstance(line, threading.Event):
                    line.set()

    def _serve(self, start: SinkStart, config: dict, journal: list[dict]) -> None:
        try:
            sink, first = start.open()
        except Exception as exc:
            self.alive = False
            if self._say():
                self._report(f"is unavailable ({describe(exc)}); the run goes on without it",
                             describe(exc))
            sink = None
        else:
            self.sink = sink
            if self.abandoned:  # (while it opened: end it now, unused)
                if isinstance(sink, ChildSink):
                    sink.kill()
            else:
                self.started = True
                self._replay(sink, first, config, journal)
        while True:
            line = self._next()
            if line is _CLOSE:
                self._closing = True
                break
            if isinstance(line, threading.Event):
                line.set()
            elif self.alive:
                self._send(sink, line)
        if self.alive or (self.abandoned and sink is not None):  # (abandoned: its process's
            try:  # end is waited for, its socket and temporary folder removed)
                sink.close()
            except Exception as exc:
                self._fail(sink, exc)

    def _next(self) -> Any:
        """The next line queued. Lines are taken from the queue in gatherings: the first, and
        every line queued within GATHER_SECONDS after it (less when mark() or close() hurries
        the thread); so this thread and the sink's process wake a few times a second, not at
        every call."""
        if not self.gathered:
            self.gathered.append(self.queue.get())
            self.hurry.wait(GATHER_SECONDS)
            self.hurry.clear()
            while True:
                try:
                    self.gathered.append(self.queue.get_nowait())
                except queue.Empty:
                    break
        return self.gathered.popleft()

    def _replay(self, sink: Any, first: int, config: dict, journal: list[dict]) -> None:
        if first == 0:
            try:
                sink.config(config)
            except Exception as exc:
                self._fail(sink, exc)
                return
        lines = [line for line in journal if line["step"] >= first]
        for line in lines:
            if self.alive:
                self._send(sink, line)
        if lines and self.alive:
            self.run.event("tracking.replay", sink=self.name, calls=len(lines), from_step=first)

    def _send(self, sink: Any, line: dict) -> None:
        """One journal line to the sink (paths made absolute in the run folder)."""
        values, run_dir = line["values"], self.run.dir
        if line["kind"] == "clips":
            values = [Clip(tag, run_dir / path, caption) for tag, path, caption in values]
        elif line["kind"] == "images":
            values = {tag: run_dir / path for tag, path in values.items()}
        try:
            getattr(sink, line["kind"])(line["step"], values)
        except Exception as exc:
            self._fail(sink, exc)

    def _fail(self, sink: Any, exc: BaseException) -> None:
        """Warn once about the sink, record it in events.jsonl and close it (quietly where its
        end was said already: abandon() ended its process)."""
        self.alive = False
        if self._say():
            self._report(f"failed ({describe(exc)}); it is off for the rest of this run (the "
                         "run folder is complete without it)", describe(exc))
        try:
            sink.close()
        except Exception:
            pass


class Trackers:
    """The sink workers of one run (none when tracking is off, or on a rank other than 0).

    Every call names its step and a group (what kind of record it is). A call at a step before
    the journal's last, or at that step in a group the journal has there, is skipped (a resumed
    run repeating work the run already tracked). Otherwise it is appended to the journal, then
    queued for every sink still on. A call never waits for a sink; the run waits for them only
    before its loop (`wait_open`, at most OPEN_WAIT_SECONDS), before it forks (`drain`) and at
    `close()`, each of the last two at most `close_wait` seconds (the config's
    tracking.close_wait_seconds)."""

    def __init__(self, run: Optional[Run], workers: list[SinkWorker], done_step: int = -1,
                 done_groups: Iterable[str] = (), close_wait: Optional[float] = None):
        if close_wait is None:  # the config's default (imported here, not with this module,
            from acr.core.config.schema import TrackingOptions  # which the trackers' child
            close_wait = TrackingOptions.close_wait_seconds  # processes import: 25 ms each)
        self.run, self.workers, self.close_wait = run, workers, close_wait
        self.step, self.groups = done_step, set(done_groups)
        self.journal = open(run.dir / JOURNAL, "a", encoding="utf-8") \
            if run is not None and workers else None

    @property
    def active(self) -> bool:
        return any(worker.alive for worker in self.workers)

    def _call(self, step: int, group: str, kind: str, values: Any) -> None:
        if not self.active or step < self.step or (step == self.step and group in self.groups):
            return
        line = {"step": step, "group": group, "kind": kind, "values": values}
        if self.journal is not None:  # on disk before any sink sees it (see the docstring)
            self.journal.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.journal.flush()
        for worker in self.workers:
            worker.put(line)
        self.groups = self.groups | {group} if step == self.step else {group}
        self.step = step

    def scalars(self, step: int, group: str, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items()
                  if v is not None and math.isfinite(float(v))}
        if finite:
            self._call(step, group, "scalars", finite)

    def clips(self, step: int, group: str, clips: list[Clip]) -> None:
        if clips and self.active:  # (no sinks: no run folder to place the paths in)
            self._call(step, group, "clips", [[c.tag, self._in_run(c.path), c.caption]
                                              for c in clips])

    def images(self, step: int, group: str, images: dict[str, Path]) -> None:
        if images and self.active:
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

    def drain(self) -> None:
        """Wait until every sink has started and had every call so far, at most
        `close_wait` seconds in all (then a sink not there yet is ended, SinkWorker.abandon, and
        its thread's cleanup waited for). Before the process forks (the analysis's worker
        pool): a fork copies only the calling thread, and a sink's thread caught mid-work
        would leave the fork with its locks (one abandoned while still opening stays in its
        opening's wait on the child's socket, holding none)."""
        deadline = time.monotonic() + self.close_wait
        for worker, reached in [(worker, worker.mark()) for worker in self.workers]:
            if not reached.wait(max(0.0, deadline - time.monotonic())) and \
                    worker.abandon(self.close_wait):  # (its thread, done with the ended
                reached.wait(child_sink.END_WAIT_SECONDS)  # process, reaches the mark)

    def wait_open(self, seconds: float = OPEN_WAIT_SECONDS) -> None:
        """Wait until every sink has opened (and replayed what a resumed run's journal has and
        its files lack), at most `seconds`, and record it (a `tracking.open` event: the sinks
        ready, those not yet, the seconds waited). A
        command calls this right before its loop, so that the sinks' opening does not run
        beside the loop's first steps: in a 4-epoch fine-tune of the tiny model (a 0.5 s loop;
        TensorBoard + W&B offline; benchmarks/tracking-overhead.md) the trackers' processes
        used 0.04 CPU s inside the loop on average when it started at once, 0.006 after this
        wait, which took 0.09-0.15 s. An opening that takes longer (W&B online on a slow
        network) goes on beside the loop, as before."""
        if not self.workers:
            return
        started = time.monotonic()
        marks = [(worker, worker.mark()) for worker in self.workers]
        for worker, reached in marks:
            reached.wait(max(0.0, started + seconds - time.monotonic()))
        waited = round(time.monotonic() - started, 3)
        done = [(worker, reached.is_set()) for worker, reached in marks]  # (one reading)
        opening = [worker.name for worker, is_done in done if not is_done]
        if opening:
            console.info(f"tracking: {', '.join(opening)} not ready after {waited:.1f} s "
                         "(opening, or replaying a resumed run's journal); the run goes on, "
                         "and the tracker gets every call once ready")
        try:
            self.run.event("tracking.open", opening=opening, waited=waited,
                           sinks=[worker.name for worker, is_done in done
                                  if is_done and worker.started and worker.alive])
        except OSError:
            pass  # (a full disk: tracking never fails the run)

    def close(self) -> None:
        """Every queued call sent, every sink closed (all at once), the record in meta.json.
        A sink that has not closed within `close_wait` seconds is ended (SinkWorker.abandon)."""
        for worker in self.workers:
            worker.close()
        deadline = time.monotonic() + self.close_wait
        for worker in self.workers:  # (one abandoned before, by drain(), is not waited for)
            seconds = 0.0 if worker.abandoned else max(0.0, deadline - time.monotonic())
            if not worker.join(seconds) and worker.abandon(self.close_wait):
                worker.join(child_sink.END_WAIT_SECONDS)  # (its thread then ends at once)
        started = [worker.name for worker in self.workers if worker.started]
        self.workers = []
        if self.journal is not None:
            self.journal.close()
            self.journal = None
            record = {**self.run.meta().get("tracking", {}), "sinks": started,
                      "step": self.step, "groups": sorted(self.groups)}
            self.run.update_meta(tracking=record)


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
    """The last history step in the run's W&B transaction logs (RUN/wandb/*/run-ID.wandb,
    wandb's LevelDB-style log of protobuf records: a 7-byte header, 32 KiB blocks of records
    of a crc32, a length, a type and data); -1 when there is none."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    last = -1
    # (*-ID/, and *-ID-1/ ... when two sessions of the run started within one second)
    for path in Path(run_dir, WANDB_DIR).glob(f"*/run-{run_id}.wandb"):
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


def warm_tensorboard() -> None:
    """What a TensorBoard sink's child imports to open it and log (start_trackers): the modules
    of tensorboard_last_step, TensorBoardSink and its config call, the optional checksum, and
    soundfile, which its first clips import (about 4 ms of a fine-tune's loop, where its
    first sample round's clips come)."""
    import soundfile  # noqa: F401
    from tensorboard.backend.event_processing.event_file_loader import (  # noqa: F401
        LegacyEventFileLoader)
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb  # noqa: F401
    from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: F401

    fast_event_checksums()


# what wandb.init imports on its first call (wandb 0.31: its public API and launch inputs, YAML
# for the config file, email.parser to read the installed packages' metadata): about 0.15 CPU s
# here, which the warm-up spends before the command imports torch instead of beside the run's
# first steps (a test checks that opening a sink and its first calls import nothing more)
WANDB_FIRST_CALL_MODULES = ("yaml", "email.parser", "wandb.apis.public",
                            "wandb.sdk.launch.inputs.internal")


def warm_wandb(mode: str) -> None:
    """What a W&B sink's child does first to open it: import wandb, set the process's `mode`
    (WandbSink) and start its service (start_trackers), and import what its first calls import
    (WANDB_FIRST_CALL_MODULES; a module another wandb version lacks, or that fails to import,
    is skipped)."""
    import wandb

    wandb.setup(settings=wandb.Settings(mode=mode))
    for name in WANDB_FIRST_CALL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            pass


def wandb_child(mode: str) -> str:
    """The name of the child process a W&B sink of `mode` (wandb_mode's) takes (child_sink):
    one per mode. wandb keeps its telemetry exporter for the life of a process once a run built
    it (WandbSink): an offline run in a child that served an online one would send telemetry."""
    return f"wandb-{mode}"


def wants_wandb(tracking: Any) -> bool:
    """Whether the TrackingOptions ask for a W&B run (a section whose mode, or WANDB_MODE where
    it has none, is not disabled)."""
    return tracking.wandb is not None and wandb_mode(tracking.wandb.mode) != "disabled"


def start_trackers(tracking: Any) -> None:
    """Start the child process of each tracker `tracking` (the config's TrackingOptions, or
    None) asks for now, with its imports and W&B's service (child_sink.start_early): a command
    calls this before it imports torch and loads its model. Measured here, whole `acr finetune`
    processes of the tiny model (4 epochs: a 0.5 s loop), TensorBoard + W&B: the loop was 0.1 s
    longer when the children started as the run's trackers opened, right before it."""
    if tracking is None:
        return
    if tracking.tensorboard:
        child_sink.start_early("tensorboard", warm_tensorboard)
    if wants_wandb(tracking):
        mode = wandb_mode(tracking.wandb.mode)
        child_sink.start_early(wandb_child(mode), functools.partial(warm_wandb, mode))


def open_trackers(run: Run, tracking: Any, config: dict, main: bool = True) -> Trackers:
    """The run's trackers as `tracking` (the config's TrackingOptions) asks for; none on ranks
    other than 0 (`main`). A new run records a W&B run id in meta.json; a resumed one reuses it.
    Each sink starts on its own thread and gets the journal from where its files end (module
    docstring); this returns at once."""
    if not main or tracking is None or not (tracking.tensorboard or tracking.wandb):
        return Trackers(None, [])
    record = dict(run.meta().get("tracking") or {})
    journal = read_journal(run.dir)
    done_step = journal[-1]["step"] if journal else -1
    done_groups = {line["group"] for line in journal if line["step"] == done_step}
    starts: list[SinkStart] = []
    if tracking.tensorboard:
        record["tensorboard"] = TENSORBOARD_DIR

        def open_tensorboard() -> tuple[Any, int]:  # in a child process: see child_sink.py
            sink = ChildSink("tensorboard", open_tensorboard_sink, run.dir / TENSORBOARD_DIR)
            return sink, sink.first
        starts.append(SinkStart("tensorboard", open_tensorboard))
    if wants_wandb(tracking):
        fresh = "wandb_id" not in record
        run_id = record.setdefault("wandb_id", secrets.token_hex(4))

        def open_wandb() -> tuple[Any, int]:  # in a child process: see child_sink.py
            sink = ChildSink(wandb_child(wandb_mode(tracking.wandb.mode)), open_wandb_sink,
                             run.dir, tracking.wandb, run_id,
                             f"{run.dir.parent.name}/{run.dir.name}", config, fresh)
            return sink, sink.first
        starts.append(SinkStart("wandb", open_wandb))
    record.update({"step": done_step, "groups": sorted(done_groups)})
    run.update_meta(tracking=record)
    return Trackers(run, [SinkWorker(start, run, config, journal) for start in starts],
                    done_step, done_groups, tracking.close_wait_seconds)

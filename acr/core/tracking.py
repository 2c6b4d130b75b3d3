"""Experiment tracking: optional mirrors of a run folder in TensorBoard and Weights & Biases.

The run folder stays the source of truth; a tracker only copies what the run writes. `Trackers`
fans every call out to the sinks the config asks for (`tracking:`), and a sink that fails (not
installed, bad credentials, disk full) costs one warning and is switched off: it never fails
the run.

Resume: meta.json's `tracking` record holds the W&B run id and the last step logged with the
groups logged at it (`step`, `groups`), updated after every call. A resumed run reopens the same
W&B run (same id, resume="allow") and the same TensorBoard folder with `purge_step` just after
that step (TensorBoard's readers drop anything a killed process wrote beyond it), and skips
every call at a step (and group) the run has already tracked, so curves have no gap and no
duplicate points.
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

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR),
                                    purge_step=purge_step, flush_secs=30)

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
        self.run = wandb.init(
            dir=str(run_dir), project=options.project, entity=options.entity,
            tags=list(options.tags) or None, mode=wandb_mode(options.mode), id=run_id,
            name=label, resume="allow", config=config,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                    x_disable_meta=True, save_code=False))

    def config(self, config: dict) -> None:
        pass  # given to wandb.init (a resumed run gets it again, unchanged)

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

    Every call names its step and a group (what kind of record it is); a call whose step and
    group the run has already tracked (meta.json) is skipped, so a resumed run neither repeats
    nor misses a point. A sink that raises is warned about once and closed."""

    def __init__(self, run: Optional[Run], sinks: list[Any], done_step: int,
                 done_groups: Iterable[str]):
        self.run, self.sinks = run, sinks
        self.step, self.groups = done_step, set(done_groups)

    @property
    def active(self) -> bool:
        return bool(self.sinks)

    def _call(self, step: int, group: str, method: str, *args: Any) -> None:
        if not self.sinks or step < self.step or (step == self.step and group in self.groups):
            return
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(step, *args)
            except Exception as exc:
                self._drop(sink, exc)
        self.groups = self.groups | {group} if step == self.step else {group}
        self.step = step
        if self.run is not None:
            record = {**self.run.meta().get("tracking", {}), "step": step,
                      "groups": sorted(self.groups)}
            self.run.update_meta(tracking=record)

    def scalars(self, step: int, group: str, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items()
                  if v is not None and math.isfinite(float(v))}
        if finite:
            self._call(step, group, "scalars", finite)

    def clips(self, step: int, group: str, clips: list[Clip]) -> None:
        if clips:
            self._call(step, group, "clips", clips)

    def images(self, step: int, group: str, images: dict[str, Path]) -> None:
        if images:
            self._call(step, group, "images", images)

    def text(self, step: int, group: str, values: dict[str, str]) -> None:
        self._call(step, group, "text", values)

    def close(self) -> None:
        for sink in list(self.sinks):
            try:
                sink.close()
            except Exception as exc:
                self._drop(sink, exc)
        self.sinks = []

    def _drop(self, sink: Any, exc: BaseException) -> None:
        console.warn(f"tracking: {sink.name} failed ({type(exc).__name__}: {exc}); it is off "
                     "for the rest of this run (the run folder is complete without it)")
        if self.run is not None:
            self.run.event("tracking.failed", sink=sink.name, error=f"{type(exc).__name__}: {exc}")
        self.sinks = [s for s in self.sinks if s is not sink]
        if hasattr(sink, "close"):
            try:
                sink.close()
            except Exception:
                pass


def open_trackers(run: Run, tracking: Any, config: dict, main: bool = True) -> Trackers:
    """The run's trackers as `tracking` (the config's TrackingOptions) asks for; none on ranks
    other than 0 (`main`). A new run records a W&B run id in meta.json; a resumed one reuses it
    and continues after the last step it tracked. The config goes to each sink once."""
    if not main or tracking is None or not (tracking.tensorboard or tracking.wandb):
        return Trackers(None, [], -1, ())
    record = dict(run.meta().get("tracking") or {})
    done_step = int(record.get("step", -1))
    fresh = "step" not in record
    sinks: list[Any] = []
    if tracking.tensorboard:
        try:
            sinks.append(TensorBoardSink(run.dir, None if fresh else done_step + 1))
        except Exception as exc:
            _warn_unavailable(run, "tensorboard", exc)
    if tracking.wandb is not None and tracking.wandb.mode != "disabled":
        record.setdefault("wandb_id", secrets.token_hex(4))
        try:
            sinks.append(WandbSink(run.dir, tracking.wandb, record["wandb_id"],
                                   f"{run.dir.parent.name}/{run.dir.name}", config))
        except Exception as exc:
            _warn_unavailable(run, "wandb", exc)
    record.update({"sinks": [s.name for s in sinks]})
    if tracking.tensorboard:
        record["tensorboard"] = TENSORBOARD_DIR
    run.update_meta(tracking=record)
    trackers = Trackers(run, sinks, done_step, record.get("groups", ()))
    if fresh:
        for sink in list(trackers.sinks):
            try:
                sink.config(config)
            except Exception as exc:
                trackers._drop(sink, exc)
    return trackers


def _warn_unavailable(run: Run, name: str, exc: BaseException) -> None:
    console.warn(f"tracking: {name} is unavailable ({type(exc).__name__}: {exc}); the run goes "
                 "on without it")
    run.event("tracking.failed", sink=name, error=f"{type(exc).__name__}: {exc}")

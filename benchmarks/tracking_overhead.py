"""Tracking's cost: `acr experiment` and `acr finetune` runs on the tiny models, without trackers
and with both (TensorBoard + W&B offline).

Experiment: 5 prompts x 2 parameter sets x (4 x scale) samples of 2 s (analysis off, so both
sides time generation, writing and, with tracking, the per-batch scalars and the clips).
Fine-tune: the demo dataset (9 files of 4 s), 4 x scale epochs of 2 s segments, samples every
2 epochs (per-step scalars, per-epoch scalars, sample audio). Three ways of running (`--ways`);
the first two alternate without and with tracking `--repeats` times (each repeat a pair of
runs, one right after the other, which goes first alternating), and time two spans in every run:

- process: the whole `python -m acr experiment|finetune CONFIG` command, as a user runs it:
  everything tracking costs is inside (importing wandb and TensorBoard, starting W&B's service,
  closing both), and so is what both sides pay (Python, torch, the model). These commands run
  first, from this process while it is as small as a shell (no torch imported, no run in it,
  no tracker's process left by one): a user's command does not run beside a benchmark's
  leftover tracker processes, nor below a process that holds torch; the first slowed the
  tracked commands alone, and the second did in some measurements (below, Leftovers and
  Parent).
- in-process: `run_experiment` / `run_finetune` called again in one process that already ran
  a tracked run (wandb imported, its service up): what tracking adds to a run beyond the
  once-per-process costs.
- loop (in both of those): the run's generation or training loop, as the run records it in
  meta.json (`wall_seconds`): an experiment's batches (generating, writing each clip and its
  sidecar, the per-batch tracking calls), a fine-tune's epochs (training, validation, the
  samples every `sample_every`, checkpoints, the per-step and per-epoch tracking calls). This
  is what "tracking slows generation or training" means; the rest of a run's time is setup and
  close (opening the trackers, loading the model, the end-of-run clips, closing the trackers),
  which the other spans include. On Linux both ways also read the kernel's scheduler
  statistics at the loop's start and end (helpers/loop_probe.py; the process way runs each
  command through it, by acr's own entry function): where the run's main thread spent the
  loop, on a CPU, runnable but waiting for one, and the rest asleep, and the other
  processes' CPU time (Contention). A CPU a tracker's process takes from the loop shows as
  waiting and as that process's CPU time; what the loop loses beyond it (torch's threads
  waiting for each other, this machine running slower) as time asleep or on a CPU.
- interleaved: one long tracked `run_experiment` / `run_finetune` (`--interleaved-seconds` of
  loop; the fine-tune without sample rounds) in one process, tracking switched on and off every
  ALTERNATE_SECONDS (Trackers.active reads False while off: the run makes no tracking call,
  writes no journal line, and its sinks get nothing new), each step timed (a fine-tune's
  optimizer step, an experiment's batch; not the interval across an epoch's end). A pair is
  an on span and the off span after it: the on span's mean step, with the extra time of the
  off span's first SETTLE_SECONDS (where the sinks handle the on span's last calls: they
  gather calls for up to half a second) shared among its steps, against the rest of the off
  span's mean step. Both sides of a pair are seconds apart in one process on one model, so
  this machine's drift between runs does not reach them: it is the precise figure for what
  tracking costs a step. What it leaves out, the other ways include: starting and closing the
  trackers, the end-of-run clips, the sample rounds, what the trackers' processes do on their
  own schedule whether or not calls come (a flush, W&B's service), and what the run does for
  its trackers in both spans (building a step's values; a fine-tune's gradient norm, which the
  benchmark's config computes anyway to clip the gradients).

Leftovers: measured on 2026-12-05 (this 2-core VM, 4-epoch tiny fine-tunes as whole processes,
TensorBoard + W&B), with a TensorBoard child, a W&B child and W&B's service left waiting by this
process's in-process runs, the tracked command's loop was longer in 10 of 10 pairs, median +30%;
with them ended, +5.4% (the pairs from -16% to +37%), as from a plain shell. Before this, the
process way's figures carried that (24 pairs: fine-tune loop +50.8%, experiment +11.3%).

Parent: measured on 2026-12-05 (the same machine), whole 4-epoch fine-tunes started by a
Python process that had imported torch and run one untracked fine-tune itself (as this
benchmark's process had before its process way, until this change) and by a small one that had
not, in alternating blocks of 3 or 4 pairs, 20 pairs each: from the large parent the loop took
0.54 s untracked and 0.70 s tracked (medians; median over the pairs +27.3%, 16 pairs of 20
longer tracked), and the trackers' processes worked 0.01-0.04 CPU s inside 19 tracked loops of
20; from the small parent 0.47 s either way (+1.8%, 10 of 20 longer), the trackers' processes
idle in 18 loops of 20. The large parent itself used 0.001-0.003 CPU s a command; neither its
environment (what torch's import and a run set) nor a large process run and ended before a
small parent made the difference (6 pairs: 0.41-0.60 s, trackers idle). Cause not found.
Through this benchmark from the large parent, the process way's fine-tune loop measured
+18.2% and +27.2% (10 and 8 pairs, just before); from the small parent, +0.5% (16 pairs,
right after this change) and then +33.3% (30 pairs, half an hour later): the parent may
explain part of the overhead, or none of it (this machine's state moves it more).

`--scale` (repeatable) makes the runs longer; every scale is timed the first two ways. Each
figure is the median of each side and the overhead is the median over the pairs of (tracked /
untracked - 1):
a small machine's speed drifts by several percent between runs of a few seconds, and a pair's
two runs see the same drift, which the median over pairs then sets aside; its confidence
interval (of at least 95%, from the order of the pairs' figures: Figure.interval) says how far
this machine's noise may leave the figure from the truth. Prints the machine's
load average, each figure with what it measures, and exits 1 when the loop's overhead at the
largest scale, any way, is above `--max-overhead` percent (the interleaved figures count
as the largest scale's).

    python benchmarks/tracking_overhead.py [--repeats 16] [--scale 1 --scale 4] [--max-overhead 3]
        [--ways process,in-process,interleaved] [--interleaved-seconds 120]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from helpers.loop_probe import READS_SCHEDULER, install, loop_share  # (benchmarks/helpers)

LOOP_PROBE = Path(__file__).parent / "helpers" / "loop_probe.py"

GRID = """\
name: bench
model: tiny-musicgen
device: cpu
seed: 1
samples_per_prompt: {samples}
batch_size: 4
defaults: {{duration: 2.0}}
prompt_sets:
  mixed: [calm piano, fast drums, warm pad, bright guitar, deep bass]
parameter_sets:
  baseline: {{}}
  hot: {{temperature: 1.5}}
analyze: false
"""

FINETUNE = """\
name: bench-ft
model: tiny-musicgen
data: {data}
strategy: full
epochs: {epochs}
lr: 3.0e-3
segment_duration: 2.0
sample_every: {sample_every}
sample_duration: 1.0
patience: {patience}
device: cpu
"""

TRACKING = "tracking: {tensorboard: true, wandb: {mode: offline}}\n"
COMMANDS = ("experiment", "finetune")


@dataclasses.dataclass
class Figure:
    """One comparison: a span of a command at a scale, untracked and tracked, pair by pair."""

    command: str
    scale: int
    way: str  # "process" | "in-process" | "process, loop" | "in-process, loop" | "interleaved"
    off: list[float]  # seconds, one per pair
    on: list[float]

    @property
    def extras(self) -> list[float]:
        """Each pair's tracked run's extra time, in percent."""
        return [100 * (on / off - 1) for off, on in zip(self.off, self.on)]

    @property
    def overhead(self) -> float:
        """The median over the pairs of the tracked run's extra time, in percent."""
        return statistics.median(self.extras)

    def interval(self) -> str:
        """The median's distribution-free confidence interval of at least 95%, over the pairs:
        from the k-th smallest to the k-th largest extra time, k the largest for which fewer
        than k of n pairs fall below the median with probability at most 2.5% (the binomial
        sign test). It assumes only that the pairs are independent; with 5 pairs or fewer
        no such interval exists."""
        extras, n = sorted(self.extras), len(self.extras)

        def below(j: int) -> float:  # P(at most j of n pairs below the median)
            return sum(math.comb(n, i) for i in range(j + 1)) / 2 ** n
        if below(0) > 0.025:
            return "no 95% interval from so few pairs"
        k = 1
        while below(k) <= 0.025:
            k += 1
        return (f"{100 * (1 - 2 * below(k - 1)):.0f}% interval {extras[k - 1]:+.1f}% to "
                f"{extras[n - k]:+.1f}%")


ALTERNATE_SECONDS = 2.0  # interleaved: tracking on for this long, then off, and so on
SETTLE_SECONDS = 0.75  # an off span's first steps: the sinks still handle the on span's calls
# (they gather calls for up to half a second)


class Alternation:
    """Tracking switched on and off every ALTERNATE_SECONDS within one run (the interleaved
    way: the module docstring), and the steps timed: `step()` at each step's end (the run's
    tracking call for the step follows it), `apart()` when something else happened since the
    last step (an epoch's end: that interval is not a step)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.last: float | None = None  # the last step's end
        self.interrupted = False
        self.steps: list[tuple[float, float]] = []  # (its start after self.start, seconds)

    def on(self) -> bool:
        """Whether tracking is on now: in the even spans."""
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        return int((now - self.start) // ALTERNATE_SECONDS) % 2 == 0

    def step(self) -> None:
        now = time.perf_counter()
        if self.last is not None and not self.interrupted and self.start is not None:
            self.steps.append((self.last - self.start, now - self.last))
        self.last, self.interrupted = now, False

    def apart(self) -> None:
        self.interrupted = True

    def pairs(self) -> tuple[list[float], list[float]]:
        """(off, on) per on span and the off span after it. The on span's steps made tracking
        calls (each step's interval holds the call that began it); what the sinks do with its
        last calls lands in the off span's first SETTLE_SECONDS, whose extra time over the rest
        of the off span's mean is the on span's too. on: the on span's mean step with that
        extra shared among its steps; off: the off span's mean step after SETTLE_SECONDS."""
        off, on = [], []
        spans = int(max((start for start, _ in self.steps), default=0) // ALTERNATE_SECONDS)
        for span in range(0, spans, 2):
            begin, middle = span * ALTERNATE_SECONDS, (span + 1) * ALTERNATE_SECONDS

            def within(low: float, high: float) -> list[float]:
                return [seconds for start, seconds in self.steps if low <= start < high]
            tracked = within(begin, middle)
            spill = within(middle, middle + SETTLE_SECONDS)
            rest = within(middle + SETTLE_SECONDS, middle + ALTERNATE_SECONDS)
            if len(tracked) >= 3 and len(rest) >= 3:
                mean = statistics.mean(rest)
                on.append((sum(tracked) + sum(spill) - len(spill) * mean) / len(tracked))
                off.append(mean)
        return off, on


@contextlib.contextmanager
def alternating(alternation: Alternation):
    """A context in which this process's runs track only in `alternation`'s on spans and time
    their steps: a fine-tune's optimizer steps at its per-step tracking callback (given to
    every epoch, on or off: the call inside asks Trackers.active), an experiment's batches
    where the run hands each to its trackers. It wraps the functions of acr that do these
    (an AttributeError here: they were renamed)."""
    import acr.commands.experiment.run as experiment_run
    import acr.commands.finetune.train as finetune_train
    from acr.core import tracking

    active, scalars = tracking.Trackers.active, tracking.Trackers.scalars
    track_batches, step_tracker = experiment_run.track_batches, finetune_train.step_tracker
    forced = []  # non-empty: tracking on whatever the span

    def gated(self) -> bool:
        return (bool(forced) or alternation.on()) and active.fget(self)

    def timed_step_tracker(trackers):
        forced.append(True)
        try:
            inner = step_tracker(trackers)
        finally:
            forced.pop()
        if inner is None:
            return None

        def on_step(step: int, values: dict) -> None:
            alternation.step()
            inner(step, values)
        return on_step

    def other_calls(self, step, group, values):
        if group not in ("train", "batch"):  # (a fine-tune's epoch end: validation lies
            # between two steps)
            alternation.apart()
        return scalars(self, step, group, values)

    def timed_batches(trackers, run_dir, batches):
        if len(batches) == 1:  # (not a resumed run's catching up)
            alternation.step()
        return track_batches(trackers, run_dir, batches)

    tracking.Trackers.active = property(gated)
    tracking.Trackers.scalars = other_calls
    finetune_train.step_tracker = timed_step_tracker
    experiment_run.track_batches = timed_batches
    try:
        yield
    finally:
        tracking.Trackers.active, tracking.Trackers.scalars = active, scalars
        finetune_train.step_tracker = step_tracker
        experiment_run.track_batches = track_batches


@dataclasses.dataclass
class Timing:
    """One run: its whole span as timed here, its loop as it recorded it, and who had the
    CPUs in the loop (loop_probe.loop_share; None where it could not be read)."""

    whole: float
    loop: float
    share: dict[str, float] | None = None


def timed_run(out: Path, start: float, readings: list[dict] | None = None) -> Timing:
    """The Timing of the run that just wrote `out`, started at perf_counter `start`, with the
    loop's scheduler `readings` (loop_probe) if there are two."""
    whole = time.perf_counter() - start
    share = loop_share(*readings) if readings and len(readings) == 2 else None
    return Timing(whole, json.loads((out / "meta.json").read_text())["wall_seconds"], share)


@dataclasses.dataclass
class Contention:
    """Where the main thread of a command's loops spent them, pair by pair (loop_probe): on a
    CPU, runnable but waiting for one (another process had it: what a tracker's processes
    take from the loop shows here), and the rest of the loop asleep (waiting for torch's other
    threads, the interpreter lock, the disk); and the other processes' CPU time. Read from the
    kernel, so a change of this machine's speed shows as time on a CPU, not as waiting."""

    command: str
    scale: int
    way: str
    off: list[Timing]
    on: list[Timing]

    PARTS = {"on a CPU": lambda t: t.share["main_cpu"],
             "waiting for a CPU": lambda t: t.share["main_waiting"],
             "asleep": lambda t: t.loop - t.share["main_cpu"] - t.share["main_waiting"],
             "other processes' CPU": lambda t: t.share["others_cpu"]}

    def report(self) -> str:
        """One line: for each part, the medians untracked -> tracked (ms) and the median over
        the pairs of the difference, in percent of the untracked loop."""
        parts = []
        for name, part in self.PARTS.items():
            off, on = (statistics.median(map(part, side)) for side in (self.off, self.on))
            added = statistics.median(100 * (part(b) - part(a)) / a.loop
                                      for a, b in zip(self.off, self.on))
            parts.append(f"{name} {1000 * off:.0f} -> {1000 * on:.0f} ms ({added:+.1f}%)")
        steal = [statistics.median(t.share["steal"] for t in side) * 1000
                 for side in (self.off, self.on)]
        return (f"{label(self.command, self.scale)} {self.way + ', loop':16s}: the run's main "
                f"thread {', '.join(parts[:3])}; {parts[3]}; steal {steal[0]:.0f} -> "
                f"{steal[1]:.0f} ms (medians untracked -> tracked; in brackets the median over "
                "the pairs, of the untracked loop; asleep: the rest of the loop)")


def label(command: str, scale: int) -> str:
    """A figure's command and run length, as every line of the report starts."""
    samples = f"{40 * scale} clips" if command == "experiment" else f"{4 * scale} epochs"
    return f"acr {command:10s} scale {scale} ({samples:9s})"


def pairs(repeats: int, timed: Callable[[bool], Timing]) -> dict[bool, list[Timing]]:
    """`repeats` pairs of runs `timed(tracked)`, untracked and tracked one right after the
    other, alternating which goes first: {tracked: timings}."""
    times: dict[bool, list[Timing]] = {False: [], True: []}
    for repeat in range(repeats):
        for tracked in (False, True) if repeat % 2 == 0 else (True, False):
            times[tracked].append(timed(tracked))
    return times


def add_figures(figures: list, command: str, scale: int, way: str,
                times: dict[bool, list[Timing]]) -> None:
    """The Figures of one way's pairs (the whole span, the loop) and, where every run was
    read, its Contention."""
    for span, name in (("whole", way), ("loop", f"{way}, loop")):
        figures.append(Figure(command, scale, name, [getattr(t, span) for t in times[False]],
                              [getattr(t, span) for t in times[True]]))
    if all(t.share is not None for side in times.values() for t in side):
        figures.append(Contention(command, scale, way, times[False], times[True]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=16,
                        help="pairs of runs per figure (even: each side goes first as often)")
    parser.add_argument("--scale", type=int, action="append",
                        help="run length: experiment samples per prompt and fine-tune epochs "
                             "are 4 x scale (repeatable; default 1)")
    parser.add_argument("--ways", default="process,in-process,interleaved",
                        help="any of process, in-process, interleaved (comma-separated)")
    parser.add_argument("--interleaved-seconds", type=float, default=120.0,
                        help="the length of each interleaved run's loop (about)")
    parser.add_argument("--max-overhead", type=float, default=3.0, help="percent")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    scales, ways = sorted(set(args.scale or [1])), args.ways.split(",")
    unknown = [way for way in ways if way not in ("process", "in-process", "interleaved")]
    if unknown:
        parser.error(f"--ways: {', '.join(unknown)}: not a way; use process, in-process, "
                     "interleaved")
    os.environ.pop("WANDB_MODE", None)  # (the runs' configs say offline, as a user's would)
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(1 min) at the start")

    # a child starts W&B's service of its own, as a user's command does (wandb keeps this
    # process's service in WANDB_SERVICE once a run started here)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    figures: list[Figure | Contention] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from acr.commands.finetune import make_demo_data; "
                        "make_demo_data(Path(sys.argv[1]), files_per_class=3, seconds=4.0)",
                        str(tmp / "data")], check=True, env=env)
        counter = iter(range(10 ** 6))
        paths: dict[tuple[int, str, bool], Path] = {}  # (scale, command, tracked): its config
        for scale in scales:
            texts = {"experiment": GRID.format(samples=4 * scale),
                     "finetune": FINETUNE.format(data=tmp / "data", epochs=4 * scale,
                                                 sample_every=2, patience=3)}
            for command, text in texts.items():
                for tracked in (False, True):
                    path = tmp / f"{command}-{scale}-{'on' if tracked else 'off'}.yaml"
                    path.write_text(text + (TRACKING if tracked else ""))
                    paths[scale, command, tracked] = path

        # the process way first, while this process is small (no torch, no run: Parent)
        if "process" in ways:
            for scale in scales:
                for command in COMMANDS:
                    def process(tracked: bool) -> Timing:
                        out, start = tmp / f"run-{next(counter)}", time.perf_counter()
                        probe = out.with_suffix(".json")  # (`acr COMMAND` as `-m acr` runs it)
                        subprocess.run([sys.executable, str(LOOP_PROBE), str(probe), command,
                                        str(paths[scale, command, tracked]), "--out", str(out)],
                                       check=True, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=env)
                        return timed_run(out, start, json.loads(probe.read_text())
                                         if READS_SCHEDULER else None)

                    process(False)  # untimed: the tiny model built, the fine-tune's codes cached
                    add_figures(figures, command, scale, "process",
                                pairs(args.repeats, process))

        if "in-process" in ways:
            from acr.core.config.loader import load_config

            for scale in scales:
                for command in COMMANDS:
                    schema, run = in_process_runner(command)
                    configs = {t: load_config(schema, paths[scale, command, t])
                               for t in (False, True)}

                    def in_process(tracked: bool) -> Timing:
                        out, start = tmp / f"run-{next(counter)}", time.perf_counter()
                        readings: list[dict] = []
                        remove = install(readings) if READS_SCHEDULER else None
                        try:
                            run(configs[tracked], out=out)
                        finally:
                            if remove is not None:
                                remove()
                        return timed_run(out, start, readings)

                    in_process(False)  # untimed: the model built, the codes cached
                    in_process(True)  # wandb loaded, the trackers' children started, waiting
                    add_figures(figures, command, scale, "in-process",
                                pairs(args.repeats, in_process))
        if "interleaved" in ways:
            if "in-process" not in ways:  # untimed, in this process: its first run's costs
                from acr.core.config.loader import load_config
                for command in COMMANDS:
                    schema, run = in_process_runner(command)
                    run(load_config(schema, paths[scales[-1], command, False]),
                        out=tmp / f"run-{next(counter)}")
            for command in COMMANDS:
                figures.append(interleaved(command, tmp, next(counter), scales[-1],
                                           args.interleaved_seconds))

    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end; {args.repeats} pairs of "
          "runs per figure: the median of each side, and the median over the pairs of the "
          "tracked run's extra time")
    print("process    = the whole `python -m acr COMMAND CONFIG` (tracking's once-per-process "
          "costs included)")
    print("in-process = run_experiment / run_finetune in a process that already tracked a run")
    print("loop       = the run's generation or training loop (meta.json's wall_seconds), "
          "timed by the run itself in either way")
    for f in figures:
        if isinstance(f, Contention):
            print(f.report())
            continue
        if f.way == "interleaved":
            off, on = statistics.median(f.off) * 1000, statistics.median(f.on) * 1000
            unit = "batch" if f.command == "experiment" else "step"
            print(f"acr {f.command:10s} interleaved, {len(f.off)} pairs of spans: {off:6.2f} ms a "
                  f"{unit} without tracking, {on:6.2f} ms with TensorBoard + W&B (offline): "
                  f"{f.overhead:+.1f}% over the pairs ({f.interval()})")
            continue
        off, on = statistics.median(f.off), statistics.median(f.on)
        print(f"{label(f.command, f.scale)} {f.way:16s}: {off:6.2f} s "
              f"without tracking, {on:6.2f} s with TensorBoard + W&B (offline): "
              f"{f.overhead:+.1f}% over the pairs ({f.interval()}; "
              f"range {min(f.on):.2f}-{max(f.on):.2f} s with, {min(f.off):.2f}-{max(f.off):.2f} s "
              "without)")
    judged = [f for f in figures if isinstance(f, Figure) and f.scale == scales[-1] and
              (f.way.endswith("loop") or f.way == "interleaved")]
    worst = max(judged, key=lambda f: f.overhead)
    which = (f"acr {worst.command} {worst.way} at scale {worst.scale}: {worst.overhead:+.1f}%, "
             f"{worst.interval()}")
    if worst.overhead > args.max_overhead:
        raise SystemExit(f"the largest median overhead of a loop or step is above the promised "
                         f"{args.max_overhead:g}% ({which}; an interval that holds "
                         f"{args.max_overhead:g}% cannot tell on which side the overhead lies)")
    print(f"the largest median overhead of a loop or step is within the promised "
          f"{args.max_overhead:g}% ({which})")


def in_process_runner(command: str) -> tuple[type, Callable]:
    """(config schema, run function) of a command, imported here (torch with it)."""
    if command == "experiment":
        from acr.commands.experiment import run_experiment
        from acr.core.config.schema import ExperimentConfig
        return ExperimentConfig, run_experiment
    from acr.commands.finetune import run_finetune
    from acr.core.config.schema import FinetuneConfig
    return FinetuneConfig, run_finetune


def interleaved(command: str, tmp: Path, number: int, scale: int, seconds: float) -> Figure:
    """The interleaved way (module docstring): one tracked run of about `seconds` of loop,
    in this process, its steps timed with tracking on and off in turns."""
    from acr.core.config.loader import load_config

    # lengths from the scale-1 runs' loops on this machine: about 1.5 s for 40 clips, 0.1 s
    # an epoch without samples
    schema, run = in_process_runner(command)
    if command == "experiment":
        text = GRID.format(samples=max(4, round(4 * seconds / 1.5)))
    else:
        text = FINETUNE.format(data=tmp / "data", epochs=max(4, round(seconds / 0.1)),
                               sample_every=0, patience=0)  # (patience 0: every epoch runs)
    path = tmp / f"{command}-interleaved.yaml"
    path.write_text(text + TRACKING)
    alternation = Alternation()
    with alternating(alternation):
        run(load_config(schema, path), out=tmp / f"run-{number}")
    off, on = alternation.pairs()
    if not off:
        raise SystemExit(f"the interleaved {command} was too short for a pair of spans: give "
                         "--interleaved-seconds more")
    return Figure(command, scale, "interleaved", off, on)


if __name__ == "__main__":
    main()

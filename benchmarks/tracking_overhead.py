"""Tracking's cost: `acr experiment` and `acr finetune` runs on the tiny models, without trackers
and with both (TensorBoard + W&B offline).

Experiment: 5 prompts x 2 parameter sets x (4 x scale) samples of 2 s (analysis off, so both
sides time generation, writing and, with tracking, the per-batch scalars and the clips).
Fine-tune: the demo dataset (9 files of 4 s), 4 x scale epochs of 2 s segments, samples every
2 epochs (per-step scalars, per-epoch scalars, sample audio). Two ways of running, each
alternating without and with tracking `--repeats` times (each repeat a pair of runs, one right
after the other, which goes first alternating), and two spans timed in every run:

- process: the whole `python -m acr experiment|finetune CONFIG` command, as a user runs it:
  everything tracking costs is inside (importing wandb and TensorBoard, starting W&B's service,
  closing both), and so is what both sides pay (Python, torch, the model).
- in-process: `run_experiment` / `run_finetune` called again in one process that already ran
  a tracked run (wandb imported, its service up): what tracking adds to a run beyond the
  once-per-process costs.
- loop (in both ways): the run's generation or training loop, as the run records it in
  meta.json (`wall_seconds`): an experiment's batches (generating, writing each clip and its
  sidecar, the per-batch tracking calls), a fine-tune's epochs (training, validation, the
  samples every `sample_every`, checkpoints, the per-step and per-epoch tracking calls). This
  is what "tracking slows generation or training" means; the rest of a run's time is setup and
  close (opening the trackers, loading the model, the end-of-run clips, closing the trackers),
  which the other spans include.

`--scale` (repeatable) makes the runs longer; every scale is timed both ways. Each figure is the
median of each side and the overhead is the median over the pairs of (tracked / untracked - 1):
a small machine's speed drifts by several percent between runs of a few seconds, and a pair's
two runs see the same drift, which the median over pairs then sets aside; its confidence
interval (of at least 95%, from the order of the pairs' figures: Figure.interval) says how far
this machine's noise may leave the figure from the truth. Prints the machine's
load average, each figure with what it measures, and exits 1 when the loop's overhead at the
largest scale, either way, is above `--max-overhead` percent.

    python benchmarks/tracking_overhead.py [--repeats 8] [--scale 1 --scale 4] [--max-overhead 3]
"""
from __future__ import annotations

import argparse
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
sample_every: 2
sample_duration: 1.0
device: cpu
"""

TRACKING = "tracking: {tensorboard: true, wandb: {mode: offline}}\n"


@dataclasses.dataclass
class Figure:
    """One comparison: a span of a command at a scale, untracked and tracked, pair by pair."""

    command: str
    scale: int
    way: str  # "process" | "in-process" | "process, loop" | "in-process, loop"
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


@dataclasses.dataclass
class Timing:
    """One run: its whole span as timed here, and its loop as it recorded it."""

    whole: float
    loop: float


def timed_run(out: Path, start: float) -> Timing:
    """The Timing of the run that just wrote `out`, started at perf_counter `start`."""
    whole = time.perf_counter() - start
    return Timing(whole, json.loads((out / "meta.json").read_text())["wall_seconds"])


def pairs(repeats: int, timed: Callable[[bool], Timing]
          ) -> tuple[dict[bool, list[float]], dict[bool, list[float]]]:
    """The whole spans and the loops of `repeats` pairs of runs `timed(tracked)`, untracked
    and tracked one right after the other, alternating which goes first: {tracked: seconds}."""
    times: dict[bool, list[Timing]] = {False: [], True: []}
    for repeat in range(repeats):
        for tracked in (False, True) if repeat % 2 == 0 else (True, False):
            times[tracked].append(timed(tracked))
    return ({k: [t.whole for t in v] for k, v in times.items()},
            {k: [t.loop for t in v] for k, v in times.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8,
                        help="pairs of runs per figure (even: each side goes first as often)")
    parser.add_argument("--scale", type=int, action="append",
                        help="run length: experiment samples per prompt and fine-tune epochs "
                             "are 4 x scale (repeatable; default 1)")
    parser.add_argument("--ways", default="process,in-process",
                        help="process, in-process or both (comma-separated)")
    parser.add_argument("--max-overhead", type=float, default=3.0, help="percent")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    scales, ways = sorted(set(args.scale or [1])), args.ways.split(",")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(1 min) at the start")

    from acr.commands.experiment import run_experiment
    from acr.commands.finetune import make_demo_data, run_finetune
    from acr.core.config.loader import load_config
    from acr.core.config.schema import ExperimentConfig, FinetuneConfig

    # a child starts W&B's service of its own, as a user's command does (wandb keeps this
    # process's service in WANDB_SERVICE once a run started here)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_demo_data(tmp / "data", files_per_class=3, seconds=4.0)
        counter = iter(range(10 ** 6))

        for scale in scales:
            texts = {"experiment": GRID.format(samples=4 * scale),
                     "finetune": FINETUNE.format(data=tmp / "data", epochs=4 * scale)}
            for command, text in texts.items():
                paths = {}
                for tracked in (False, True):
                    paths[tracked] = tmp / f"{command}-{scale}-{'on' if tracked else 'off'}.yaml"
                    paths[tracked].write_text(text + (TRACKING if tracked else ""))
                schema = ExperimentConfig if command == "experiment" else FinetuneConfig
                run = run_experiment if command == "experiment" else run_finetune
                configs = {t: load_config(schema, p) for t, p in paths.items()}

                def in_process(tracked: bool) -> Timing:
                    out, start = tmp / f"run-{next(counter)}", time.perf_counter()
                    run(configs[tracked], out=out)
                    return timed_run(out, start)

                def process(tracked: bool) -> Timing:
                    out, start = tmp / f"run-{next(counter)}", time.perf_counter()
                    subprocess.run([sys.executable, "-m", "acr", command, str(paths[tracked]),
                                    "--out", str(out)], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                    return timed_run(out, start)

                # untimed: the tiny model built, the fine-tune's codes cached, wandb loaded
                in_process(False), in_process(True)
                for way in ways:
                    whole, loop = pairs(args.repeats, process if way == "process" else in_process)
                    figures.append(Figure(command, scale, way, whole[False], whole[True]))
                    figures.append(Figure(command, scale, f"{way}, loop", loop[False], loop[True]))

    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end; {args.repeats} pairs of "
          "runs per figure: the median of each side, and the median over the pairs of the "
          "tracked run's extra time")
    print("process    = the whole `python -m acr COMMAND CONFIG` (tracking's once-per-process "
          "costs included)")
    print("in-process = run_experiment / run_finetune in a process that already tracked a run")
    print("loop       = the run's generation or training loop (meta.json's wall_seconds), "
          "timed by the run itself in either way")
    for f in figures:
        samples = f"{40 * f.scale} clips" if f.command == "experiment" else \
            f"{4 * f.scale} epochs"
        off, on = statistics.median(f.off), statistics.median(f.on)
        print(f"acr {f.command:10s} scale {f.scale} ({samples:9s}) {f.way:16s}: {off:6.2f} s "
              f"without tracking, {on:6.2f} s with TensorBoard + W&B (offline): "
              f"{f.overhead:+.1f}% over the pairs ({f.interval()}; "
              f"range {min(f.on):.2f}-{max(f.on):.2f} s with, {min(f.off):.2f}-{max(f.off):.2f} s "
              "without)")
    worst = max(f.overhead for f in figures if f.scale == scales[-1] and f.way.endswith("loop"))
    if worst > args.max_overhead:
        raise SystemExit(f"tracking slows the loop by {worst:.1f}% at scale {scales[-1]}, above "
                         f"the promised {args.max_overhead:g}%")
    print(f"tracking slows the loop by at most {worst:.1f}% at scale {scales[-1]} (promised: "
          f"at most {args.max_overhead:g}%)")


if __name__ == "__main__":
    main()

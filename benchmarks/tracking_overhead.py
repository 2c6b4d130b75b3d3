"""Tracking's cost: whole `acr experiment` and `acr finetune` runs on the tiny models, without
trackers and with both (TensorBoard + W&B offline).

Experiment: 5 prompts x 2 parameter sets x (4 x scale) samples of 2 s (analysis off, so both
sides time generation, writing and, with tracking, the per-batch scalars and the clips).
Fine-tune: the demo dataset (9 files of 4 s), 4 x scale epochs of 2 s segments, samples every
2 epochs (per-step scalars, per-epoch scalars, sample audio). Two ways of timing, each
alternating without and with tracking `--repeats` times and comparing the fastest of each side
(the least disturbed by other work on the machine):

- process: the whole `python -m acr experiment|finetune CONFIG` command, as a user runs it:
  everything tracking costs is inside (importing wandb and TensorBoard, starting W&B's service,
  closing both), and so is what both sides pay (Python, torch, the model).
- in-process: `run_experiment` / `run_finetune` called again in one process that already ran
  a tracked run (wandb imported, its service up): what tracking adds to a run beyond the
  once-per-process costs.

`--scale` (repeatable) makes the runs longer; every scale is timed both ways. Prints the machine's
load average, each figure with what it measures, and exits 1 when an overhead of the largest
scale is above `--max-overhead` percent.

    python benchmarks/tracking_overhead.py [--repeats 3] [--scale 1 --scale 4] [--max-overhead 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
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
    """One comparison: the fastest untracked and tracked time of a command at a scale."""

    command: str
    scale: int
    way: str  # "process" | "in-process"
    off: float
    on: float

    @property
    def overhead(self) -> float:
        return 100 * (self.on / self.off - 1)


def fastest_pair(repeats: int, timed: Callable[[bool], float]) -> tuple[float, float]:
    """The fastest untracked and tracked times of `timed(tracked)`, alternating the order."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(repeats):
        for tracked in (False, True) if repeat % 2 == 0 else (True, False):
            times[tracked].append(timed(tracked))
    return min(times[False]), min(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, action="append",
                        help="run length: experiment samples per prompt and fine-tune epochs "
                             "are 4 x scale (repeatable; default 1)")
    parser.add_argument("--ways", default="process,in-process",
                        help="process, in-process or both (comma-separated)")
    parser.add_argument("--max-overhead", type=float, default=3.0, help="percent")
    args = parser.parse_args()
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

                def in_process(tracked: bool) -> float:
                    start = time.perf_counter()
                    run(configs[tracked], out=tmp / f"run-{next(counter)}")
                    return time.perf_counter() - start

                def process(tracked: bool) -> float:
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "acr", command, str(paths[tracked]),
                                    "--out", str(tmp / f"run-{next(counter)}")], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                    return time.perf_counter() - start

                # untimed: the tiny model built, the fine-tune's codes cached, wandb loaded
                in_process(False), in_process(True)
                for way in ways:
                    off, on = fastest_pair(args.repeats,
                                           process if way == "process" else in_process)
                    figures.append(Figure(command, scale, way, off, on))

    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end; fastest of "
          f"{args.repeats} per side")
    print("process    = the whole `python -m acr COMMAND CONFIG` (tracking's once-per-process "
          "costs included)")
    print("in-process = run_experiment / run_finetune in a process that already tracked a run")
    for f in figures:
        samples = f"{40 * f.scale} clips" if f.command == "experiment" else \
            f"{4 * f.scale} epochs"
        print(f"acr {f.command:10s} scale {f.scale} ({samples:9s}) {f.way:10s}: {f.off:6.2f} s "
              f"without tracking, {f.on:6.2f} s with TensorBoard + W&B (offline): ratio "
              f"{f.on / f.off:.3f} ({f.overhead:+.1f}%, {f.on - f.off:+.2f} s)")
    worst = max(f.overhead for f in figures if f.scale == scales[-1])
    if worst > args.max_overhead:
        raise SystemExit(f"tracking costs {worst:.1f}% at scale {scales[-1]}, above the "
                         f"promised {args.max_overhead:g}%")


if __name__ == "__main__":
    main()

"""Tracking's cost: whole `acr experiment` and `acr finetune` runs on the tiny models, without
trackers and with both (TensorBoard + W&B offline), in one process.

Experiment: 5 prompts x 2 parameter sets x 4 samples = 40 clips of 2 s (analysis off, so both
sides time generation, writing and, with tracking, the per-batch scalars and the clips).
Fine-tune: the demo dataset (9 files of 4 s), 4 epochs of 2 s segments, samples every 2 epochs
(per-step scalars, per-epoch scalars, sample audio). Each run is timed `--repeats` times,
alternating with and without; the fastest of each is compared (the least disturbed by other
work on the machine). The tracked time includes starting the sinks (wandb.init with its
service, about 0.7 s here). Prints the times and the overhead; exits 1 above `--max-overhead`
percent.

    python benchmarks/tracking_overhead.py [--repeats 3] [--max-overhead 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

GRID = """\
name: bench
model: tiny-musicgen
device: cpu
seed: 1
samples_per_prompt: 4
batch_size: 4
defaults: {duration: 2.0}
prompt_sets:
  mixed: [calm piano, fast drums, warm pad, bright guitar, deep bass]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
analyze: false
"""

FINETUNE = """\
name: bench-ft
model: tiny-musicgen
data: {data}
strategy: full
epochs: 4
lr: 3.0e-3
segment_duration: 2.0
sample_every: 2
sample_duration: 1.0
device: cpu
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-overhead", type=float, default=3.0, help="percent")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    from acr.commands.experiment import run_experiment
    from acr.commands.finetune import make_demo_data, run_finetune
    from acr.core.config.loader import load_config
    from acr.core.config.schema import (ExperimentConfig, FinetuneConfig, TrackingOptions,
                                        WandbOptions)

    tracked = TrackingOptions(tensorboard=True, wandb=WandbOptions(mode="offline"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "grid.yaml").write_text(GRID)
        make_demo_data(tmp / "data", files_per_class=3, seconds=4.0)
        (tmp / "ft.yaml").write_text(FINETUNE.format(data=tmp / "data"))
        commands = {
            "experiment": (load_config(ExperimentConfig, tmp / "grid.yaml"), run_experiment),
            "finetune": (load_config(FinetuneConfig, tmp / "ft.yaml"), run_finetune)}
        for name, (cfg, run) in commands.items():
            run(cfg, out=tmp / f"{name}-warm-up")  # models built, codes cached: untimed
            times: dict[str, list[float]] = {"off": [], "on": []}
            for repeat in range(args.repeats):
                for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                    use = cfg if mode == "off" else dataclasses.replace(cfg, tracking=tracked)
                    start = time.perf_counter()
                    run(use, out=tmp / f"{name}-{mode}-{repeat}")
                    times[mode].append(time.perf_counter() - start)
            results[name] = (min(times["off"]), min(times["on"]))

    worst = 0.0
    for name, (off, on) in results.items():
        overhead = 100 * (on / off - 1)
        worst = max(worst, overhead)
        print(f"acr {name:10s}: {off:6.2f} s without tracking, {on:6.2f} s with TensorBoard + "
              f"W&B (offline): ratio {on / off:.3f} ({overhead:+.1f}%)")
    if worst > args.max_overhead:
        raise SystemExit(f"tracking costs {worst:.1f}%, above the promised "
                         f"{args.max_overhead:g}%")


if __name__ == "__main__":
    main()

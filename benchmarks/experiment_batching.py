"""Batched experiment runner vs one `generate` call per sample, same grid, one process.

The grid (tiny-musicgen on the CPU by default): 5 prompts x 2 parameter sets x 4 samples = 40
clips of 2 s. The straightforward loop calls generate once per sample and writes each WAV; acr's
runner (`run_experiment`) plans batches of samples that share model and parameters and writes
the same WAVs with their sidecars and the manifest (analysis off: `analyze: false`, so both
sides time generation and writing only). Prints samples per second for both and their ratio;
exits 1 if the runner is under 2.5x faster.

    python benchmarks/experiment_batching.py [--model tiny-musicgen] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

GRID = """\
name: bench
model: {model}
device: {device}
seed: 1
samples_per_prompt: 4
batch_size: {batch_size}
defaults: {{duration: 2.0}}
prompt_sets:
  mixed: [calm piano, fast drums, warm pad, bright guitar, deep bass]
parameter_sets:
  baseline: {{}}
  hot: {{temperature: 1.5}}
analyze: false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-musicgen")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--min-ratio", type=float, default=2.5)
    args = parser.parse_args()

    from acr.commands.experiment import run_experiment
    from acr.commands.experiment.plan import expand
    from acr.core.config.loader import load_config
    from acr.core.config.schema import ExperimentConfig
    from acr.core.engine import generate_batch, resolve_params, write_sample
    from acr.core.models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "grid.yaml"
        config_path.write_text(GRID.format(model=args.model, device=args.device,
                                           batch_size=args.batch_size))
        cfg = load_config(ExperimentConfig, config_path)
        samples = expand(cfg)
        loaded = load_model(args.model, args.device)  # loaded once, outside both timings
        params = {k: resolve_params(v, loaded) for k, v in cfg.parameter_sets.items()}
        generate_batch(loaded, ["warm-up"], params["baseline"], 0)

        start = time.perf_counter()
        for number, sample in enumerate(samples):
            wav = generate_batch(loaded, [sample.prompt], params[sample.parameter_set], number)
            write_sample(Path(tmp) / "loop" / sample.path, wav[0], loaded.sample_rate,
                         {"id": sample.id})
        loop_seconds = time.perf_counter() - start

        start = time.perf_counter()
        run_experiment(cfg, out=Path(tmp) / "batched")
        batched_seconds = time.perf_counter() - start

    n = len(samples)
    loop_rate, batched_rate = n / loop_seconds, n / batched_seconds
    print(f"grid: {n} samples of 2 s, {args.model} on {args.device}")
    print(f"one generate call per sample: {loop_rate:7.2f} samples/s ({loop_seconds:.1f} s)")
    print(f"acr batched runner:           {batched_rate:7.2f} samples/s ({batched_seconds:.1f} s)")
    ratio = batched_rate / loop_rate
    print(f"ratio: the batched runner is {ratio:.2f}x faster")
    if ratio < args.min_ratio:
        raise SystemExit(f"below the promised {args.min_ratio}x")


if __name__ == "__main__":
    main()

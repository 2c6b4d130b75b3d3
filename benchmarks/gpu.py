"""GPU benchmarks on the released architectures (random weights: same compute and memory).

On `random-musicgen-small` (any model name works: `--model random-musicgen-medium`), each
section a whole path of acr timed against the straightforward alternative where there is one:

- grid:     the experiment grid through `run_experiment` (batched) vs one generate call per
            sample, same samples: samples/s and their ratio (goal >= 8x);
- rtf:      generation real-time factor (audio seconds per second) at batch 1, 8, 32, 64 and the
            largest batch that fits, in fp32, fp16 (AudioCraft's default on CUDA) and bf16;
- memory:   peak GPU memory per sample against `generation_bytes_per_sample` (goal: within
            20 %), `batch_size: auto` fitting without back-off, and a batch forced too large
            (a capped memory fraction) recovering through the out-of-memory back-off with the
            same audio as the sizes it backed off to;
- finetune: training steps (tokens/s, peak memory) for full, last_layers and lora, fp32 vs bf16
            autocast, activation checkpointing off and on.

It writes one JSON of results and appends a dated section named after the device to
benchmarks/RESULTS.md. Without CUDA it stops with a message, unless `--device cpu --quick`:
a smoke run of every path on tiny-musicgen with tiny sizes (its figures mean nothing; it writes
a RESULTS section only where `--results` says).

    python benchmarks/gpu.py                                    # everything, on cuda
    python benchmarks/gpu.py --sections rtf,memory --model random-musicgen-medium
    python benchmarks/gpu.py --device cpu --quick --results /tmp/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = ("grid", "rtf", "memory", "finetune")
GRID_GOAL = 8.0  # batched grid vs one call per sample
MEMORY_TOLERANCE = 0.20  # measured vs predicted bytes per sample
MAX_SEARCHED_BATCH = 1024  # the largest-fit search stops here

GRID = """\
name: gpu-bench
model: {model}
device: {device}
seed: 1
samples_per_prompt: {samples}
batch_size: auto
defaults: {{duration: {duration}}}
prompt_sets:
  mixed: {prompts}
parameter_sets:
  baseline: {{}}
  hot: {{temperature: 1.5}}
analyze: false
"""
PROMPTS = ["calm piano", "fast drums", "warm pad", "bright guitar", "deep bass"]


@dataclass
class Settings:
    model: str
    device: str
    quick: bool
    grid_prompts: int = 5
    grid_samples: int = 8
    grid_duration: float = 2.0
    rtf_duration: float = 10.0
    rtf_batches: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "bf16"])
    memory_duration: float = 30.0  # the window: what generation_bytes_per_sample sizes
    memory_batch: int = 8
    train_batch: int = 8
    train_seconds: float = 10.0
    train_steps: int = 5
    strategies: list[str] = field(default_factory=lambda: ["full", "last_layers", "lora"])

    @classmethod
    def smoke(cls, model: str, device: str) -> "Settings":
        return cls(model, device, True, grid_prompts=1, grid_samples=2, grid_duration=0.2,
                   rtf_duration=0.2, rtf_batches=[1, 2], precisions=["fp32", "bf16"],
                   memory_duration=0.2, memory_batch=2, train_batch=2, train_seconds=0.5,
                   train_steps=1)


# ----------------------------------------------------------------------------------------------
# helpers


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def timed(device: str, work):
    """(result of work(), seconds), the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def reset_peak(device: str) -> int | None:
    """Reset the peak-memory counter; the bytes allocated now (None off CUDA)."""
    import torch

    if not device.startswith("cuda"):
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(torch.device(device))
    return torch.cuda.memory_allocated(torch.device(device))


def peak(device: str) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) \
        if device.startswith("cuda") else None


def set_precision(loaded, precision: str) -> None:
    """The LM's weights and generation autocast: fp32 (no autocast), fp16 (AudioCraft's own
    setting on CUDA: fp16 weights and autocast), bf16 (bf16 weights and autocast)."""
    import torch
    from audiocraft.utils.autocast import TorchAutocast

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    loaded.model.lm.to(dtype)
    device_type = "cuda" if loaded.device.startswith("cuda") else "cpu"
    loaded.model.autocast = TorchAutocast(enabled=precision != "fp32", device_type=device_type,
                                          dtype=dtype)


def params_for(loaded, duration: float):
    from acr.core.config.schema import GenerationParams
    from acr.core.engine import resolve_params

    return resolve_params(GenerationParams(duration=duration), loaded)


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


# ----------------------------------------------------------------------------------------------
# sections: each returns (printed lines, JSON record)


def grid(s: Settings) -> tuple[list[str], dict]:
    from acr.commands.experiment import run_experiment
    from acr.commands.experiment.plan import expand
    from acr.core.config.loader import load_config
    from acr.core.config.schema import ExperimentConfig
    from acr.core.engine import generate_batch, resolve_params, write_sample
    from acr.core.models import load_model

    loaded = load_model(s.model, s.device)
    set_precision(loaded, "fp16" if s.device.startswith("cuda") else "fp32")  # as loaded
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.yaml"
        path.write_text(GRID.format(model=s.model, device=s.device, samples=s.grid_samples,
                                    duration=s.grid_duration,
                                    prompts=json.dumps(PROMPTS[:s.grid_prompts])))
        cfg = load_config(ExperimentConfig, path)
        samples = expand(cfg)
        params = {k: resolve_params(v, loaded) for k, v in cfg.parameter_sets.items()}
        generate_batch(loaded, ["warm-up"], params["baseline"], 0)

        def loop():
            for number, sample in enumerate(samples):
                wav = generate_batch(loaded, [sample.prompt], params[sample.parameter_set],
                                     number)
                write_sample(Path(tmp) / "loop" / sample.path, wav[0], loaded.sample_rate,
                             {"id": sample.id})

        _, loop_seconds = timed(s.device, loop)
        run_dir, batched_seconds = timed(
            s.device, lambda: run_experiment(cfg, out=Path(tmp) / "batched"))
        written = sorted(p.name for p in (Path(run_dir) / "samples").rglob("*.wav"))
    n = len(samples)
    if len(written) != n:
        raise SystemExit(f"grid: the batched run wrote {len(written)} of {n} samples")
    ratio = loop_seconds / batched_seconds
    record = {"samples": n, "clip_seconds": s.grid_duration,
              "loop_samples_per_s": n / loop_seconds,
              "batched_samples_per_s": n / batched_seconds, "ratio": ratio,
              "goal": GRID_GOAL, "goal_met": ratio >= GRID_GOAL}
    return [f"grid: {n} samples of {s.grid_duration:g} s",
            f"  one generate call per sample: {n / loop_seconds:8.2f} samples/s "
            f"({loop_seconds:.1f} s)",
            f"  acr batched runner:           {n / batched_seconds:8.2f} samples/s "
            f"({batched_seconds:.1f} s)",
            f"  ratio: {ratio:.2f}x (goal >= {GRID_GOAL:g}x: "
            f"{'met' if ratio >= GRID_GOAL else 'NOT met'})"], record


def rtf(s: Settings) -> tuple[list[str], dict]:
    from acr.core.engine import generate_batch
    from acr.core.models import load_model

    loaded = load_model(s.model, s.device)
    params = params_for(loaded, s.rtf_duration)
    rows, lines = [], [f"real-time factor: {s.rtf_duration:g} s clips (audio seconds per "
                       "second of generation)"]
    precisions = [p for p in s.precisions if s.device.startswith("cuda") or p != "fp16"]
    for precision in precisions:
        set_precision(loaded, precision)
        generate_batch(loaded, ["warm-up"], params, 0)

        def measure(batch: int) -> dict:
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
            base = reset_peak(s.device)
            wav, seconds = timed(s.device, lambda: generate_batch(loaded, prompts, params, 1))
            top = peak(s.device)
            assert wav.shape[0] == batch
            return {"precision": precision, "batch": batch, "seconds": seconds,
                    "rtf": batch * s.rtf_duration / seconds,
                    "peak_gb": None if top is None else (top - base) / 1e9}

        measured = [measure(b) for b in s.rtf_batches]
        if s.device.startswith("cuda"):  # the largest batch that fits: doubling until OOM
            batch = max(s.rtf_batches)
            while batch * 2 <= MAX_SEARCHED_BATCH:
                try:
                    measured.append(measure(batch * 2) | {"largest_search": True})
                except Exception as exc:
                    if not is_oom(exc):
                        raise
                    import torch

                    torch.cuda.empty_cache()
                    break
                batch *= 2
        rows += measured
        for row in measured:
            lines.append(f"  {precision:5} batch {row['batch']:5d}: rtf {row['rtf']:9.2f}  "
                         f"({row['seconds']:.2f} s" + (f", +{row['peak_gb']:.2f} GB peak"
                                                        if row["peak_gb"] is not None else "")
                         + ")")
    set_precision(loaded, "fp16" if s.device.startswith("cuda") else "fp32")
    return lines, {"clip_seconds": s.rtf_duration, "rows": rows}


def memory(s: Settings) -> tuple[list[str], dict]:
    """Peak memory per sample vs the prediction; auto batch without back-off; forced back-off."""
    from acr.commands.experiment.batches import generate_with_backoff
    from acr.core.engine import generate_batch
    from acr.core.memory import generation_batch_size, generation_bytes_per_sample
    from acr.core.models import load_model

    loaded = load_model(s.model, s.device)
    set_precision(loaded, "fp16" if s.device.startswith("cuda") else "fp32")
    lm = loaded.model.lm
    duration = min(s.memory_duration, loaded.max_duration)
    params = params_for(loaded, duration)
    predicted = generation_bytes_per_sample(lm.dim, len(lm.transformer.layers),
                                            int(loaded.max_duration * loaded.frame_rate),
                                            lm.card, lm.num_codebooks)
    lines = [f"memory: {duration:g} s clips, batch {s.memory_batch}"]
    record: dict = {"clip_seconds": duration, "predicted_bytes_per_sample": predicted}

    base = reset_peak(s.device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(s.memory_batch)]
    generate_batch(loaded, prompts, params, 1)
    top = peak(s.device)
    if top is None:
        record["measured_bytes_per_sample"] = None
        lines.append("  peak memory per sample: not measured (no CUDA device)")
    else:
        measured = (top - base) / s.memory_batch
        off = measured / predicted - 1
        record |= {"measured_bytes_per_sample": measured, "relative_error": off,
                   "within_tolerance": abs(off) <= MEMORY_TOLERANCE}
        verdict = "met" if abs(off) <= MEMORY_TOLERANCE else "NOT met"
        lines.append(f"  per sample: measured {measured / 1e6:.0f} MB, predicted "
                     f"{predicted / 1e6:.0f} MB ({off:+.0%}; goal within "
                     f"{MEMORY_TOLERANCE:.0%}: {verdict})")

    events: list = []

    def on_event(name, **fields):
        events.append({"event": name, **fields})

    auto = generation_batch_size(loaded, MAX_SEARCHED_BATCH)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(auto)]
    clips = generate_with_backoff(loaded, prompts, params, 2, [0], on_event)
    record["auto"] = {"batch_size": auto, "back_offs": len(events), "clips": len(clips)}
    lines.append(f"  batch_size auto: {auto} ({'no back-off' if not events else 'BACKED OFF'})")

    if not s.device.startswith("cuda"):
        record["forced_backoff"] = None
        lines.append("  forced back-off: not run (out-of-memory exists only on CUDA)")
        return lines, record
    import torch

    device = torch.device(s.device)
    per_sample = record["measured_bytes_per_sample"]
    total = torch.cuda.get_device_properties(device).total_memory
    room = torch.cuda.memory_allocated(device) + 3 * per_sample  # about 3 samples fit
    forced = 16
    events.clear()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, room / total), device)
    try:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(forced)]
        limit = [0]
        backed = generate_with_backoff(loaded, prompts, params, 3, limit, on_event)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    reference = generate_with_backoff(loaded, prompts, params, 3, [limit[0]], lambda *a, **k: None)
    identical = all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(backed, reference))
    record["forced_backoff"] = {"batch_size": forced, "back_offs": len(events),
                                "settled_at": limit[0], "identical_audio": identical}
    lines.append(f"  forced batch {forced} under a capped memory: {len(events)} back-off(s), "
                 f"settled at {limit[0]}; audio identical to running at that size: "
                 f"{'yes' if identical else 'NO'}")
    return lines, record


def finetune(s: Settings) -> tuple[list[str], dict]:
    import torch

    from acr.commands.finetune import adapters
    from acr.commands.finetune.checkpoints import seed_everything
    from acr.commands.finetune.codes import Item
    from acr.commands.finetune.loss import Predict, batch_loss
    from acr.commands.finetune.train import autocast_for
    from acr.core.config.loader import flag_item, load_config
    from acr.core.config.schema import FinetuneConfig
    from acr.core.models import load_for_training

    precisions = ["fp32", "bf16"] if s.device.startswith("cuda") else ["fp32"]
    rows, lines = [], [f"fine-tuning: batch {s.train_batch} x {s.train_seconds:g} s segments, "
                       f"{s.train_steps} timed steps each"]
    for strategy in s.strategies:
        for precision in precisions:
            for checkpointing in (False, True):
                cfg = load_config(FinetuneConfig, None, [
                    ("name", flag_item("bench", "-")), ("data", flag_item(".", "-")),
                    ("strategy", flag_item(strategy, "-")),
                    ("precision", flag_item(precision, "-"))])
                loaded = load_for_training(s.model, s.device)
                lm = loaded.model.lm
                seed_everything(lm, 1)
                groups = adapters.trainable_groups(lm, cfg)
                params = [p for g in groups for p in g.params]
                if checkpointing:
                    lm.transformer.checkpointing = "torch"
                optimizer = torch.optim.AdamW(params, lr=1e-5)
                autocast, dtype, scaler = autocast_for(s.device, precision)
                lm.train()
                model = Predict(lm)
                frames = int(s.train_seconds * loaded.frame_rate)
                generator = torch.Generator().manual_seed(0)
                items = [Item(torch.randint(0, lm.card, (lm.num_codebooks, frames),
                                            generator=generator), frames, f"caption {i}")
                         for i in range(s.train_batch)]

                def step() -> int:
                    optimizer.zero_grad(set_to_none=True)
                    loss, tokens = batch_loss(model, items, s.device, autocast)
                    (scaler.scale(loss) if scaler else loss).backward()
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    return tokens

                row = {"strategy": strategy, "precision": dtype,
                       "activation_checkpointing": checkpointing,
                       "trainable_parameters": sum(p.numel() for p in params)}
                what = (f"  {strategy:11} {dtype:8} checkpointing "
                        f"{'on ' if checkpointing else 'off'}:")
                try:
                    step()  # warm-up (allocates the optimizer state)
                    base = reset_peak(s.device)
                    tokens, seconds = timed(s.device,
                                            lambda: sum(step() for _ in range(s.train_steps)))
                except Exception as exc:
                    if not is_oom(exc):
                        raise
                    rows.append(row | {"out_of_memory": True})
                    lines.append(f"{what} out of memory")
                else:
                    top = peak(s.device)
                    row |= {"tokens_per_s": tokens / seconds,
                            "seconds_per_step": seconds / s.train_steps,
                            "peak_gb": None if top is None else top / 1e9,
                            "steady_gb": None if base is None else base / 1e9}
                    rows.append(row)
                    lines.append(f"{what} {row['tokens_per_s']:10.0f} tokens/s"
                                 + (f", peak {row['peak_gb']:.1f} GB" if top is not None else ""))
                del model, lm, loaded, optimizer, items, params, groups
                if s.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return lines, {"batch": s.train_batch, "segment_seconds": s.train_seconds, "rows": rows}


RUNNERS = {"grid": grid, "rtf": rtf, "memory": memory, "finetune": finetune}


# ----------------------------------------------------------------------------------------------
# records


def device_label(device: str) -> str:
    from acr.core.models import device_name

    if device.startswith("cuda"):
        import torch

        memory = torch.cuda.get_device_properties(torch.device(device)).total_memory
        return f"{device_name(device)} ({memory / 2**30:.0f} GiB)"
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def append_results(path: Path, heading: str, command: str, lines: list[str],
                   json_path: Path) -> None:
    """Append one dated section to RESULTS.md (created with its title when missing)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = [f"## {heading}", "", f"`{command}`; JSON: `{json_path}`", "", "```", *lines, "```"]
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="default random-musicgen-small (tiny-musicgen with --quick)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run with tiny sizes: checks the paths, measures nothing")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the JSON goes (default benchmarks/results/gpu-<time>.json)")
    parser.add_argument("--results", type=Path, default=None,
                        help="RESULTS.md to append to (default benchmarks/RESULTS.md; a --quick "
                        "run appends only where this is given)")
    args = parser.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; use {', '.join(SECTIONS)}")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu.py: skipped: no CUDA GPU here (torch "
              f"{torch.__version__} sees none), nothing measured or written. On a GPU machine "
              "run `python benchmarks/gpu.py`; here `--device cpu --quick` smoke-tests the "
              "paths.", file=sys.stderr)
        return 0
    if not args.device.startswith("cuda") and not args.quick:
        parser.error("without CUDA only the smoke run exists: add --quick (CPU figures of the "
                     "real architectures would say nothing about a GPU)")
    model = args.model or ("tiny-musicgen" if args.quick else "random-musicgen-small")
    from acr.core.models import resolve_device

    device = resolve_device(args.device)
    settings = Settings.smoke(model, device) if args.quick else Settings(model, device, False)
    now = datetime.now(timezone.utc)
    label = device_label(settings.device)
    lines = [f"{model} on {label}; torch {torch.__version__}"
             + ("; SMOKE RUN (--quick): the figures mean nothing" if args.quick else "")]
    record: dict = {"date": now.isoformat(timespec="seconds"), "device": label,
                    "model": model, "quick": args.quick, "torch": torch.__version__,
                    "sections": {}}
    for name in sections:
        started = time.perf_counter()
        section_lines, record["sections"][name] = RUNNERS[name](settings)
        section_lines[0] += f"  [{time.perf_counter() - started:.0f} s]"
        lines += section_lines
        for line in section_lines:
            print(line, flush=True)

    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    json_path = (args.json or HERE / "results" / f"gpu-{stamp}.json").resolve()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {json_path}")
    results = args.results or (None if args.quick else HERE / "RESULTS.md")
    if results is not None:
        command = "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
        heading = f"{now:%Y-%m-%d %H:%M} UTC, {label}" + (" (smoke run)" if args.quick else "")
        shown = json_path.relative_to(HERE.parent) if json_path.is_relative_to(HERE.parent) \
            else json_path
        append_results(results, heading, command.strip(), lines, shown)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

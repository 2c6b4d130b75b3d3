"""The `acr finetune` recipe, top to bottom: setup (dataset, model, codes, strategy, optimiser),
the epoch loop (train, validate, checkpoint, sample, stop early), cleanup (the best weights,
merged, written as an AudioCraft release folder; history plot; summary).

The loss is AudioCraft's MusicGen solver loss: `lm.compute_predictions` on the codes with the
captions as ConditioningAttributes (so classifier-free-guidance and attribute dropout apply in
train mode), cross-entropy per codebook over valid positions, averaged over codebooks.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from acr import console
from acr.config import FinetuneConfig, GenerationParams, dump_yaml, to_dict
from acr.errors import UsageError
from acr.finetune import adapters, codes as code_cache, data
from acr.finetune.codes import Item

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "lr", "tokens_per_s", "seconds"]
CPU_BATCH_SIZE = 4


def codebook_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Cross-entropy per codebook over the valid positions, averaged over codebooks
    (MusicGenSolver._compute_cross_entropy). logits [B, K, T, card]; targets, mask [B, K, T]."""
    K = targets.shape[1]
    total = torch.zeros([], device=targets.device)
    per_codebook = []
    for k in range(K):
        valid = mask[:, k].reshape(-1)
        ce = nn.functional.cross_entropy(logits[:, k].reshape(-1, logits.shape[-1])[valid],
                                         targets[:, k].reshape(-1)[valid])
        total = total + ce
        per_codebook.append(ce.detach())
    return total / K, per_codebook


class Predict(nn.Module):
    """lm.compute_predictions as a forward(), so DistributedDataParallel sees the call."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, codes: torch.Tensor, captions: list[str]):
        from audiocraft.modules.conditioners import ConditioningAttributes

        conditions = [ConditioningAttributes(text={"description": c}) for c in captions]
        output = self.lm.compute_predictions(codes, conditions)
        return output.logits, output.mask


def batch_loss(model: nn.Module, items: list[Item], device: str, autocast) -> tuple:
    """(loss, valid tokens) of one batch of Items."""
    codes = torch.stack([i.codes for i in items]).to(device)
    steps = torch.arange(codes.shape[-1], device=device)
    padding = (steps[None, :] < torch.tensor([i.valid for i in items], device=device)[:, None])
    with autocast():
        logits, mask = model(codes, [i.caption for i in items])
    mask = mask & padding[:, None, :]
    loss, _ = codebook_cross_entropy(logits.float(), codes, mask)
    return loss, int(mask.sum())


# ----------------------------------------------------------------------------------------------
# Randomness that must survive a resume


def dropout_generators(lm: nn.Module) -> list[torch.Generator]:
    return [m.rng for m in lm.modules() if isinstance(getattr(m, "rng", None), torch.Generator)]


def rng_state(lm: nn.Module) -> dict:
    state = {"torch": torch.random.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state(),
             "dropout": [g.get_state() for g in dropout_generators(lm)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(lm: nn.Module, state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    for generator, saved in zip(dropout_generators(lm), state["dropout"]):
        generator.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(lm: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    for index, generator in enumerate(dropout_generators(lm)):
        generator.manual_seed(seed + 1 + index)


# ----------------------------------------------------------------------------------------------
# Setup helpers


def schedule(warmup: int, total: int):
    """Linear warm-up, then cosine decay to 0 (a LambdaLR factor of the step)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def autocast_for(device: str, precision: str):
    """(autocast context factory, dtype name, GradScaler or None)."""
    from contextlib import nullcontext

    if not device.startswith("cuda") or precision == "fp32":
        return nullcontext, "fp32", None
    dtype = torch.bfloat16 if precision == "bf16" or (
        precision == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), str(dtype).split(".")[-1], scaler


def auto_batch_size(loaded, frames_per_segment: int, trainable_share: float) -> int:
    """Segments per micro-batch from free device memory and model size (4 on the CPU)."""
    if not loaded.device.startswith("cuda"):
        return CPU_BATCH_SIZE
    lm = loaded.model.lm
    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    params = sum(p.numel() for p in lm.parameters())
    optimizer_bytes = params * 4 * (1 + 3 * trainable_share)  # weights, grads + Adam moments
    layers, dim = len(lm.transformer.layers), lm.dim
    tokens = frames_per_segment + lm.num_codebooks
    per_sample = tokens * (layers * dim * 2 * 24 + lm.card * lm.num_codebooks * 4 * 3)
    room = 0.7 * free - optimizer_bytes
    return max(1, min(64, int(room // max(per_sample, 1))))


# ----------------------------------------------------------------------------------------------
# The recipe


def run_finetune(cfg: FinetuneConfig | None, out: Path | None = None, resume: Path | None = None,
                 argv: list[str] | None = None) -> Path:
    from acr.experiment import init_dist, leave_dist, rank_device, share_from_main
    from acr.models import acr_home, device_name, load_for_training, resolve_device
    from acr.runs import Run, begin_run, open_run, resume_config, write_atomic, write_json

    dist_info = init_dist()
    # ---- setup: everything that can be wrong is found before the run folder is written
    resumed = open_run(resume, "finetune") if resume is not None else None
    if resumed is not None:
        cfg = resume_config(resumed.dir, FinetuneConfig, cfg)
    assert cfg is not None
    scanned = data.scan(Path(cfg.data))
    device = resolve_device(rank_device(cfg.device, dist_info))
    loaded = load_for_training(cfg.model, device)
    lm = loaded.model.lm
    seconds = cfg.segment_duration or loaded.max_duration
    if seconds > loaded.max_duration:
        raise UsageError(f"segment_duration: {seconds:g} s is longer than the model's window "
                         f"of {loaded.max_duration:g} s; use at most that")
    train_files, valid_files = data.split(scanned.files, cfg.valid_split, cfg.seed)
    train_segments = code_cache.segment_list(train_files, seconds)
    valid_segments = code_cache.segment_list(valid_files, seconds)
    frames_per_segment = data.frames(seconds, loaded.frame_rate)
    cfg = dataclasses.replace(cfg, segment_duration=float(seconds))
    if dist_info.main:
        for line in data.describe(scanned, train_segments, valid_segments, len(train_files),
                                  len(valid_files)):
            console.info(line)
    seed_everything(lm, cfg.seed)  # first: LoRA's initialisation draws from the seeded RNG
    groups = adapters.trainable_groups(lm, cfg)
    n_trainable = sum(p.numel() for g in groups for p in g.params)
    n_total = sum(p.numel() for p in lm.parameters())
    if cfg.activation_checkpointing:
        lm.transformer.checkpointing = "torch"
    lock = None
    if dist_info.main:
        run, lock = begin_run("finetune", cfg.name, dump_yaml(to_dict(cfg)), cfg.seed, device,
                              device_name(device), out, argv, resumed)
        batch_size = run.meta().get("batch_size") or (
            cfg.batch_size if cfg.batch_size != "auto"
            else auto_batch_size(loaded, frames_per_segment, n_trainable / max(n_total, 1)))
        run.update_meta(batch_size=batch_size, world_size=dist_info.world,
                        trainable_parameters=n_trainable, total_parameters=n_total)
        shared = (str(run.dir), batch_size)
    else:
        shared = None
    run_dir_text, batch_size = share_from_main(dist_info, shared)
    run = Run(Path(run_dir_text))
    if dist_info.main:
        console.info(f"run folder: {run.dir}")
        console.info(f"{cfg.strategy}: {n_trainable:,} of {n_total:,} parameters train; "
                     f"batch {batch_size} x {cfg.grad_accum} accumulation on {device}")

    with run.marked_on_error(dist_info.main):
        # codes: encoded once, cached on disk
        files = train_files + valid_files
        with console.progress("encoding", len(files)) as update:
            cache, encoded = code_cache.cached_codes(loaded, files, seconds,
                                                     acr_home() / "cache" / "codes", update)
        if dist_info.main:
            run.event("codes.ready", files=len(files), encoded=encoded,
                      cached=len(files) - encoded)
        train_items = [item for f in train_files for item in cache[f.rel]]
        valid_items = [item for f in valid_files for item in cache[f.rel]]

        # model, optimiser, schedule
        lm.train()
        model: nn.Module = Predict(lm)
        if dist_info.world > 1:
            model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        optimizer = torch.optim.AdamW(
            [{"params": g.params, "lr": cfg.lr * g.lr_factor} for g in groups],
            lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
        steps_per_epoch = max(1, len(train_items) // (batch_size * dist_info.world)
                              // cfg.grad_accum)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, schedule(int(cfg.warmup_ratio * total_steps), total_steps))
        autocast, precision, scaler = autocast_for(device, cfg.precision)
        state = {"epoch": 0, "history": [], "best": math.inf, "bad_epochs": 0}
        if resume is not None and (run.dir / "checkpoints" / "last.pt").is_file():
            state = load_checkpoint(run.dir / "checkpoints" / "last.pt", lm, optimizer,
                                    scheduler, scaler)
        if dist_info.main:
            run.update_meta(precision=precision, steps_per_epoch=steps_per_epoch)
        prompts = cfg.sample_prompts or list(dict.fromkeys(
            f.caption for f in valid_files + train_files))[:3]

        # ---- the loop
        while state["epoch"] < cfg.epochs and not stopped(state, cfg):
            epoch = state["epoch"]
            if cfg.strategy == "progressive":
                adapters.set_stage(groups, adapters.stage_at(epoch, cfg.epochs,
                                                             cfg.progressive.stages))
            started = time.perf_counter()
            train_loss, tokens = train_epoch(model, lm, train_items, optimizer, scheduler, scaler,
                                             autocast, cfg, batch_size, epoch, device, dist_info)
            valid_loss = evaluate(model, lm, valid_items, batch_size, device, autocast, dist_info)
            elapsed = time.perf_counter() - started
            row = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss,
                   "lr": optimizer.param_groups[0]["lr"], "tokens_per_s": tokens / elapsed,
                   "seconds": elapsed}
            state["history"].append(row)
            score = valid_loss if math.isfinite(valid_loss) else train_loss
            improved = score < state["best"]
            state["best"] = min(state["best"], score)
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
            state["epoch"] = epoch + 1
            if dist_info.main:
                console.info(f"epoch {epoch + 1}/{cfg.epochs}: train {train_loss:.4f}, valid "
                             f"{valid_loss:.4f}, lr {row['lr']:.2e}, "
                             f"{row['tokens_per_s']:.0f} tokens/s"
                             + (" (best)" if improved else ""))
                if improved:
                    save_trainable(lm, run.dir / "checkpoints" / "best.pt")
                if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                    write_samples(loaded, prompts, cfg, run.dir / "samples" / f"epoch-{epoch + 1:03d}")
                    lm.train()
                save_checkpoint(run.dir / "checkpoints" / "last.pt", lm, optimizer, scheduler,
                                scaler, state)
                write_atomic(run.dir / "history.csv", history_csv(state["history"]))
                run.event("epoch.end", **{k: row[k] for k in HISTORY_COLUMNS})

    # ---- cleanup: best weights, merged, as a release folder; plot; summary
    if dist_info.main:
        best = run.dir / "checkpoints" / "best.pt"
        if best.is_file():
            lm.load_state_dict(torch.load(best, map_location=device, weights_only=True),
                               strict=False)
        merged = adapters.merge_lora(lm)
        export_model(loaded, lm, run.dir / "model")
        plot_history(state["history"], run.dir / "plots" / "loss.png")
        history = state["history"]
        best_row = min(history, key=lambda r: r["valid_loss"] if math.isfinite(r["valid_loss"])
                       else r["train_loss"])
        summary = {"epochs_run": len(history), "stopped_early": len(history) < cfg.epochs,
                   "best_epoch": best_row["epoch"], "best_valid_loss": best_row["valid_loss"],
                   "first_valid_loss": history[0]["valid_loss"],
                   "final_train_loss": history[-1]["train_loss"],
                   "trainable_parameters": n_trainable, "merged_adapters": merged,
                   "model": str(run.dir / "model")}
        write_json(run.dir / "summary.json", summary)
        run.finish("completed", **{k: summary[k] for k in
                                   ("epochs_run", "best_epoch", "best_valid_loss")})
        console.table("fine-tune", ["epochs", "best epoch", "valid loss (first → best)",
                                    "train loss (last)"],
                      [[str(len(history)), str(best_row["epoch"]),
                        f"{history[0]['valid_loss']:.4f} → {best_row['valid_loss']:.4f}",
                        f"{history[-1]['train_loss']:.4f}"]])
    if lock is not None:
        lock.close()
    leave_dist(dist_info)
    return run.dir


def stopped(state: dict, cfg: FinetuneConfig) -> bool:
    return bool(cfg.patience) and state["bad_epochs"] >= cfg.patience


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of an epoch: a permutation seeded by (seed, epoch), so a resumed run
    visits the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_epoch(model, lm, items, optimizer, scheduler, scaler, autocast, cfg, batch_size,
                epoch, device, dist_info) -> tuple[float, int]:
    model.train()
    order = epoch_order(len(items), cfg.seed, epoch)
    per_step = batch_size * dist_info.world * cfg.grad_accum
    steps = max(1, len(items) // per_step)
    losses, tokens = [], 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum):
            start = (step * cfg.grad_accum + micro) * batch_size * dist_info.world \
                + dist_info.rank * batch_size
            batch = [items[i] for i in order[start:start + batch_size]] or \
                [items[order[0]]]  # fewer segments than a batch: train on what there is
            loss, count = batch_loss(model, batch, device, autocast)
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            losses.append(float(loss.detach()))
            tokens += count
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                           cfg.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
    return _mean_over_ranks(losses, dist_info), tokens * dist_info.world


@torch.no_grad()
def evaluate(model, lm, items, batch_size, device, autocast, dist_info) -> float:
    """Mean validation loss over this rank's share of the valid segments (NaN without any),
    in eval mode like AudioCraft's valid stage: no dropout of any kind."""
    if not items:
        return float("nan")
    model.eval()
    mine = items[dist_info.rank::dist_info.world]
    losses = []
    for start in range(0, len(mine), batch_size):
        loss, _ = batch_loss(model, mine[start:start + batch_size], device, autocast)
        losses.append(float(loss))
    model.train()
    return _mean_over_ranks(losses, dist_info)


def _mean_over_ranks(values: list[float], dist_info) -> float:
    total, count = float(sum(values)), float(len(values))
    if dist_info.world > 1:
        import torch.distributed as dist

        both = torch.tensor([total, count], dtype=torch.float64)
        dist.all_reduce(both)
        total, count = float(both[0]), float(both[1])
    return total / count if count else float("nan")


# ----------------------------------------------------------------------------------------------
# Checkpoints, samples, export


def trainable_state(lm: nn.Module) -> dict:
    """Everything that training may have changed: trainable parameters (and adapters)."""
    return {name: p.detach().to("cpu").clone() for name, p in lm.named_parameters()
            if p.requires_grad or name.endswith((".A", ".B"))}


def save_trainable(lm: nn.Module, path: Path) -> None:
    from acr.atomic import replacing

    with replacing(path) as tmp:
        torch.save(trainable_state(lm), tmp)


def save_checkpoint(path: Path, lm, optimizer, scheduler, scaler, state: dict) -> None:
    from acr.atomic import replacing

    with replacing(path) as tmp:
        torch.save({"weights": trainable_state(lm), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler else None,
                    "state": state, "rng": rng_state(lm)}, tmp)


def load_checkpoint(path: Path, lm, optimizer, scheduler, scaler) -> dict:
    # our own file (optimizer state holds plain Python values): not a shared release checkpoint
    saved = torch.load(path, map_location="cpu", weights_only=False)
    lm.load_state_dict(saved["weights"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(lm, saved["rng"])
    return saved["state"]


def write_samples(loaded, prompts: list[str], cfg: FinetuneConfig, folder: Path) -> None:
    """Generate the fixed prompts with a fixed seed, without disturbing the training RNG."""
    from acr.generate import generate_batch, resolve_params, slug, write_sample

    params = resolve_params(GenerationParams(duration=cfg.sample_duration), loaded)
    loaded.model.lm.eval()  # the caller puts it back in train mode
    with torch.random.fork_rng(devices=[]):
        state = [g.get_state() for g in dropout_generators(loaded.model.lm)]
        wav = generate_batch(loaded, prompts, params, cfg.seed)
        for g, saved in zip(dropout_generators(loaded.model.lm), state):
            g.set_state(saved)
    for index, (prompt, clip) in enumerate(zip(prompts, wav)):
        name = f"{index}-{slug(prompt)}"
        write_sample(folder / f"{name}.wav", clip, loaded.sample_rate,
                     {"id": name, "prompt": prompt, "seed": cfg.seed,
                      "parameters": to_dict(params)})


def export_model(loaded, lm: nn.Module, folder: Path) -> None:
    """The fine-tuned LM (adapters merged) in AudioCraft's release layout, beside the base
    model's compression checkpoint; tensors keep the base checkpoint's dtypes."""
    import shutil
    import tempfile

    from audiocraft.models import loaders

    base = loaders.load_lm_model_ckpt(loaded.spec.source)
    compression = loaders.load_compression_model_ckpt(loaded.spec.source)
    dtypes = {k: v.dtype for k, v in base["best_state"].items() if torch.is_tensor(v)}
    state = {k: v.detach().to("cpu", dtypes.get(k, v.dtype)) for k, v in lm.state_dict().items()}
    missing = set(base["best_state"]) - set(state)
    if missing:
        raise RuntimeError(f"export: the fine-tuned LM lacks {sorted(missing)[:3]}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.parent))
    try:
        torch.save({**base, "best_state": state}, tmp / "state_dict.bin")
        torch.save(compression, tmp / "compression_state_dict.bin")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def plot_history(history: list[dict], path: Path) -> None:
    from acr.analysis.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    if any(math.isfinite(r["valid_loss"]) for r in history):
        ax.plot(epochs, [r["valid_loss"] for r in history], marker="o", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (mean over codebooks)")
    ax.legend()
    ax.set_title("fine-tuning loss", fontsize=9)
    _save(fig, path)

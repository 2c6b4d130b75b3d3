"""The `acr finetune` recipe, top to bottom: setup (dataset, model, codes, strategy, optimiser),
the epoch loop (train, validate, checkpoint, sample, stop early), cleanup (the best weights,
merged, written as an AudioCraft release folder; history plot; summary). The loss is in
loss.py, checkpoints and random states in checkpoints.py, what is written at the end in
outputs.py.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from acr.commands.finetune import adapters, codes as code_cache, data
from acr.commands.finetune.checkpoints import (read_checkpoint, restore_checkpoint,
                                               save_checkpoint, save_trainable, seed_everything)
from acr.commands.finetune.loss import Predict, batch_loss
from acr.commands.finetune.outputs import (HISTORY_COLUMNS, export_model, history_csv,
                                           plot_history, write_samples)
from acr.core import console
from acr.core.config.loader import dump_yaml, load_config, to_dict
from acr.core.config.schema import FinetuneConfig
from acr.core.distributed import init_dist, leave_dist, rank_device, same_on_all_ranks
from acr.core.errors import UsageError
from acr.core.memory import training_batch_size
from acr.core.models import acr_home, device_name, load_for_training, resolve_device
from acr.core.runs import begin_shared_run, open_run, resume_config, write_atomic, write_json
from acr.core.tracking import Clip, open_trackers


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




def run_finetune(cfg: FinetuneConfig | None, out: Path | None = None, resume: Path | None = None,
                 argv: list[str] | None = None) -> Path:
    dist_info = init_dist()
    # ---- setup: everything that can be wrong is found before the run folder is written
    resumed = open_run(resume, "finetune") if resume is not None else None
    checkpoint = None
    if resumed is not None:
        recorded_epochs = load_config(FinetuneConfig, resumed.dir / "config.yaml").epochs
        cfg = resume_config(resumed.dir, FinetuneConfig, cfg)
        checkpoint = resumed_checkpoint(resumed.dir, cfg, recorded_epochs)
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
    names = adapters.trained_names(lm, groups)
    n_trainable = sum(p.numel() for g in groups for p in g.params)
    n_total = sum(p.numel() for p in lm.parameters())
    if cfg.activation_checkpointing:
        lm.transformer.checkpointing = "torch"
    # codes: encoded once, cached on disk (read before the run folder: a cache entry that is
    # not a safe checkpoint is bad input)
    files = train_files + valid_files
    with console.progress("encoding", len(files)) as update:
        cache, encoded = code_cache.cached_codes(loaded, files, seconds,
                                                 acr_home() / "cache" / "codes", update)
    train_items = [item for f in train_files for item in cache[f.rel]]
    valid_items = [item for f in valid_files for item in cache[f.rel]]

    run, batch_size, lock = begin_shared_run(
        dist_info, "finetune", cfg.name, dump_yaml(to_dict(cfg)), cfg.seed, device,
        device_name(device), out, argv, resumed,
        lambda: cfg.batch_size if cfg.batch_size != "auto" else
        training_batch_size(loaded, frames_per_segment, n_trainable / max(n_total, 1)),
        trainable_parameters=n_trainable, total_parameters=n_total,
        run_name=cfg.name, models=[cfg.model], planned_epochs=cfg.epochs)  # (for acr runs)
    if dist_info.main:
        console.info(f"run folder: {run.dir}")
        console.info(f"{cfg.strategy}: {adapters.count_training(groups, 0):,} of {n_total:,} "
                     "parameters train"
                     + (f" in the first of {cfg.progressive.stages} stages ({n_trainable:,} by "
                        "the last)"
                        if cfg.strategy == "progressive" else "")
                     + f"; batch {batch_size} x {cfg.grad_accum} accumulation on {device}")

    trackers = open_trackers(run, cfg.tracking, to_dict(cfg), dist_info.main)
    with run.marked_on_error(dist_info.main, before=trackers.close):
        if dist_info.main:
            run.event("codes.ready", files=len(files), encoded=encoded,
                      cached=len(files) - encoded)

        # model, optimiser, schedule
        lm.train()
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
        if checkpoint is not None:
            state = restore_checkpoint(checkpoint, lm, optimizer, scheduler, scaler)
            # the learning rate of the next step, on this schedule (--epochs may stretch it)
            for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                           scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
            checkpoint = None
        if dist_info.main:
            run.update_meta(precision=precision, steps_per_epoch=steps_per_epoch)
        prompts = cfg.sample_prompts or list(dict.fromkeys(
            f.caption for f in valid_files + train_files))[:3]

        # ---- the loop
        model, stage = None, None
        trackers.wait_open()  # their opening done before the first step, not beside it
        loop_started = time.perf_counter()  # meta.json's wall_seconds: this process's loop
        while state["epoch"] < cfg.epochs and not stopped(state, cfg):
            epoch = state["epoch"]
            now = stage_of(state, cfg)
            if now != stage:
                stage = state["stage"] = now
                adapters.set_stage(groups, stage)
                # DDP reduces the gradients of the parameters that train when it is built
                model = wrap(lm, dist_info)
                if dist_info.main and cfg.strategy == "progressive":
                    announce_stage(run, groups, stage, cfg.progressive.stages, epoch, n_total)
            started = time.perf_counter()
            train_loss, tokens = train_epoch(model, lm, train_items, optimizer, scheduler, scaler,
                                             autocast, cfg, batch_size, epoch, device, dist_info,
                                             on_step=step_tracker(trackers))
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
                if improved:  # every weight that trains at any stage, as it is now
                    save_trainable(lm, names, run.dir / "checkpoints" / "best.pt")
                step = scheduler.last_epoch  # optimizer steps so far: the trackers' step
                trackers.scalars(step, "epoch", {f"epoch/{k}": row[k] for k in HISTORY_COLUMNS})
                if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                    folder = run.dir / "samples" / f"epoch-{epoch + 1:03d}"
                    write_samples(loaded, prompts, cfg, folder)
                    lm.train()
                    trackers.clips(step, "samples", [
                        Clip(f"samples/{index}", path, prompt) for index, (prompt, path)
                        in enumerate(zip(prompts, sorted(folder.glob("*.wav"), key=sample_order)))
                    ][:cfg.tracking.audio_clips])
                save_checkpoint(run.dir / "checkpoints" / "last.pt", lm, names, optimizer,
                                scheduler, scaler, state)
                write_atomic(run.dir / "history.csv", history_csv(state["history"]))
                run.event("epoch.end", **{k: row[k] for k in HISTORY_COLUMNS})

        if dist_info.world > 1 and not same_on_all_ranks(dist_info, weights_digest(lm, names)):
            raise RuntimeError("the ranks' weights differ after training (their gradients "
                               "were not all reduced)")
        wall = time.perf_counter() - loop_started

    # ---- cleanup: best weights, merged, as a release folder; plot; summary
    if dist_info.main:
        best = run.dir / "checkpoints" / "best.pt"
        if best.is_file():
            lm.load_state_dict(read_checkpoint_weights(best), strict=False)
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
        trackers.text(scheduler.last_epoch, "model",
                      {"model": str(Path(summary["model"]).resolve()),
                       "best_epoch": str(best_row["epoch"])})
        trackers.close()
        run.finish("completed", wall_seconds=round(wall, 3),
                   **{k: summary[k] for k in ("epochs_run", "best_epoch", "best_valid_loss")})
        console.table("fine-tune", ["epochs", "best epoch", "valid loss (first → best)",
                                    "train loss (last)"],
                      [[str(len(history)), str(best_row["epoch"]),
                        f"{history[0]['valid_loss']:.4f} → {best_row['valid_loss']:.4f}",
                        f"{history[-1]['train_loss']:.4f}"]])
    if lock is not None:
        lock.close()
    leave_dist(dist_info)
    return run.dir


def resumed_checkpoint(run_dir: Path, cfg: FinetuneConfig, recorded_epochs: int
                       ) -> dict | None:
    """The last checkpoint of a run to resume (None before the first epoch ended), read safely,
    with `cfg.epochs` checked against it; best.pt is checked too. Nothing is changed."""
    folder = run_dir / "checkpoints"
    if (folder / "best.pt").is_file():
        read_checkpoint_weights(folder / "best.pt", check_only=True)
    if not (folder / "last.pt").is_file():
        return None
    saved = read_checkpoint(folder / "last.pt")
    done = int(saved["state"]["epoch"])
    if cfg.epochs < done:
        raise UsageError(f"--epochs {cfg.epochs}: {run_dir} has already trained {done} epochs; "
                         f"give {done} or more (or leave --epochs out)")
    if cfg.epochs > recorded_epochs and stopped(saved["state"], cfg):
        raise UsageError(f"--epochs {cfg.epochs}: {run_dir} stopped early after epoch {done} "
                         f"({cfg.patience} epochs without a better validation loss), so more "
                         "epochs would not train; start a new run instead")
    return saved


def read_checkpoint_weights(path: Path, check_only: bool = False) -> dict:
    """best.pt (weights by name), read safely; `check_only` maps instead of reading them."""
    from acr.core.safe_load import load_checkpoint

    weights = load_checkpoint(path, mmap=check_only, hint="; resume only a run whose "
                              "checkpoints acr wrote, or start a new run")
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise UsageError(f"{path} is not an acr weights checkpoint (a dict of tensors); start "
                         "a new run")
    return weights


def stage_of(state: dict, cfg: FinetuneConfig) -> int:
    """The progressive stage of the next epoch (never lower than the last one: a run extended
    with --epochs keeps what it has unfrozen); 0 for the other strategies."""
    if cfg.strategy != "progressive":
        return 0
    return max(state.get("stage", 0),
               adapters.stage_at(state["epoch"], cfg.epochs, cfg.progressive.stages))


def announce_stage(run, groups: list, stage: int, stages: int, epoch: int, n_total: int
                   ) -> None:
    """Which layers a progressive stage unfreezes and how many parameters then train."""
    new = [g for g in groups if g.stage == stage]
    training = adapters.count_training(groups, stage)
    what = "; ".join(f"{g.label} (lr x{g.lr_factor:g})" for g in new) or "nothing new"
    console.info(f"stage {stage + 1}/{stages} from epoch {epoch + 1}: "
                 f"{'trains' if stage == 0 else 'unfreezes'} {what}; {training:,} of "
                 f"{n_total:,} parameters train")
    run.event("stage.start", stage=stage + 1, epoch=epoch + 1, unfreezes=[g.label for g in new],
              trainable_parameters=training)


def wrap(lm: nn.Module, dist_info) -> nn.Module:
    """The module a training step calls: Predict(lm), in DistributedDataParallel under torchrun.
    Every trainable weight takes part in each forward with the conditioners acr knows, so DDP
    need not search for unused ones (and warn that it found none)."""
    model: nn.Module = Predict(lm)
    if dist_info.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=may_leave_parameters_unused(lm))
    return model


def may_leave_parameters_unused(lm: nn.Module) -> bool:
    """Whether a forward may leave a trainable parameter without a gradient: only when a
    conditioner other than the text ones (LUT, T5), which always use their weights, trains."""
    from audiocraft.modules.conditioners import LUTConditioner, T5Conditioner

    return any(any(p.requires_grad for p in c.parameters())
               and not isinstance(c, (LUTConditioner, T5Conditioner))
               for c in lm.condition_provider.conditioners.values())


def weights_digest(lm: nn.Module, names: set[str]) -> str:
    """sha256 of the weights that train (DistributedDataParallel keeps them equal on every
    rank, bit for bit)."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(lm.named_parameters()):
        if name in names:
            data = p.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8)
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def stopped(state: dict, cfg: FinetuneConfig) -> bool:
    return bool(cfg.patience) and state["bad_epochs"] >= cfg.patience


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of an epoch: a permutation seeded by (seed, epoch), so a resumed run
    visits the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_tracker(trackers):
    """The per-step callback of train_epoch that logs to `trackers` (None when none track,
    so that the loop does no extra work)."""
    if not trackers.active:
        return None

    def on_step(step: int, values: dict) -> None:
        trackers.scalars(step, "train", {f"train/{k}": v for k, v in values.items()})
    return on_step


def sample_order(path: Path) -> int:
    """Sample files are <index>-<slug>.wav: their prompt order."""
    return int(path.name.split("-", 1)[0])


def train_epoch(model, lm, items, optimizer, scheduler, scaler, autocast, cfg, batch_size,
                epoch, device, dist_info, on_step=None) -> tuple[float, int]:
    model.train()
    order = epoch_order(len(items), cfg.seed, epoch)
    per_step = batch_size * dist_info.world * cfg.grad_accum
    steps = max(1, len(items) // per_step)
    losses, tokens = [], 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for step in range(steps):
        step_started, step_tokens = time.perf_counter(), tokens
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
        grad_norm = None
        if cfg.grad_clip:  # (the norm before clipping)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in params if p.grad is not None], cfg.grad_clip)
        elif on_step is not None:  # the norm alone, for the trackers (nothing to scale)
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params
                                                       if p.grad is not None])
        lr = optimizer.param_groups[0]["lr"]
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if on_step is not None:
            mine = losses[-cfg.grad_accum:]
            on_step(scheduler.last_epoch, {
                "loss": sum(mine) / len(mine), "lr": lr, "grad_norm": float(grad_norm),
                "tokens_per_s": (tokens - step_tokens) * dist_info.world
                / (time.perf_counter() - step_started)})
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

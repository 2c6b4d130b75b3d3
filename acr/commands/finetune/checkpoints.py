"""Training checkpoints and the randomness that must survive a resume: the trainable weights,
optimizer, schedule, scaler and every random state (torch, CUDA, Python, numpy and AudioCraft's
dropout generators).

A checkpoint holds tensors and plain values only (numpy's random state as a list of ints), so it
loads with torch's weights-only unpickler through acr.core.safe_load: a checkpoint received from
someone else cannot run code when a run is resumed."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from acr.core.atomic import replacing
from acr.core.errors import UsageError
from acr.core.safe_load import load_checkpoint as safe_load_checkpoint


def dropout_generators(lm: nn.Module) -> list[torch.Generator]:
    return [m.rng for m in lm.modules() if isinstance(getattr(m, "rng", None), torch.Generator)]


def numpy_state() -> dict:
    """numpy's legacy global RNG state as plain values (the key as a list of ints)."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {"bit_generator": name, "key": [int(k) for k in key], "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def set_numpy_state(state: dict) -> None:
    np.random.set_state((state["bit_generator"], np.array(state["key"], dtype=np.uint32),
                         state["pos"], state["has_gauss"], state["cached_gaussian"]))


def rng_state(lm: nn.Module) -> dict:
    state = {"torch": torch.random.get_rng_state(), "python": random.getstate(),
             "numpy": numpy_state(),
             "dropout": [g.get_state() for g in dropout_generators(lm)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(lm: nn.Module, state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    random.setstate(state["python"])
    set_numpy_state(state["numpy"])
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



def trainable_state(lm: nn.Module, names: set[str]) -> dict:
    """Everything that training may have changed: the parameters named in `names` (those that
    train at any stage, adapters included), whether or not they train right now."""
    return {name: p.detach().to("cpu").clone() for name, p in lm.named_parameters()
            if name in names}


def save_trainable(lm: nn.Module, names: set[str], path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(trainable_state(lm, names), tmp)


def save_checkpoint(path: Path, lm, names: set[str], optimizer, scheduler, scaler,
                    state: dict) -> None:
    with replacing(path) as tmp:
        torch.save({"weights": trainable_state(lm, names), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler else None,
                    "state": state, "rng": rng_state(lm)}, tmp)


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint, read safely (UsageError, nothing run, if it is not a safe one)."""
    saved = safe_load_checkpoint(path, hint="; resume only a run whose checkpoints acr wrote, "
                                 "or start a new run")
    missing = [k for k in ("weights", "optimizer", "scheduler", "state", "rng")
               if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise UsageError(f"{path} is not an acr training checkpoint (no {', '.join(missing)}); "
                         "start a new run")
    return saved


def restore_checkpoint(saved: dict, lm, optimizer, scheduler, scaler) -> dict:
    """Put a read checkpoint back into the model, optimizer, schedule, scaler and RNGs; return
    the loop state (epoch, history, best, ...)."""
    lm.load_state_dict(saved["weights"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(lm, saved["rng"])
    return saved["state"]

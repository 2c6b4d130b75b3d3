"""Training checkpoints and the randomness that must survive a resume: the trainable weights,
optimizer, schedule, scaler and every random state (torch, CUDA, Python, numpy and AudioCraft's
dropout generators)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from acr.core.atomic import replacing


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



def trainable_state(lm: nn.Module) -> dict:
    """Everything that training may have changed: trainable parameters (and adapters)."""
    return {name: p.detach().to("cpu").clone() for name, p in lm.named_parameters()
            if p.requires_grad or name.endswith((".A", ".B"))}


def save_trainable(lm: nn.Module, path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(trainable_state(lm), tmp)


def save_checkpoint(path: Path, lm, optimizer, scheduler, scaler, state: dict) -> None:
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

"""What trains: the four strategies, and LoRA as a weight parametrisation.

LoRA here is `torch.nn.utils.parametrize`: the adapted weight reads W + (alpha / r) B A wherever
the model uses it, which covers the fused q/k/v `in_proj_weight` Parameter of AudioCraft's
attention as well as `nn.Linear` weights (peft's LoRA wraps nn.Linear modules only). Merging is
removing the parametrisation with its value kept, so the written model is plain AudioCraft.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize


class LoRA(nn.Module):
    """The low-rank update of one weight [out, in]: returns weight + scale * B @ A."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, dropout: float):
        super().__init__()
        out_features, in_features = weight.shape
        self.A = nn.Parameter(torch.empty(rank, in_features, device=weight.device))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = dropout

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        a = nn.functional.dropout(self.A, self.dropout, self.training) if self.dropout else self.A
        return weight + self.scale * (self.B @ a).to(weight.dtype)


def lora_targets(lm: nn.Module, targets: list[str]) -> list[tuple[nn.Module, str, str]]:
    """(module, parameter name, dotted name) of every weight the named targets cover."""
    found = []
    for layer_name, layer in lm.transformer.layers.named_children():
        for name, module in layer.named_modules():
            prefix = f"transformer.layers.{layer_name}.{name}".rstrip(".")
            if "in_proj" in targets and isinstance(getattr(module, "in_proj_weight", None),
                                                    nn.Parameter):
                found.append((module, "in_proj_weight", f"{prefix}.in_proj_weight"))
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, nn.Linear) and leaf in targets:
                found.append((module, "weight", f"{prefix}.weight"))
    if "heads" in targets:
        found += [(head, "weight", f"linears.{k}.weight") for k, head in enumerate(lm.linears)]
    return found


def add_lora(lm: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float
             ) -> list[str]:
    """Freeze the LM and give every target weight an adapter; returns the adapted names."""
    for p in lm.parameters():
        p.requires_grad_(False)
    names = []
    for module, attribute, dotted in lora_targets(lm, targets):
        weight = getattr(module, attribute)
        parametrize.register_parametrization(module, attribute,
                                             LoRA(weight, rank, alpha, dropout))
        names.append(dotted)
    return names


def merge_lora(lm: nn.Module) -> int:
    """Fold every adapter into its weight (W + scale B A) and drop the parametrisation."""
    merged = 0
    for module in list(lm.modules()):
        if parametrize.is_parametrized(module):
            for attribute in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, attribute, leave_parametrized=True)
                merged += 1
    return merged


@dataclass
class Group:
    """Parameters unfrozen together (progressive stages) with their learning-rate factor."""

    params: list[nn.Parameter]
    lr_factor: float
    stage: int  # the first stage at which it trains
    label: str = ""  # what it holds, e.g. "layer 1, output heads, out_norm"


def layer_blocks(lm: nn.Module, stages: int) -> list[tuple[str, list[nn.Module]]]:
    """(label, modules) in unfreezing order: [heads + out_norm + top layers], [next layers],
    ..., with the embeddings and the conditioner's trainable parts in the last block."""
    layers = list(lm.transformer.layers)
    per_stage = max(1, math.ceil(len(layers) / stages))
    blocks: list[tuple[str, list[nn.Module]]] = []
    top = len(layers)
    for stage in range(stages):
        bottom = max(0, top - per_stage) if stage < stages - 1 else 0
        block = list(layers[bottom:top])
        names = [layer_range(bottom, top)] if top > bottom else []
        if stage == 0:
            block += [lm.linears] + ([lm.out_norm] if lm.out_norm is not None else [])
            names += ["output heads"] + (["out_norm"] if lm.out_norm is not None else [])
        if stage == stages - 1:
            block += [lm.emb, lm.condition_provider, lm.fuser]
            names += ["embeddings", "conditioner", "fuser"]
        blocks.append((", ".join(names), block))
        top = bottom
    return blocks


def layer_range(bottom: int, top: int) -> str:
    """"layer 3" or "layers 2-5" (0-based, inclusive) for layers[bottom:top]."""
    return f"layer {bottom}" if top - bottom == 1 else f"layers {bottom}-{top - 1}"


def trainable_groups(lm: nn.Module, cfg) -> list[Group]:
    """Apply `cfg.strategy` to the LM (freezing, adapters) and return its parameter groups."""
    strategy = cfg.strategy
    if strategy == "lora":
        add_lora(lm, cfg.lora.targets, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
        params = [p for n, p in lm.named_parameters() if n.endswith((".A", ".B"))]
        for p in params:
            p.requires_grad_(True)
        return [Group(params, 1.0, 0)]
    for p in lm.parameters():
        p.requires_grad_(False)
    if strategy == "full":
        groups = [Group(list(lm.parameters()), 1.0, 0)]
    elif strategy == "last_layers":
        layers = list(lm.transformer.layers)
        chosen = layers[-min(cfg.n_layers, len(layers)):]
        modules = chosen + [lm.linears] + ([lm.out_norm] if lm.out_norm is not None else [])
        groups = [Group([p for m in modules for p in m.parameters()], 1.0, 0)]
    else:  # progressive
        blocks = layer_blocks(lm, cfg.progressive.stages)
        groups = [Group([p for m in block for p in m.parameters()],
                        cfg.progressive.lr_decay ** stage, stage, label)
                  for stage, (label, block) in enumerate(blocks)]
    seen: set[int] = set()
    for group in groups:  # a parameter belongs to the first group that names it
        group.params = [p for p in group.params if id(p) not in seen and not seen.add(id(p))]
    groups = [g for g in groups if g.params]
    set_stage(groups, 0)
    return groups


def stage_at(epoch: int, epochs: int, stages: int) -> int:
    """The progressive stage of a (0-based) epoch: stages spread evenly over the epochs."""
    return min(stages - 1, epoch * stages // max(epochs, 1))


def set_stage(groups: list[Group], stage: int) -> None:
    for group in groups:
        for p in group.params:
            p.requires_grad_(group.stage <= stage)


def trained_names(lm: nn.Module, groups: list[Group]) -> set[str]:
    """Names of every parameter that trains at some stage (what training may change)."""
    ids = {id(p) for g in groups for p in g.params}
    return {name for name, p in lm.named_parameters() if id(p) in ids}


def count_training(groups: list[Group], stage: int) -> int:
    """Parameters that train at `stage`."""
    return sum(p.numel() for g in groups if g.stage <= stage for p in g.params)

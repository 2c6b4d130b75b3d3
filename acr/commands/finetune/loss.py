"""The training loss, AudioCraft's MusicGen solver loss: `lm.compute_predictions` on the codes
with the captions as ConditioningAttributes (so classifier-free-guidance and attribute dropout
apply in train mode), cross-entropy per codebook over valid positions, averaged over codebooks.
"""
from __future__ import annotations

import torch
from torch import nn

from acr.commands.finetune.codes import Item


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

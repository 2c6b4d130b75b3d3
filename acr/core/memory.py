"""Memory estimates and automatic batch sizes: generation (experiment, doctor) and training
(finetune). On the CPU and MPS fixed sizes are used; on CUDA the free memory decides."""
from __future__ import annotations

from typing import Any

CPU_GENERATION_BATCH = 8
CPU_TRAINING_BATCH = 4
MAX_AUTO_BATCH = 64


def generation_bytes_per_sample(dim: int, layers: int, frames: int, card: int,
                                codebooks: int) -> int:
    """GPU memory one sample needs while generating `frames` token frames, doubled for
    classifier-free guidance: fp16 key/value caches of every layer, activations, and logits
    (card x codebooks), with generous slack. Shared by auto batch sizes and `acr doctor`."""
    tokens = frames + codebooks
    return 2 * (layers * 2 * tokens * dim * 2 + 8 * tokens * dim * 2 + card * codebooks * 4 * 4)


def generation_batch_size(loaded: Any, samples_per_group: int) -> int:
    """A generation batch size for a LoadedModel from free device memory (a fixed default on
    the CPU and MPS), never above the samples that share a parameter set."""
    if not loaded.device.startswith("cuda"):
        return min(CPU_GENERATION_BATCH, samples_per_group)
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    lm = loaded.model.lm
    per_sample = generation_bytes_per_sample(
        lm.dim, len(lm.transformer.layers), int(loaded.max_duration * loaded.frame_rate),
        lm.card, lm.num_codebooks)
    return max(1, min(MAX_AUTO_BATCH, samples_per_group, int(0.6 * free / per_sample)))


def training_batch_size(loaded: Any, frames_per_segment: int, trainable_share: float) -> int:
    """Segments per micro-batch from free device memory and model size (fixed on the CPU)."""
    if not loaded.device.startswith("cuda"):
        return CPU_TRAINING_BATCH
    import torch

    lm = loaded.model.lm
    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    params = sum(p.numel() for p in lm.parameters())
    optimizer_bytes = params * 4 * (1 + 3 * trainable_share)  # weights, grads + Adam moments
    layers, dim = len(lm.transformer.layers), lm.dim
    tokens = frames_per_segment + lm.num_codebooks
    per_sample = tokens * (layers * dim * 2 * 24 + lm.card * lm.num_codebooks * 4 * 3)
    room = 0.7 * free - optimizer_bytes
    return max(1, min(MAX_AUTO_BATCH, int(room // max(per_sample, 1))))

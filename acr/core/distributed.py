"""torchrun helpers shared by experiment and finetune: join the process group, share rank 0's
values, pick each rank's device, wait for everyone, leave. With WORLD_SIZE unset or 1 every
helper is a no-op, so single-process runs never touch torch.distributed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_as_main() -> bool:
    """Whether this process is rank 0 of torchrun's launch, or not launched by torchrun (read
    from the environment, before any process group: the CLI asks it without importing torch)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_dist() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on the CPU, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def share_from_main(dist_info: Dist, value: Any) -> Any:
    """Rank 0's `value` on every rank (an exception on rank 0 reaches all of them)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_from_all(dist_info: Dist, value: Any) -> list:
    """Every rank's `value`, in rank order, on every rank (e.g. counts for rank 0's summary)."""
    if dist_info.world == 1:
        return [value]
    import torch.distributed as dist

    values: list = [None] * dist_info.world
    dist.all_gather_object(values, value)
    return values


def same_on_all_ranks(dist_info: Dist, value: Any) -> bool:
    """Whether every rank holds the same `value` (e.g. a digest of its weights)."""
    if dist_info.world == 1:
        return True
    import torch.distributed as dist

    values: list[Any] = [None] * dist_info.world
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def wait_for_all(dist_info: Dist) -> None:
    """Wait for every rank (e.g. to finish its batches before rank 0 writes the manifest)."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def leave_dist(dist_info: Dist) -> None:
    """Wait for every rank (rank 0 may still be writing), then leave the process group: a rank
    that tears down while another still works can make gloo abort."""
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def rank_device(device: str, dist_info: Dist) -> str:
    """The device of this rank: its own GPU (cuda:LOCAL_RANK) when several ranks share a node."""
    if dist_info.world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{dist_info.local_rank}"
    return device

"""Where training runs: the process's rank under torchrun, its device, and rank 0's word.

`DistInfo.from_env()` reads RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun; a plain
process is rank 0 of 1); `pick_device("auto")` is the local GPU when there is one;
`agree` shares rank 0's decision (e.g. "stop: the sweep pruned this trial") with every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is the local GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision, shared with every rank."""
    if info.world_size == 1 or not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())

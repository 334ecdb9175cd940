"""Several processes (``torchrun``): rank, world size and the collectives the pass uses."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """Rank and world size; ``world == 1`` means no process group."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t

    def all_reduce_host(self, t: torch.Tensor, chunk: int = 1 << 26) -> torch.Tensor:
        """Sum a host (CPU) tensor over the ranks: directly on gloo, through the GPU in chunks on NCCL."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        if dist.get_backend() == "gloo":
            dist.all_reduce(t)
            return t
        dev = torch.device("cuda", torch.cuda.current_device())
        for lo in range(0, t.numel(), chunk):
            part = t[lo : lo + chunk].to(dev)
            dist.all_reduce(part)
            t[lo : lo + chunk] = part.cpu()
        return t

    def all_gather_varlen(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``all_gather`` of 1-D tensors whose lengths differ between ranks."""
        if self.world == 1:
            return [t]
        n = torch.tensor([t.numel()], device=t.device)
        sizes = [int(x) for x in self.all_gather(n)]
        padded = torch.zeros(max(sizes), dtype=t.dtype, device=t.device)
        padded[: t.numel()] = t
        return [g[:size] for g, size in zip(self.all_gather(padded), sizes)]

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.world == 1:
            return [t]
        import torch.distributed as dist

        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous())
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

"""Data parallel training under torchrun: one process per rank, gradients averaged by DDP.

    with process_group(placement) as dist:   # gloo on CPU (nccl for CUDA tensors); no-op outside torchrun
        dist.rank, dist.world, dist.is_main
        dist.owned(n)                         # this rank's items: i % world == rank
        loss_fn = dist.wrap(modules, fn)      # fn itself in one process; else fn through DDP(modules)
        dist.sum([a, b])                      # all-reduce of a few floats (float64)
        dist.gather(obj)                      # every rank's object, in rank order
        dist.barrier()

How a global batch is shared: every rank draws the same global batch (same seed, same data order),
computes the loss SUM over the items it owns, and scales it by world / (global count). DDP averages
the gradients over the ranks, so each rank steps with the gradient of the global mean: the
single-process step, up to the order of floating-point sums. Rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable

from specdifftree.paths import torchrun_env
from specdifftree.train.examples import TokenizedSplit


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owned(self, n: int) -> list[int]:
        """The ids among range(n) this rank owns (every world-th, from its rank)."""
        return list(range(self.rank, n, self.world))

    def wrap(self, modules: dict, fn: Callable) -> Callable:
        """fn(*args) -> a scalar loss, with the gradients of `modules` averaged across ranks."""
        if self.world == 1:
            return fn
        import torch

        return torch.nn.parallel.DistributedDataParallel(_Loss(modules, fn))

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64)
        td.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        import torch.distributed as td

        out = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()

    def placement(self, placement):
        """An "auto" or "cuda" placement pinned to this rank's GPU (cuda:LOCAL_RANK) where CUDA is
        available; any other as it is."""
        if self.world == 1 or placement is None or placement.device not in ("auto", "cuda"):
            return placement
        import torch

        if not torch.cuda.is_available():
            return placement
        return replace(placement, device=f"cuda:{self.local_rank}")


def zero_loss(modules: dict):
    """A zero that depends on every parameter: a rank that owns none of a batch still joins the reduction."""
    return sum(p.sum() for m in modules.values() for p in m.parameters()) * 0.0


def _Loss(modules: dict, fn: Callable):
    import torch

    class Loss(torch.nn.Module):
        """fn as a module that owns `modules`, so that DDP sees their parameters go through forward."""

        def __init__(self):
            super().__init__()
            self.parts = torch.nn.ModuleDict(modules)

        def forward(self, *args):
            return fn(*args)

    return Loss()


@contextlib.contextmanager
def process_group(placement=None):
    """The torchrun process group for the duration of a run (Dist() outside torchrun). Backend:
    gloo, plus nccl for CUDA tensors when the placement is a CUDA device."""
    rank, world, local = torchrun_env()
    if world == 1:
        yield Dist()
        return
    import torch
    import torch.distributed as td

    dist = Dist(rank, world, local)
    cuda = torch.cuda.is_available() and (placement is None or placement.device.startswith(("auto", "cuda")))
    if cuda:
        torch.cuda.set_device(local)
    owned = not td.is_initialized()
    if owned:
        td.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    try:
        yield dist
    finally:
        if owned:
            td.destroy_process_group()


@dataclass
class Shard:
    """This rank's examples of a split (all of them in one process), and where they sit in it."""

    split: TokenizedSplit  # the examples this rank owns, in order
    ids: list[int]  # their positions in the whole split
    full: TokenizedSplit  # the whole split

    @property
    def local(self) -> dict[int, int]:
        return {i: k for k, i in enumerate(self.ids)}


def shard(split: TokenizedSplit, dist: Dist) -> Shard:
    if dist.world == 1:
        return Shard(split, list(range(len(split.examples))), split)
    ids = dist.owned(len(split.examples))
    own = TokenizedSplit([split.examples[i] for i in ids], [split.prompt_ids[i] for i in ids],
                         [split.answer_ids[i] for i in ids])
    return Shard(own, ids, split)

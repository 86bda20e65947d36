"""All-gather that keeps gradients, for losses whose negatives come from every process's batch.

Gradient scaling. Let P processes each hold a slice x_p of the global batch X = cat(x_1..x_P), and
let every process compute a loss L_p(X) on the gathered X (usually the same full-batch loss L, so
L_p = L on all ranks). Backward on rank p receives dL_p/dX. This function all-reduces (sums) that
gradient and returns the local slice:

    grad(x_p) on rank p = sum_q dL_q/dx_p

DistributedDataParallel then averages parameter gradients over the P ranks:

    (1/P) * sum_p sum_q dL_q/dx_p * dx_p/dtheta = d/dtheta [ (1/P) * sum_q L_q ]

which, when every rank computes the same L, is exactly dL/dtheta of one process computing L on the
concatenated batch. (Without the all-reduce each rank would see only its own copy of dL/dx_p and
DDP's averaging would leave 1/P of the true gradient.) If instead each rank computes a different
partial loss L_q (e.g. only its own anchors against the gathered batch), the result is the gradient
of their mean, matching DDP's usual semantics.

Slices may differ in size between ranks: sizes are exchanged first and the slices padded to the
largest before the gather.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def _world_size(group: Any = None) -> int:
    """Processes in `group` (default group), or 1 when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _AllGatherWithGrad(torch.autograd.Function):
    """forward: cat of every rank's x along dim 0; backward: sum over ranks, then the local slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        world = dist.get_world_size(group)
        local = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
        sizes = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(sizes, local, group=group)
        sizes_list = [int(s.item()) for s in sizes]
        largest = max(sizes_list)
        padded = x.new_zeros((largest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous(), group=group)
        rank = dist.get_rank(group)
        ctx.group = group
        ctx.start = sum(sizes_list[:rank])
        ctx.length = x.shape[0]
        return torch.cat([part[:n] for part, n in zip(parts, sizes_list)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=ctx.group)
        return summed[ctx.start : ctx.start + ctx.length], None


def all_gather_with_grad(x: Tensor, group: Any = None) -> Tensor:
    """Concatenate x (n_p, ...) from every process of `group` along dim 0 in rank order.

    Returns (sum_p n_p, ...). Gradients flow back to each process's own slice, summed over
    processes (see the module docstring for why this gives single-process gradients under DDP).
    Returns x itself when torch.distributed is not initialised or the group has one process.
    """
    if _world_size(group) == 1:
        return x
    return _AllGatherWithGrad.apply(x, group)

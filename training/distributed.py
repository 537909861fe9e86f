"""Data-parallel training under `torchrun` (gloo on CPU, NCCL on CUDA), kept out of the trainer's maths.

Every rank holds the whole dataset and the same networks, and draws the *global* batch indices (and the
flow-matching noise and times) from the same seeded generator, then keeps its contiguous slice
(`Cluster.shard`). Gradients of every optimiser step — policy, twin Q and IQL's V — are averaged across
ranks before clipping and Adam (`average_gradients`, called from `training.optim.step`), so the mean over
ranks of the slice losses is the global batch loss and every rank applies the same update: training at W
processes is training at 1 up to the order of float additions.

That is what `DistributedDataParallel` does for a model with one gradient bucket; it is not used as a
wrapper because the trainer calls parts of its networks (the velocity net's `condition` and `velocity`, the
twin's `q_min`, a separate V and a Polyak target), and DDP synchronises only through `forward`. The
collective is still torch.distributed's all-reduce, on the process group torchrun's rendezvous built.

Without torchrun (no `WORLD_SIZE`, or 1) nothing here does anything and a run is bit-for-bit what it was.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


class DistributedError(ValueError):
    """A torchrun launch that cannot train as asked; the message says what to change."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics, summaries and the evaluation."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of n global items (n is a multiple of the world size)."""
        if n % self.world_size:
            raise DistributedError(
                f"a global batch of {n} does not split over {self.world_size} processes; use a batch size "
                f"that is a multiple of {self.world_size}"
            )
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def block(self, n: int) -> slice:
        """This rank's contiguous block of n items for work split as evenly as possible (any n)."""
        per = -(-n // self.world_size)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))


_current = Cluster()


def current() -> Cluster:
    """The cluster `init` joined (rank 0 of 1 before, or without torchrun)."""
    return _current


def env_cluster(environ: dict[str, str] | None = None) -> Cluster:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; rank 0 of 1 when they are absent."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DistributedError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc}); launch with torchrun"
        ) from exc
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK {rank} is outside WORLD_SIZE {world}; launch with torchrun")
    return Cluster(rank, world, local)


def check_batches(cluster: Cluster, **sizes: int) -> None:
    """Refuse, in one line, batch sizes the world size does not divide (before any process group waits)."""
    world = cluster.world_size
    bad = {k: v for k, v in sizes.items() if v % world}
    if bad:
        key, size = next(iter(bad.items()))
        fix = max(world, size // world * world)
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise DistributedError(
            f"{listed} does not split over {world} processes (each rank takes an equal slice of the global "
            f"batch); use a multiple of {world}, e.g. --set {key}={fix}"
        )


def init(cluster: Cluster, device: torch.device, timeout_s: float = 1800.0) -> torch.device:
    """Join torchrun's process group (NCCL for CUDA, gloo for CPU) and return this rank's device."""
    global _current
    if not cluster.enabled:
        _current = cluster
        return device
    if device.type == "cuda":
        if cluster.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {cluster.local_rank} but {torch.cuda.device_count()} CUDA devices here; start "
                "at most one process per GPU (--nproc-per-node)"
            )
        device = torch.device("cuda", cluster.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    _current = cluster
    log.info(
        "distributed: rank %d of %d (local %d), backend %s, device %s",
        cluster.rank,
        cluster.world_size,
        cluster.local_rank,
        backend,
        device,
    )
    return device


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still reduces)."""
    global _current
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _current = Cluster()


def average_gradients(opt: torch.optim.Optimizer) -> None:
    """Average the gradients of `opt`'s parameters across ranks, as one flat all-reduce."""
    if not _current.enabled:
        return
    params = [p for group in opt.param_groups for p in group["params"] if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(_current.world_size)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def mean_across(values: list[float]) -> list[float]:
    """The mean over ranks of each value (logged losses are the global batch's, not rank 0's slice)."""
    if not _current.enabled or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return (t / _current.world_size).tolist()


def split_rows(rows: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
    """`compute(rows)` with the rows split into blocks over the ranks and the results all-gathered in
    order: the same tensor on every rank, at 1/W of the work each."""
    if not _current.enabled:
        return compute(rows)
    n = len(rows)
    per = -(-n // _current.world_size)
    mine = compute(rows[_current.block(n)])
    padded = torch.zeros((per, *mine.shape[1:]), dtype=mine.dtype, device=mine.device)
    padded[: len(mine)] = mine
    parts = [torch.empty_like(padded) for _ in range(_current.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n]


def _device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def loopback_torchrun(procs: int, *args: str) -> list[str]:
    """The command line of `torchrun` for `procs` processes on this machine, its rendezvous on a free
    loopback port (tests and benchmarks start several runs at once; a user runs plain `torchrun`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={procs}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        *args,
    ]

"""torchrun / DistributedDataParallel helpers.

`torchrun --nproc_per_node N -m samplernn_pase ... train` sets RANK,
WORLD_SIZE and LOCAL_RANK; we then join a process group (nccl on CUDA, gloo
on CPU) and every rank trains on its own shard of the utterances. Rank 0
alone writes logs, TensorBoard and checkpoints; every rank's own training
state (loader position, carried states, RNG) is gathered into them.

Waits whose length depends on the work (test rendering, gathering the rendered
audio) go through a second, gloo process group with a long timeout
(`SLOW_WAIT_TIMEOUT`), so a long test can never trip the collective timeout
of the training group (10 to 30 minutes by default).
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import UserError


SLOW_WAIT_TIMEOUT = timedelta(days=7)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    slow_group: object = None   # gloo group with SLOW_WAIT_TIMEOUT (set by `setup`)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Each tensor replaced, in place, by its mean over the ranks (gradients that
        DistributedDataParallel did not all-reduce)."""
        if not self.enabled:
            return
        for tensor in tensors:
            dist.all_reduce(tensor)
            tensor.div_(self.world_size)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_to_main(self, value) -> list | None:
        """Every rank's `value` (CPU objects) as a list on rank 0, None on the others.

        Runs on the long-timeout group: rank 0 may wait here while the others finish
        rendering their share of the test utterances.
        """
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0, group=self.slow_group)
        return gathered

    def slow_barrier(self) -> None:
        """A barrier that may wait as long as the work takes (see SLOW_WAIT_TIMEOUT)."""
        if self.enabled:
            dist.barrier(group=self.slow_group)

    def any_true(self, flag: bool | torch.Tensor, device: torch.device) -> bool:
        """True on every rank if it is true on one (e.g. an interruption). A tensor `flag`
        stays on the device until this one read (one synchronization)."""
        if not self.enabled:
            return bool(flag)
        tensor = (flag.detach().float().reshape(1) if isinstance(flag, torch.Tensor)
                  else torch.tensor([1.0 if flag else 0.0], device=device))
        dist.all_reduce(tensor)
        return bool(tensor.item() > 0)


class _Call(nn.Module):
    """Runs `model.<method>(...)` as its forward, so that the DistributedDataParallel
    wrapper around it sees every computation of a loss method, not only `forward`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args, **kwargs):
        if method == "forward":       # through __call__, with the model's own hooks
            return self.model(*args, **kwargs)
        return getattr(self.model, method)(*args, **kwargs)


class DistributedModel:
    """The model as `Runner.training_step` sees it under torchrun. Calling it, or any method
    of its own class (a named loss such as `critic_loss`), runs through one
    DistributedDataParallel forward, which averages the gradients of the backward that
    follows over the ranks. The nn.Module methods (`train`, `parameters`, ...) and other
    attributes are the model's own. In one process the loop passes the model itself."""

    def __init__(self, model: nn.Module, device: torch.device, find_unused_parameters: bool):
        self.module = model
        self.wrapper = DistributedDataParallel(
            _Call(model), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)

    def __call__(self, *args, **kwargs):
        return self.wrapper("forward", *args, **kwargs)

    def no_sync(self):
        """DistributedDataParallel's `no_sync`: the backward of a forward run inside it
        accumulates gradients without all-reducing them (gradient accumulation)."""
        return self.wrapper.no_sync()

    def __getattr__(self, name: str):
        attribute = getattr(self.module, name)
        if callable(attribute) and not hasattr(nn.Module, name) and name not in self.module._modules:
            return lambda *args, **kwargs: self.wrapper(name, *args, **kwargs)
        return attribute


def parse_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:K`, checked against what this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r} (use cpu, cuda or cuda:K)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device: unsupported device {name!r} (use cpu, cuda or cuda:K)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def setup(device_name: str) -> tuple[torch.device, Distributed]:
    """Parse the device and, under torchrun, join the process group."""
    device = parse_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return device, Distributed()
    info = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info.slow_group = dist.new_group(backend="gloo", timeout=SLOW_WAIT_TIMEOUT)
    return device, info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

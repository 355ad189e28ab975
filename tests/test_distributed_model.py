"""DistributedModel (training/distributed.py) under two real processes (gloo, CPU): a named
loss method called on it, here the CWGAN-GP critic loss with its gradient penalty (three
critic passes and a double backward) and the generator loss, runs through
DistributedDataParallel, so after `backward` every rank holds the mean of the ranks' own
gradients, computed here without DDP as the reference."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from samplernn_pase.models.cwgan_gp import CWGANGP, CWGANGPConfig
from samplernn_pase.training.distributed import DistributedModel

CONFIG = dict(n_mels=8, frames=16, label_sizes=(3, 2), noise_size=8, scales=2, generator_channels=4,
              critic_channels=4, critic_features=8, label_embedding_size=4)


def rank_inputs(rank: int):
    generator = torch.Generator().manual_seed(100 + rank)
    return (torch.randn(3, 1, 8, 16, generator=generator), torch.tensor([[0, 1], [2, 0], [1, 1]]),
            torch.randn(3, 8, generator=generator))


def gradients(model, loss_of, rank: int) -> list[torch.Tensor]:
    """Gradients of `loss_of(model, *inputs)` for this rank's inputs (its epsilons drawn from a
    generator seeded by the rank)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(rank)
    loss = loss_of(model, *rank_inputs(rank))
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


LOSSES = {
    "critic": lambda model, real, labels, noise: model.critic_loss(real, labels, noise)[0],
    "generator": lambda model, real, labels, noise: model.generator_loss(labels, noise),
}


def worker(rank: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = CWGANGP(CWGANGPConfig(**CONFIG))
    wrapped = DistributedModel(model, torch.device("cpu"), find_unused_parameters=True)
    for name, loss_of in LOSSES.items():
        results[(rank, name)] = gradients(wrapped, loss_of, rank)
    assert wrapped.training and wrapped.critic is model.critic    # module attributes are the model's
    dist.destroy_process_group()


def test_named_loss_methods_average_the_gradients_over_ranks():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(worker, args=(port, results), nprocs=2, join=True)
    torch.manual_seed(0)
    model = CWGANGP(CWGANGPConfig(**CONFIG))
    for name, loss_of in LOSSES.items():
        own = [gradients(model, loss_of, rank) for rank in (0, 1)]
        mean = [(a + b) / 2 for a, b in zip(*own)]
        assert any((a - b).abs().max() > 1e-4 for a, b in zip(*own))   # the ranks' own gradients differ
        for rank in (0, 1):
            for got, expected in zip(results[(rank, name)], mean):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

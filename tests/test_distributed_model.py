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
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

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


def spawn_two_ranks(worker) -> dict:
    """Runs worker(rank, port, results) in two processes on a free local port; their results."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(worker, args=(port, results), nprocs=2, join=True)
    return results


def test_named_loss_methods_average_the_gradients_over_ranks():
    results = spawn_two_ranks(worker)
    torch.manual_seed(0)
    model = CWGANGP(CWGANGPConfig(**CONFIG))
    for name, loss_of in LOSSES.items():
        own = [gradients(model, loss_of, rank) for rank in (0, 1)]
        mean = [(a + b) / 2 for a, b in zip(*own)]
        assert any((a - b).abs().max() > 1e-4 for a, b in zip(*own))   # the ranks' own gradients differ
        for rank in (0, 1):
            for got, expected in zip(results[(rank, name)], mean):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


class TwoParts(torch.nn.Module):
    """Two parts with a named loss each, as a GAN family's critic and generator."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

    def loss_a(self, x):
        return self.a(x).pow(2).mean()

    def loss_b(self, x):
        return self.b(x).pow(3).mean()


def two_part_inputs(rank: int, batch: int) -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(10 * rank + batch))


def accumulation_worker(rank: int, port: int, results):
    """`training.accumulate_batches` 2 under two ranks, one group of batches 1 and 2.
    "two": a GAN-like runner: part `a` steps on every batch, part `b` is called on the
    group's first batch only and steps after the group's last. "one": part `a` alone, whose
    first batch runs in `no_sync`: the all-reduces (DDP comm hook calls) are counted."""
    from samplernn_pase.training.distributed import Distributed
    from samplernn_pase.training.loop import Trainer
    from test_accumulation import runner_of
    from test_training_loop import LineRunner

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for case, names in (("two", "ab"), ("one", "a")):
        def training_step(model, batch, optimize, names=names):
            x = two_part_inputs(rank, batch)
            optimize("a", model.loss_a(x))
            if "b" in names and batch == 1:
                optimize("b", model.loss_b(x))
            return {}

        torch.manual_seed(0)
        model = TwoParts()
        runner = runner_of(LineRunner, model, 2)
        runner.optimizers = lambda training, model=model, names=names: {
            name: torch.optim.SGD(getattr(model, name).parameters(), lr=0.1) for name in names}
        runner.find_unused_parameters, runner.training_step = True, training_step
        trainer = Trainer(None, runner, Distributed(rank=rank, world_size=2))
        calls = []

        def counted(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)

        trainer.model.wrapper.register_comm_hook(None, counted)
        for name, optimizer in trainer.optimizers.items():
            optimizer.step = (lambda name=name, model=model, case=case: results.__setitem__(
                (rank, case, name), [p.grad.clone() for p in getattr(model, name).parameters()]))
        trainer.step(1, final=False)
        trainer.step(2, final=True)
        results[(rank, case, "all-reduces")] = len(calls)
    dist.destroy_process_group()


def test_accumulated_gradients_are_averaged_over_ranks():
    """Two ranks, groups of 2 batches: `a` gets the mean over ranks and batches of its
    gradients, and alone it is all-reduced once per step (`no_sync` on the first batch); `b`,
    called on the group's first batch only, gets the mean over ranks of that batch's."""
    results = spawn_two_ranks(accumulation_worker)
    torch.manual_seed(0)
    model = TwoParts()
    losses = {"a": [model.loss_a(two_part_inputs(r, b)) for r in (0, 1) for b in (1, 2)],
              "b": [model.loss_b(two_part_inputs(r, 1)) for r in (0, 1)]}
    for name, terms in losses.items():
        expected = torch.autograd.grad(sum(terms) / len(terms), list(getattr(model, name).parameters()))
        for rank, case in ((0, "two"), (1, "two"), (0, "one"), (1, "one")):
            if (rank, case, name) not in results:
                assert case == "one" and name == "b"
                continue
            for got, want in zip(results[(rank, case, name)], expected):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert results[(0, "one", "all-reduces")] == 1 and results[(1, "one", "all-reduces")] == 1

"""The one GRU of SampleRNN and MelNet against an independent implementation, torch.nn.GRU
(same weights: same outputs, same gradients), through every call path the models use."""

import pytest
import torch
import torch.nn.functional as F

from samplernn_pase.models.recurrent import GRUCell, gate_buffer, gate_views, gru_step, run_gru


def double_gru(inputs, hidden, layers=1, bidirectional=False, seed=0):
    torch.manual_seed(seed)
    rnn = torch.nn.GRU(inputs, hidden, layers, batch_first=True, bidirectional=bidirectional).double()
    with torch.no_grad():
        for p in rnn.parameters():   # non-zero biases, so that every bias term is checked
            p.uniform_(-0.5, 0.5)
    return rnn


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_recurrence_matches_nn_gru_outputs_and_gradients(layers, bidirectional):
    rnn = double_gru(5, 6, layers, bidirectional)
    directions = 2 if bidirectional else 1
    x = torch.randn(3, 7, 5, dtype=torch.double, requires_grad=True)
    h = torch.randn(layers * directions, 3, 6, dtype=torch.double, requires_grad=True)
    weights = torch.randn(3, 7, 6 * directions, dtype=torch.double)

    def run(function):
        for tensor in [x, h, *rnn.parameters()]:
            tensor.grad = None
        output, last = function(rnn, x, h)
        ((output * weights).sum() + 0.3 * (last ** 2).sum()).backward()
        return [output, last, x.grad, h.grad] + [p.grad for p in rnn.parameters()]

    reference = [t.detach().clone() for t in run(lambda rnn, x, h: rnn(x, h))]
    got = run(run_gru)
    names = ["output", "last", "x.grad", "h.grad"] + [f"{n}.grad" for n, _ in rnn.named_parameters()]
    for name, a, b in zip(names, got, reference):
        assert torch.allclose(a, b, atol=1e-12), (name, (a - b).abs().max())


def test_recurrence_without_autograd_matches_nn_gru():
    rnn = double_gru(4, 5).float()
    x, h = torch.randn(2, 9, 4), torch.randn(1, 2, 5)
    with torch.inference_mode():
        got, got_last = run_gru(rnn, x, h)
        want, want_last = rnn(x, h)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got_last, want_last, atol=1e-6)


def test_one_step_matches_nn_gru():
    """The generation loops' step, against one step of a bidirectional nn.GRU (forward and
    reverse direction, each from its own state): from the module's weights (`GRUCell`),
    and from input projections in a gate buffer (`gru_step`), also both directions at once."""
    rnn = double_gru(4, 6, bidirectional=True)
    x, h = torch.randn(3, 4, dtype=torch.double), torch.randn(2, 3, 6, dtype=torch.double)
    suffixes = ("", "_reverse")
    with torch.no_grad():
        want = rnn(x[:, None], h)[0][:, 0].view(3, 2, 6).transpose(0, 1)   # (direction, B, H)
        gates = torch.stack([gate_buffer(F.linear(x, getattr(rnn, "weight_ih_l0" + s),
                                                  getattr(rnn, "bias_ih_l0" + s)),
                                         getattr(rnn, "bias_hh_l0" + s)) for s in suffixes])
        weight_t = torch.stack([getattr(rnn, "weight_hh_l0" + s).t() for s in suffixes])
        for d, suffix in enumerate(suffixes):
            assert torch.allclose(GRUCell.of(rnn, 3, direction=suffix)(x, h[d]), want[d], atol=1e-12)
            one = gates[d].clone()
            got = gru_step(gate_views(one), h[d], weight_t[d], torch.empty_like(h[d]), torch.empty_like(h[d]))
            assert torch.allclose(got, want[d], atol=1e-12)
        both = gru_step(gate_views(gates), h, weight_t, torch.empty_like(h), torch.empty_like(h))
        assert torch.allclose(both, want, atol=1e-12)

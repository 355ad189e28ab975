"""The GRU of SampleRNN and MelNet: one step, for training and for generation.

Every GRU of the two models runs the step below: the teacher-forced passes on
the CPU through `run_gru` (forward and backward, `GRURecurrence`), and the
generation loops step by step (`GRUCell`, or `gru_step` / `gru_update` in
the loops that lay out their own products). On a GPU the teacher-forced pass
goes through cuDNN's fused GRU (`nn.GRU` itself), the one implementation that
is not this one; `tests/test_recurrent.py` checks this one against `nn.GRU`.

Maths and layout. With PyTorch's GRU weights (gates r, z, n):
    r = sigma(W_ir x + b_ir + W_hr h + b_hr)
    z = sigma(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
a step works on one buffer of pre-activations (..., 4H) = [n_x, r, z, n_h]:
r and z summed over input and state, n's input part n_x = W_in x + b_in and
its state part n_h = W_hn h + b_hn apart. Its last 3H columns are what
h W_hh^T + b_hh adds (PyTorch's order), its first 3H what the input adds (the
order n, r, z: `input_order`), so each product goes into one block as it is.
`gate_buffer` fills the buffer with everything known before the step (input
projections and biases), for one step or all steps of a sequence at once;
`gru_step` adds the state product and applies the nonlinearities, in place
into preallocated buffers: a generation step multiplies a few rows, so its
cost is its number of calls, not arithmetic.
"""

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SEQUENTIAL_MAX_ROWS = 16   # step loops over at most this many rows run on one CPU thread


@contextmanager
def generation_threads(device: torch.device, rows: int | None = None, threads: int | None = 1):
    """Runs a generation loop's small products on at most `threads` CPU threads.

    A generation step multiplies a few rows by each weight matrix: too little
    work to share, and on a small or busy machine the threads' synchronization
    at every step costs more than the step (measured on the 2-core target with
    another process running: 1 thread generated SampleRNN 2x (one stream) to 4x
    (8 streams) faster than 2, and MelNet 5x). Changing the thread count costs
    milliseconds, so this is done once per call, not around each step. Unchanged:
    `threads` None, a GPU, or loops over more than SEQUENTIAL_MAX_ROWS `rows`.
    """
    previous = torch.get_num_threads()
    if (threads is None or device.type != "cpu" or previous <= threads
            or (rows is not None and rows > SEQUENTIAL_MAX_ROWS)):
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def layer_weights(rnn: nn.GRU, layer: int = 0, direction: str = ""):
    """(weight_ih, bias_ih, weight_hh, bias_hh) of one layer (and direction: "" or
    "_reverse") of an `nn.GRU`."""
    return tuple(getattr(rnn, f"{name}_l{layer}{direction}")
                 for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))


# --- the step ----------------------------------------------------------------------


class GateViews(NamedTuple):
    """Views of one (..., 4H) buffer [n_x, r, z, n_h] (see the module's docstring)."""
    input_part: torch.Tensor   # [n_x, r, z]: what the input adds (the order of `input_order`)
    state_part: torch.Tensor   # [r, z, n_h]: what h W_hh^T + b_hh adds (PyTorch's order)
    rz: torch.Tensor           # r and z, summed over input and state
    r: torch.Tensor
    z: torch.Tensor
    n_h: torch.Tensor          # n's state part W_hn h + b_hn
    n_x: torch.Tensor          # n's input part W_in x + b_in


def gate_views(gates: torch.Tensor) -> GateViews:
    """The named views of a (..., 4H) buffer."""
    H = gates.shape[-1] // 4
    return GateViews(gates[..., :3 * H], gates[..., H:], gates[..., H:3 * H], gates[..., H:2 * H],
                     gates[..., 2 * H:3 * H], gates[..., 3 * H:], gates[..., :H])


def step_views(gates: torch.Tensor, dim: int = 1):
    """The `GateViews` of each step of a buffer of all steps (steps along `dim`)."""
    return [GateViews._make(step) for step in zip(*(v.unbind(dim) for v in gate_views(gates)))]


def input_order(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """PyTorch's gate order r, z, n along `dim` (3H) -> the input part's n, r, z."""
    r_z, n = weight.split([2 * weight.shape[dim] // 3, weight.shape[dim] // 3], dim)
    return torch.cat([n, r_z], dim)


def input_gate_weights(weight_ih: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor):
    """(a (In, 4H), bias (4H,)) with x a + bias = the buffer before the state product:
    [x W_in^T + b_in, x W_ir^T + b_ir + b_hr, x W_iz^T + b_iz + b_hz, b_hn]."""
    H = bias_hh.shape[0] // 3
    a = torch.cat([input_order(weight_ih).t(), weight_ih.new_zeros(weight_ih.shape[1], H)], 1)
    bias = torch.cat([bias_ih[2 * H:], bias_ih[:2 * H] + bias_hh[:2 * H], bias_hh[2 * H:]])
    return a.contiguous(), bias


def state_gate_weights(weight_hh: torch.Tensor) -> torch.Tensor:
    """(H, 4H) c with h c = the state's part of the buffer: [0, h W_hr^T, h W_hz^T, h W_hn^T]."""
    return torch.cat([weight_hh.new_zeros(weight_hh.shape[1], weight_hh.shape[1]), weight_hh.t()], 1)


def gate_buffer(input_gates: torch.Tensor, bias_hh: torch.Tensor) -> torch.Tensor:
    """(..., 4H) buffer before the state product from input projections (..., 3H)
    = x W_ih^T + b_ih in PyTorch's gate order."""
    H = bias_hh.shape[0] // 3
    gates = input_gates.new_empty(*input_gates.shape[:-1], 4 * H)
    gates[..., :H] = input_gates[..., 2 * H:]
    gates[..., H:3 * H] = input_gates[..., :2 * H] + bias_hh[:2 * H]
    gates[..., 3 * H:] = bias_hh[2 * H:]
    return gates


def gru_update(views, h: torch.Tensor, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The step's nonlinear part, from the complete pre-activations (`gate_views`).

    In place: r and z become the gates' values, `n` n's; h' goes to `out`
    (which may be `h`) and is returned. These are what the backward pass needs.
    """
    views.rz.sigmoid_()
    torch.addcmul(views.n_x, views.r, views.n_h, out=n).tanh_()
    return torch.lerp(n, h, views.z, out=out)   # (1 - z) * n + z * h


def gru_step(views, h: torch.Tensor, weight_hh_t: torch.Tensor, n: torch.Tensor,
             out: torch.Tensor) -> torch.Tensor:
    """One GRU step: the buffer of `gate_buffer` (`views` of it) + the state product
    h W_hh^T (h (B, H) or (D, B, H) with `weight_hh_t` (H, 3H) or (D, H, 3H): D GRUs
    at once), then `gru_update`. Returns h' (in `out`)."""
    state = views.state_part
    if h.dim() == 3:
        state.baddbmm_(h, weight_hh_t)
    else:
        state.addmm_(h, weight_hh_t)
    return gru_update(views, h, n, out)


def gru_update_backward(views, n: torch.Tensor, h: torch.Tensor, dh: torch.Tensor,
                        grad_views) -> torch.Tensor:
    """Backward of `gru_update`: d loss / d pre-activations into the buffer of `grad_views`
    (same layout), from dh = d loss / d h'. `views`, `n`: the step's buffers after the
    forward; h its input state. Returns dh z, the part of d loss / d h that does not go
    through the state product (the caller adds d[:3H] W_hh)."""
    r, z, grad = views.r, views.z, grad_views
    torch.mul(dh * (1 - z), 1 - n * n, out=grad.n_x)
    torch.mul(grad.n_x, r, out=grad.n_h)
    torch.mul(grad.n_x * views.n_h, r * (1 - r), out=grad.r)
    torch.mul(dh * (h - n), z * (1 - z), out=grad.z)
    return dh * z


class GRUCell:
    """A GRU stepped one step at a time over `rows` rows (generation), with the step's
    buffers and views allocated once. A caller that computes its own input part fills
    `input_part` and calls `step`; given the input weights, `cell(x, h)` does it."""

    def __init__(self, weight_hh, rows, weight_ih=None, bias_ih=None, bias_hh=None):
        hidden = weight_hh.shape[1]
        self.weight_hh_t = weight_hh.t()
        self.gates = weight_hh.new_empty(rows, 4 * hidden)
        self.views = gate_views(self.gates)
        self.input_part = self.views.input_part
        self.n = weight_hh.new_empty(rows, hidden)
        if weight_ih is not None:
            self.input_weight, self.input_bias = input_gate_weights(weight_ih, bias_ih, bias_hh)

    @classmethod
    def of(cls, rnn: nn.GRU, rows: int, layer: int = 0, direction: str = ""):
        """The cell of one layer (and direction: "" or "_reverse") of an `nn.GRU`."""
        weight_ih, bias_ih, weight_hh, bias_hh = layer_weights(rnn, layer, direction)
        return cls(weight_hh, rows, weight_ih, bias_ih, bias_hh)

    def step(self, h: torch.Tensor) -> torch.Tensor:
        """h' (rows, H), a new tensor, from the input part in the buffer and h (rows, H)."""
        return gru_step(self.views, h, self.weight_hh_t, self.n, torch.empty_like(h))

    def __call__(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """h' (rows, H) from inputs x (rows, In) and h."""
        torch.addmm(self.input_bias, x, self.input_weight, out=self.gates)
        return self.step(h)


# --- the sequence (training) ----------------------------------------------------------


class GRURecurrence(torch.autograd.Function):
    """One GRU layer's recurrence over all steps, given its input projections.

    Same maths as `nn.GRU`. Autograd through `nn.GRU` on the CPU accumulates the
    recurrent weight gradient step by step (a full 3H x H add per step); here the
    backward pass keeps each step's gate gradients and forms that gradient with
    one large matrix product. Under CPU autocast (training.precision bf16 / fp16) it runs
    in float32: its in-place products mix the state with the weights.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, input_gates, h0, weight_hh, bias_hh):
        # input_gates (B, T, 3H) = x W_ih^T + b_ih; h0 (B, H)
        gates = gate_buffer(input_gates, bias_hh)                       # (B, T, 4H)
        batch, steps, hidden = input_gates.shape[0], input_gates.shape[1], h0.shape[1]
        output = h0.new_empty(batch, steps, hidden)
        n = torch.empty_like(output)
        weight_t = weight_hh.t()
        h = h0
        for views, n_t, out_t in zip(step_views(gates), n.unbind(1), output.unbind(1)):
            h = gru_step(views, h, weight_t, n_t, out_t)
        ctx.save_for_backward(h0, output, gates, n, weight_hh)
        return output

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_output):
        h0, output, gates, n, weight_hh = ctx.saved_tensors
        hidden = h0.shape[1]
        previous = torch.cat([h0[:, None], output[:, :-1]], dim=1)
        grad = torch.empty_like(gates)
        dh = torch.zeros_like(h0)
        steps = list(zip(step_views(gates), n.unbind(1), previous.unbind(1), grad_output.unbind(1),
                         step_views(grad)))
        for views, n_t, h_t, grad_t, grad_views in reversed(steps):
            direct = gru_update_backward(views, n_t, h_t, dh + grad_t, grad_views)
            dh = torch.addmm(direct, grad_views.state_part, weight_hh)
        state = grad[..., hidden:].reshape(-1, 3 * hidden)
        grad_weight = state.t() @ previous.reshape(-1, hidden)
        grad_input = torch.cat([grad[..., hidden:3 * hidden], grad[..., :hidden]], dim=-1)
        return grad_input, dh, grad_weight, state.sum(0)


def run_gru(rnn: nn.GRU, x: torch.Tensor, hidden: torch.Tensor | None = None):
    """`rnn(x, hidden)` for a batch-first `nn.GRU` (any layers, one or two directions):
    on the CPU through `GRURecurrence`, with or without autograd (same values as
    `nn.GRU`, faster backward); elsewhere `nn.GRU` itself (cuDNN)."""
    if x.device.type != "cpu":
        return rnn(x, hidden)
    directions = 2 if rnn.bidirectional else 1
    if hidden is None:
        hidden = x.new_zeros(rnn.num_layers * directions, x.shape[0], rnn.hidden_size)
    last = []
    for layer in range(rnn.num_layers):
        outputs = []
        for direction, suffix in enumerate(("", "_reverse")[:directions]):
            weight_ih, bias_ih, weight_hh, bias_hh = layer_weights(rnn, layer, suffix)
            sequence = x.flip(1) if direction else x
            gates = F.linear(sequence, weight_ih, bias_ih)
            out = GRURecurrence.apply(gates, hidden[layer * directions + direction], weight_hh, bias_hh)
            last.append(out[:, -1])
            outputs.append(out.flip(1) if direction else out)
        x = torch.cat(outputs, -1) if directions > 1 else outputs[0]
    return x, torch.stack(last)

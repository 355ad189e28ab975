"""MelNet: a multiscale autoregressive model of (log-)mel spectrograms.

Vasquez & Lewis, "MelNet: A Generative Model for Audio in the Frequency
Domain" (2019). One file, one dataclass config, plain modules.

Layout and order. A spectrogram is a tensor (B, T, F): frames along dim 1,
mel bins (low to high) along dim 2, the layout of the stateful loader's
chunks. Within a tier, values are generated frame by frame and, inside a
frame, from low to high frequency (row-major over (t, f)).

Tiers. Tier G (finest) splits the full spectrogram x_<G+1 into even and odd
rows of one axis: x_<G (even) and x_G (odd); tier G-1 splits x_<G, and so on
down to tier 2; tier 1 models x_1 = x_<2 unconditionally. Tier k >= 2 splits
frequency when k is even and time when k is odd (tier 2 always frequency), as
in the paper and the seed. Odd sizes are allowed: the even part gets the
extra row, and `interleave` inverts `split` exactly.

One tier is a stack of delayed layers:
  - time-delayed stack: sees frames < t only (its input is the previous
    frame); per layer, a GRU over time for every frequency bin plus a GRU in
    both directions over frequency inside the frame;
  - centralized stack (tier 1 only): a GRU over time on a whole-frame vector;
  - frequency-delayed stack: sees frames < t through the two stacks above and
    bins < f of frame t (its input is the previous bin), through a GRU going
    up in frequency;
  - residual connections around every layer, and a GMM head (K components)
    on the last frequency-delayed state. The loss is the NLL per value.
Tiers k >= 2 add features of x_<k (known before tier k starts) from a
feature-extraction network (GRUs over time and over frequency on x_<k) to the
inputs of both stacks. GRUs replace the paper's LSTMs: one state tensor per
recurrence keeps the carried state simple.

Truncated BPTT over time. Long spectrograms are trained in chunks of
`chunk_frames` frames (at full resolution; a multiple of `time_factor`). Per
tier, the time-direction recurrences carry their state between chunks: the
time GRUs of the time-delayed stack, the centralized GRU, the forward-in-time
GRU of the feature extraction, and the previous frame (the input of the next
chunk's first frame). On rows flagged `reset` (first chunk of an utterance)
learnable initial states are used instead (and a zero previous frame).
Frequency-direction recurrences never cross a frame, so chunk borders do not
affect them: they start from zeros at every frame. The backward-in-time GRU of
the feature extraction cannot be carried (it would need the next chunk); it
runs inside each chunk, starting from a learnable state at the chunk's last
frame. Sampling runs the feature extraction over the same chunks, so training
and generation compute the same function.

Sampling keeps state: per frame, one step of every time-direction recurrence
and one pass of the in-frame frequency GRUs; per generated value, one step of
each layer's frequency-delayed GRU and the GMM head. `tier_log_likelihood`
runs that same path on given values, so tests can check it against the full
teacher-forced pass (`tier_nll`).
"""

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.mel import MelAnalysis
from .recurrent import (GRUCell, gate_views, generation_threads, gru_update, input_gate_weights, run_gru,
                        state_gate_weights)
from .section import ModelSection

TIME, FREQ = -2, -1  # axes of a (..., T, F) spectrogram
LOG_STD_MIN = -7.0  # floor of the GMM log standard deviations (std >= 9e-4)
LOG_STD_MAX = 3.0   # ceiling (std <= 20): an untrained head must not blow up sampling
# Sampled values are clipped to this many standard deviations of the (standardized)
# data: autoregressive feedback from an untrained or unlucky draw cannot diverge to inf/NaN.
VALUE_LIMIT = 10.0
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class MelNetConfig(ModelSection, MelAnalysis):
    """The `model` section of a MelNet config (schema/model_melnet.json); the mel analysis
    fields (n_mels, n_fft, hop_length, ...) come from MelAnalysis."""

    #: The vocoder that renders the mels is the runner's (runners/vocoding.py).
    runner_settings = ("vocoder_experiment", "vocoder_epoch")

    tiers: int = 4
    layers: list[int] = field(default_factory=lambda: [4, 2, 2, 2])  # delayed layers per tier, tier 1 first
    hidden_size: int = 64
    gmm_components: int = 10
    chunk_frames: int = 64  # TBPTT chunk, in full-resolution frames; 0: no chunking
    sample_temperature: float = 1.0

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_melnet.json)."""
        problems = self.analysis_problems()
        if len(self.layers) != self.tiers:
            problems.append(f"model.layers: {len(self.layers)} entries for model.tiers = {self.tiers}; "
                            "give one per tier")
        if self.n_mels < 2 ** freq_splits(self.tiers):
            problems.append(f"model.n_mels: {self.n_mels} is too small for {self.tiers} tiers (at least "
                            f"2 ** {freq_splits(self.tiers)} frequency splits = {2 ** freq_splits(self.tiers)})")
        if self.chunk_frames % time_factor(self.tiers):
            problems.append(f"model.chunk_frames: {self.chunk_frames} must be a multiple of "
                            f"{time_factor(self.tiers)} (2 ** time-splitting tiers of {self.tiers})")
        return problems


# --- multiscale split / interleave ----------------------------------------------


def split_axis(tier: int) -> int:
    """Axis split by tier `tier` (>= 2): frequency for even tiers, time for odd ones."""
    if tier < 2:
        raise ValueError("tier 1 does not split")
    return FREQ if tier % 2 == 0 else TIME


def freq_splits(tiers: int) -> int:
    return sum(1 for k in range(2, tiers + 1) if split_axis(k) == FREQ)


def time_splits(tiers: int) -> int:
    return sum(1 for k in range(2, tiers + 1) if split_axis(k) == TIME)


def time_factor(tiers: int) -> int:
    """Chunks must hold a multiple of this many frames so that every tier splits them alike."""
    return 2 ** time_splits(tiers)


def split(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(even rows, odd rows) of `x` along `axis`; the even part is the lower-resolution one."""
    n = x.shape[axis]
    even = x.index_select(axis, torch.arange(0, n, 2, device=x.device))
    odd = x.index_select(axis, torch.arange(1, n, 2, device=x.device))
    return even, odd


def interleave(even: torch.Tensor, odd: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of `split`: rows of `even` at even positions, rows of `odd` at odd ones."""
    n_even, n_odd = even.shape[axis], odd.shape[axis]
    if n_even - n_odd not in (0, 1):
        raise ValueError(f"cannot interleave {n_even} and {n_odd} rows")
    shape = list(even.shape)
    shape[axis] = n_even + n_odd
    out = even.new_empty(shape)
    out.index_copy_(axis % out.dim(), torch.arange(0, n_even + n_odd, 2, device=out.device), even)
    out.index_copy_(axis % out.dim(), torch.arange(1, n_even + n_odd, 2, device=out.device), odd)
    return out


def split_tiers(x: torch.Tensor, tiers: int) -> dict[int, torch.Tensor]:
    """Every tier's values of a full-resolution spectrogram: {k: x_k}, plus {-k: x_<k} for k >= 2."""
    parts = {}
    lower = x
    for k in range(tiers, 1, -1):
        lower, parts[k] = split(lower, split_axis(k))
        parts[-k] = lower
    parts[1] = lower
    return parts


def merge_tiers(parts: dict[int, torch.Tensor], tiers: int, start: int = 1) -> torch.Tensor:
    """Interleave x_<start (parts[-start], or parts[1] when start is 1) with tiers start..G."""
    x = parts[1] if start == 1 else parts[-start]
    for k in range(max(start, 2), tiers + 1):
        x = interleave(x, parts[k], split_axis(k))
    return x


def tier_shapes(frames: int, n_mels: int, tiers: int) -> dict[int, tuple[int, int]]:
    """(T, F) of every tier's values x_k, and of x_<k under key -k, for a frames x n_mels spectrogram."""
    shapes = {}
    t, f = frames, n_mels
    for k in range(tiers, 1, -1):
        if split_axis(k) == FREQ:
            shapes[k], f = (t, f // 2), (f + 1) // 2
        else:
            shapes[k], t = (t // 2, f), (t + 1) // 2
        shapes[-k] = (t, f)
    shapes[1] = (t, f)
    return shapes


# --- GMM ------------------------------------------------------------------------


def gmm_log_prob(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) under the GMM with unconstrained parameters theta (..., 3K) = (mu, log_std, logit)."""
    mu, log_std, logit = theta.chunk(3, dim=-1)
    log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    z = (x.unsqueeze(-1) - mu) * torch.exp(-log_std)
    log_component = -0.5 * z * z - log_std - HALF_LOG_2PI
    return torch.logsumexp(F.log_softmax(logit, dim=-1) + log_component, dim=-1)


def gmm_noise(shape, components: int, like: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random numbers for `gmm_sample` of GMMs of `shape`: Gumbel (*shape, K) and normal (*shape, 1)."""
    u = torch.rand(*shape, components, generator=generator, device=like.device, dtype=like.dtype)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0)).clamp_(min=1e-20))
    normal = torch.randn(*shape, 1, generator=generator, device=like.device, dtype=like.dtype)
    return gumbel, normal


def gmm_sample(theta: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None, noise=None) -> torch.Tensor:
    """One value per GMM. Temperature divides the mixture logits and multiplies the stds.

    `noise`: (gumbel, normal) from `gmm_noise`, drawn here when None.
    """
    mu, log_std, logit = theta.chunk(3, dim=-1)
    if temperature <= 0:  # the mean of the most likely component
        k = logit.argmax(-1, keepdim=True)
        return mu.gather(-1, k).squeeze(-1).clamp(-VALUE_LIMIT, VALUE_LIMIT)
    gumbel, normal = noise or gmm_noise(theta.shape[:-1], logit.shape[-1], theta, generator)
    k = (logit / temperature + gumbel).argmax(-1, keepdim=True)
    std = torch.exp(log_std.gather(-1, k).clamp(LOG_STD_MIN, LOG_STD_MAX)) * temperature
    return (mu.gather(-1, k) + std * normal).squeeze(-1).clamp(-VALUE_LIMIT, VALUE_LIMIT)


# --- modules --------------------------------------------------------------------


def _gru_sequences(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor, bias: torch.Tensor):
    """Outputs (D, B, S, H) of D single-layer GRUs over x (D, B, S, In), from zero states.

    GRU d has the weights a[d], bias[d] of `input_gate_weights` and c[d] of
    `state_gate_weights` (stacked: (D, In, 4H), (D, 1, 4H), (D, H, 4H)). The input
    projections of all steps in one matmul, then per step one baddbmm into one
    buffer whose views stay and the shared `gru_update` (batch-1 sampling is bound
    by per-call overhead, not arithmetic).
    """
    D, B, S, _ = x.shape
    H = c.shape[1]
    pre = torch.matmul(x, a.unsqueeze(1)).add_(bias.unsqueeze(1))  # (D, B, S, 4H)
    pre = pre.permute(2, 0, 1, 3).contiguous()  # (S, D, B, 4H)
    out = x.new_empty(S, D, B, H)
    gates, n = x.new_empty(D, B, 4 * H), x.new_empty(D, B, H)
    views = gate_views(gates)
    h = x.new_zeros(D, B, H)
    for p, o in zip(pre.unbind(0), out.unbind(0)):
        torch.baddbmm(p, h, c, out=gates)
        h = gru_update(views, h, n, o)
    return out.permute(1, 2, 0, 3)


def _reset_rows(state: torch.Tensor, initial: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
    """`state` (B, ...) with the rows flagged in `reset` (B,) replaced by `initial` (...)."""
    flags = reset.view(-1, *([1] * (state.dim() - 1)))
    return torch.where(flags, initial.expand_as(state), state)


class FeatureExtraction(nn.Module):
    """Features of the lower-resolution spectrogram x_<k that condition tier k.

    GRUs over time (forward: state carried across chunks; backward: inside the
    chunk, from a learnable state) and both directions over frequency (inside
    a frame). Output (B, T, F, 4H).
    """

    def __init__(self, n_freq: int, hidden_size: int):
        super().__init__()
        self.time_forward = nn.GRU(1, hidden_size, batch_first=True)
        self.time_backward = nn.GRU(1, hidden_size, batch_first=True)
        self.freq = nn.GRU(1, hidden_size, batch_first=True, bidirectional=True)
        self.forward_h0 = nn.Parameter(torch.zeros(n_freq, hidden_size))
        self.backward_h0 = nn.Parameter(torch.zeros(n_freq, hidden_size))

    def forward(self, lower: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lower (B, T, F), state (B, F, H) -> features (B, T, F, 4H), new state (B, F, H)."""
        B, T, Fq = lower.shape
        H = state.shape[-1]
        seq = lower.transpose(1, 2).reshape(B * Fq, T, 1)
        fwd, last = run_gru(self.time_forward, seq, state.reshape(1, B * Fq, H))
        h0 = self.backward_h0.expand(B, Fq, H).reshape(1, B * Fq, H)
        bwd, _ = run_gru(self.time_backward, seq.flip(1), h0.contiguous())
        time = torch.cat([fwd, bwd.flip(1)], -1).view(B, Fq, T, 2 * H).transpose(1, 2)
        freq, _ = run_gru(self.freq, lower.reshape(B * T, Fq, 1))
        features = torch.cat([time, freq.view(B, T, Fq, 2 * H)], -1)
        return features, last.view(B, Fq, H)


class FramePlan(NamedTuple):
    """What `DelayedLayer.frame_step` needs, prepared once per generation."""
    freq_gates: tuple          # both directions of time_freq_rnn stacked: (a, c, bias) of `_gru_sequences`
    time_cell: GRUCell         # time_rnn over the B * F bins
    central_cell: GRUCell | None   # central_rnn (tier 1), else None


class DelayedLayer(nn.Module):
    """One layer of the time-delayed, (centralized) and frequency-delayed stacks."""

    def __init__(self, n_freq: int, hidden_size: int, central: bool):
        super().__init__()
        H = hidden_size
        self.time_rnn = nn.GRU(H, H, batch_first=True)
        self.time_freq_rnn = nn.GRU(H, H, batch_first=True, bidirectional=True)
        self.time_out = nn.Linear(3 * H, H)
        self.time_h0 = nn.Parameter(torch.zeros(n_freq, H))
        self.central = central
        if central:
            self.central_rnn = nn.GRU(H, H, batch_first=True)
            self.central_out = nn.Linear(H, H)
            self.central_h0 = nn.Parameter(torch.zeros(H))
        self.freq_rnn = nn.GRU(H, H, batch_first=True)
        self.freq_out = nn.Linear(H, H)

    def forward(self, h_t, h_f, h_c, time_state, central_state):
        """Teacher-forced pass over a chunk.

        h_t, h_f (B, T, F, H); h_c (B, T, H) or None; time_state (B, F, H);
        central_state (B, H) or None. Returns the new h_t, h_f, h_c and states.
        """
        B, T, Fq, H = h_t.shape
        seq = h_t.transpose(1, 2).reshape(B * Fq, T, H)
        over_time, time_last = run_gru(self.time_rnn, seq, time_state.reshape(1, B * Fq, H))
        over_time = over_time.view(B, Fq, T, H).transpose(1, 2)
        over_freq, _ = run_gru(self.time_freq_rnn, h_t.reshape(B * T, Fq, H))
        central, central_last = None, None
        if self.central:
            central, central_last = run_gru(self.central_rnn, h_c, central_state.unsqueeze(0))
            central_last = central_last.squeeze(0)
        h_t, h_c, stacks = self.stack_outputs(h_t, over_time, over_freq.view(B, T, Fq, 2 * H), h_c, central)
        out, _ = run_gru(self.freq_rnn, (h_f + stacks).reshape(B * T, Fq, H))
        h_f = self.freq_out(out.view(B, T, Fq, H)) + h_f
        return h_t, h_f, h_c, time_last.view(B, Fq, H), central_last

    def stack_outputs(self, h_t, over_time, over_freq, h_c, central):
        """The time-delayed and centralized stacks' outputs (residual) from their recurrences'
        outputs, for a chunk (..., T, F, H) or one frame (..., F, H): over_time, over_freq (both
        directions) and central (None without the centralized stack). Returns h_t, h_c and
        ``stacks``: what the layer adds to the frequency-delayed input of every bin."""
        h_t = self.time_out(torch.cat([over_time, over_freq], -1)) + h_t
        stacks = h_t
        if self.central:
            h_c = self.central_out(central) + h_c
            stacks = stacks + h_c.unsqueeze(-2)
        return h_t, h_c, stacks

    def sampling_plan(self, batch_size: int, n_freq: int) -> FramePlan:
        """What `frame_step` needs, prepared once per generation: the two directions of
        `time_freq_rnn` stacked for `_gru_sequences`, the cells of the time GRUs."""
        rnn = self.time_freq_rnn
        inputs = [input_gate_weights(*(getattr(rnn, name + suffix)
                                       for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0")))
                  for suffix in ("", "_reverse")]
        a, bias = zip(*inputs)
        c = [state_gate_weights(rnn.weight_hh_l0), state_gate_weights(rnn.weight_hh_l0_reverse)]
        freq_gates = torch.stack(a), torch.stack(c), torch.stack(bias).unsqueeze(1)
        central = GRUCell.of(self.central_rnn, batch_size) if self.central else None
        return FramePlan(freq_gates, GRUCell.of(self.time_rnn, batch_size * n_freq), central)

    def frame_step(self, h_t, h_c, time_state, central_state, plan: FramePlan):
        """Time-direction part for one frame: h_t (B, F, H), h_c (B, H) or None.

        `plan`: `self.sampling_plan(B, F)` (both directions of `time_freq_rnn` run as
        one loop of F steps).
        Returns the new h_t, h_c, states, and `stacks` (B, F, H): what this layer
        adds to the frequency-delayed input of every bin of the frame.
        """
        B, Fq, H = h_t.shape
        time_state = plan.time_cell(h_t.reshape(B * Fq, H), time_state.reshape(B * Fq, H)).view(B, Fq, H)
        out = _gru_sequences(torch.stack([h_t, h_t.flip(1)]), *plan.freq_gates)
        over_freq = torch.cat([out[0], out[1].flip(1)], -1)
        if self.central:
            central_state = plan.central_cell(h_c, central_state)
        h_t, h_c, stacks = self.stack_outputs(h_t, time_state, over_freq, h_c, central_state)
        return h_t, h_c, time_state, central_state, stacks


class Tier(nn.Module):
    """One tier: its own values x_k (B, T, F), conditioned on x_<k when `conditioned`."""

    def __init__(self, n_freq: int, n_freq_lower: int, layers: int, hidden_size: int,
                 gmm_components: int, conditioned: bool):
        super().__init__()
        H = hidden_size
        self.n_freq, self.hidden_size = n_freq, hidden_size
        self.conditioned, self.central = conditioned, not conditioned
        self.time_in = nn.Linear(1, H)  # x[t-1, f] -> layer-0 time-delayed input
        self.freq_in = nn.Linear(1, H)  # x[t, f-1] -> layer-0 frequency-delayed input
        if self.central:
            self.central_in = nn.Linear(n_freq, H)  # x[t-1, :] -> layer-0 centralized input
        if conditioned:
            self.features = FeatureExtraction(n_freq_lower, H)
            self.features_to_time = nn.Linear(4 * H, H)
            self.features_to_freq = nn.Linear(4 * H, H)
        self.layers = nn.ModuleList(DelayedLayer(n_freq, H, self.central) for _ in range(layers))
        self.head = nn.Linear(H, 3 * gmm_components)

    # state ----------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A state whose rows all need `reset` (zeros; the learnable values enter on reset)."""
        p = self.head.weight
        L, H = len(self.layers), self.hidden_size
        state = {"prev_frame": p.new_zeros(batch_size, self.n_freq),
                 "time": p.new_zeros(batch_size, L, self.n_freq, H)}
        if self.central:
            state["central"] = p.new_zeros(batch_size, L, H)
        if self.conditioned:
            state["features"] = p.new_zeros(batch_size, self.features.forward_h0.shape[0], H)
        return state

    def _apply_reset(self, state, reset):
        state = {key: value.detach() for key, value in state.items()}
        state["prev_frame"] = state["prev_frame"].masked_fill(reset.view(-1, 1), 0.0)
        state["time"] = _reset_rows(state["time"], torch.stack([l.time_h0 for l in self.layers]), reset)
        if self.central:
            state["central"] = _reset_rows(state["central"],
                                           torch.stack([l.central_h0 for l in self.layers]), reset)
        if self.conditioned:
            state["features"] = _reset_rows(state["features"], self.features.forward_h0, reset)
        return state

    def conditioning(self, lower: torch.Tensor, state: torch.Tensor, size: tuple[int, int]):
        """Layer-0 additions from x_<k, cropped to this tier's (T, F): time (B,T,F,H), freq, state."""
        features, state = self.features(lower[:, :size[0]], state)
        features = features[:, :, :size[1]]
        return self.features_to_time(features), self.features_to_freq(features), state

    # teacher-forced pass -------------------------------------------------------------

    def forward(self, x, lower, state, reset):
        """GMM parameters (B, T, F, 3K) of every value of a chunk of x_k, and the new state.

        x (B, T, F); lower: x_<k (B, T', F') or None; state: dict from
        `initial_state` (detached here); reset (B,) bool.
        """
        B, T, Fq = x.shape
        state = self._apply_reset(state, reset)
        new_state = {"prev_frame": x[:, -1] if T else state["prev_frame"]}
        prev = torch.cat([state["prev_frame"].unsqueeze(1), x[:, :-1]], 1)  # x[t-1, f]
        h_t = self.time_in(prev.unsqueeze(-1))
        h_f = self.freq_in(F.pad(x, (1, -1)).unsqueeze(-1))  # x[t, f-1]
        h_c = self.central_in(prev) if self.central else None
        if self.conditioned:
            z_t, z_f, new_state["features"] = self.conditioning(lower, state["features"], (T, Fq))
            h_t, h_f = h_t + z_t, h_f + z_f
        time_states, central_states = [], []
        for i, layer in enumerate(self.layers):
            h_t, h_f, h_c, time_last, central_last = layer(
                h_t, h_f, h_c, state["time"][:, i],
                state["central"][:, i] if self.central else None)
            time_states.append(time_last)
            central_states.append(central_last)
        new_state["time"] = torch.stack(time_states, 1)
        if self.central:
            new_state["central"] = torch.stack(central_states, 1)
        return self.head(h_f), new_state

    # incremental path ----------------------------------------------------------------

    @torch.no_grad()
    def generate(self, frames: int, lower: torch.Tensor | None, batch_size: int, chunk: int,
                 temperature: float = 1.0, target: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
        """Values of this tier, one GMM per value, with cached recurrent state.

        Samples `frames` frames, or with `target` (B, T, F) scores the given
        values instead and returns (target, log-likelihoods (B, T, F)).
        `chunk`: this tier's TBPTT chunk in frames (the feature extraction's
        window, as in training); 0 for a single window. Per frame: the
        time-direction stacks (`_frame_stacks`), then the frequency-delayed stack
        and the head bin by bin (`_FrequencyStep`).
        """
        if target is not None:
            batch_size, frames = target.shape[:2]
        device = self.head.weight.device
        reset = torch.ones(batch_size, dtype=torch.bool, device=device)
        state = self._apply_reset(self.initial_state(batch_size), reset)
        x = self.head.weight.new_zeros(batch_size, frames, self.n_freq)
        log_likelihood = torch.zeros_like(x) if target is not None else None
        features = self._generation_features(lower, state["features"], frames, chunk) \
            if self.conditioned else None
        time_states = list(state["time"].unbind(1))
        central_states = list(state["central"].unbind(1)) if self.central else None
        plans = [layer.sampling_plan(batch_size, self.n_freq) for layer in self.layers]
        bins = _FrequencyStep(self, batch_size)
        sampling = target is None and temperature > 0
        prev = state["prev_frame"]
        for t in range(frames):
            freq_base, stacks = self._frame_stacks(prev, None if features is None else features[0][:, t],
                                                   None if features is None else features[1][:, t],
                                                   time_states, central_states, plans)
            frame_gates = bins.frame_gates(stacks, freq_base)
            head_bias = bins.head_bias(freq_base)
            if target is not None:
                x[:, t] = target[:, t]
                log_likelihood[:, t] = bins.score_frame(frame_gates, bins.per_bin(head_bias), target[:, t])
                prev = x[:, t]
                continue
            normal = None
            if sampling:   # this frame's random numbers in one go, temperature folded in
                gumbel, normal = gmm_noise(head_bias.shape[:2], bins.components, x, generator)
                head_bias = head_bias + F.pad(gumbel * temperature, (2 * bins.components, 0))
                normal = bins.per_bin(normal * temperature)
            x[:, t] = bins.sample_frame(frame_gates, bins.per_bin(head_bias), normal)
            prev = x[:, t]
        return x if target is None else (x, log_likelihood)

    def _generation_features(self, lower, state, frames, chunk):
        """The layer-0 additions from x_<k (`conditioning`) of all `frames` frames, (B, T, F, H)
        for the time-delayed and for the frequency-delayed stack, computed over the training's
        chunks of `chunk` frames (0: one)."""
        z_time, z_freq = [], []
        chunk = chunk or frames or 1
        for start in range(0, max(frames, 1), chunk):
            size = (min(chunk, frames - start), self.n_freq)
            z_t, z_f, state = self.conditioning(lower[:, start:start + chunk], state, size)
            z_time.append(z_t)
            z_freq.append(z_f)
        return torch.cat(z_time, 1), torch.cat(z_freq, 1)

    def _frame_stacks(self, prev, z_time, z_freq, time_states, central_states, plans):
        """The time-delayed (and centralized) stacks for one frame from the previous frame
        prev (B, F) and the frame's conditioning z_time, z_freq (B, F, H) or None: every
        layer's `DelayedLayer.frame_step` (states updated in place in the lists). Returns
        the frequency-delayed input's base (layer 0: (H,) or (B, F, H)) and each layer's
        ``stacks`` (B, F, H)."""
        h_t = self.time_in(prev.unsqueeze(-1))
        h_c = self.central_in(prev) if self.central else None
        freq_base = self.freq_in.bias  # (H,) or (B, F, H)
        if self.conditioned:
            h_t = h_t + z_time
            freq_base = z_freq + freq_base
        stacks = []
        for i, layer in enumerate(self.layers):
            h_t, h_c, time_states[i], central, add = layer.frame_step(
                h_t, h_c, time_states[i], central_states[i] if self.central else None, plans[i])
            if self.central:
                central_states[i] = central
            stacks.append(add)
        return freq_base, stacks


class _FrequencyStep:
    """The frequency-delayed stack and the GMM head of a tier, one value at a time.

    Per value, layer i computes u = h_f + stacks_i, g_i = GRU(u, g_i), h_f += W_i g_i + b_i,
    and the head theta = W h_f + b. Within a frame everything is linear in
    V = [x[t, f-1], g_0, ..., g_{L-1}] plus per-frame constants, so layer i's gate
    pre-activations are one addmm of a prefix of V (the `gate_views` layout, with the
    products W_ih W_j of the layers below precomputed), and theta one addmm of V.
    The per-frame constants (h_f's bias and features, stacks_i, the output biases
    b_j below, the Gumbel noise of the logits) are the addmms' bias rows, computed
    for all bins of a frame at once (`frame_gates`, `head_bias`).
    """

    def __init__(self, tier, batch_size):
        L, H, B = len(tier.layers), tier.hidden_size, batch_size
        w_in = tier.freq_in.weight.t()  # (1, H): h_f of the bin's input value
        out_w = [layer.freq_out.weight.t() for layer in tier.layers]  # h_f += g_j @ out_w[j]
        biases = torch.stack([layer.freq_out.bias for layer in tier.layers]).cumsum(0)
        offsets = [torch.zeros_like(biases[0])] + list(biases[:-1])
        self.gate_in, self.gate_bias, gate_mats = [], [], []
        for i, layer in enumerate(tier.layers):
            rnn = layer.freq_rnn
            a, bias = input_gate_weights(rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
            self.gate_in.append(a)
            self.gate_bias.append(bias + offsets[i] @ a)
            gate_mats.append(torch.cat([w_in @ a] + [out_w[j] @ a for j in range(i)]
                                       + [state_gate_weights(rnn.weight_hh_l0)]))
        self.head_w = tier.head.weight.t()  # (H, 3K)
        self.head_mat = torch.cat([w_in @ self.head_w] + [w @ self.head_w for w in out_w])  # (1 + L H, 3K)
        self.head_out_bias = tier.head.bias + biases[-1] @ self.head_w
        K = self.components = tier.head.out_features // 3
        self.n_freq, self.batch_size = tier.n_freq, B
        like = tier.head.weight
        self.V = like.new_zeros(B, 1 + L * H)
        self.value_slot = self.V[:, :1]
        self.gates, self.n = like.new_empty(B, 4 * H), like.new_empty(B, H)
        self.views = gate_views(self.gates)
        self.cells = [(self.V[:, :1 + (i + 1) * H], gate_mats[i], self.V[:, 1 + i * H:1 + (i + 1) * H])
                      for i in range(L)]
        self.theta = like.new_empty(B, 3 * K)
        self.frame_values = like.new_empty(tier.n_freq, B, 1)
        self.thetas = None

    @staticmethod
    def per_bin(values):
        """(B, F, ...) -> F tensors (B, ...), contiguous (one per bin)."""
        return values.transpose(0, 1).contiguous().unbind(0)

    def frame_gates(self, stacks, freq_base):
        """Each bin's gate pre-activations of each layer before V enters: F x L (B, 4H)."""
        per_layer = [self.per_bin(torch.matmul(add + freq_base, a).add_(bias))
                     for add, a, bias in zip(stacks, self.gate_in, self.gate_bias)]
        return list(zip(*per_layer))

    def head_bias(self, freq_base):
        """The head's per-frame bias (B, F, 3K) before V enters."""
        return torch.matmul(freq_base, self.head_w).add_(self.head_out_bias).expand(
            self.batch_size, self.n_freq, self.head_out_bias.shape[-1])

    def _advance(self, gates_of_bin):
        """Every layer's frequency GRU one bin up, from the value of the bin below in V."""
        for pre, (inputs, mat, g) in zip(gates_of_bin, self.cells):
            torch.addmm(pre, inputs, mat, out=self.gates)
            gru_update(self.views, g, self.n, g)

    def sample_frame(self, frame_gates, head_bias, normal):
        """One frame's values (B, F): per bin the GRUs, the head, and a draw of the GMM
        (`gmm_sample` with the frame's noise folded in: Gumbel in ``head_bias``, ``normal``
        per bin scaled by the temperature; None: the most likely component's mean)."""
        K, theta = self.components, self.theta
        mu, log_std, logit = theta[:, :K], theta[:, K:2 * K], theta[:, 2 * K:]
        value_views = self.frame_values.unbind(0)
        self.V.zero_()  # x[t, -1] = 0 and the initial states of the frequency GRUs
        for f in range(self.n_freq):
            self._advance(frame_gates[f])
            torch.addmm(head_bias[f], self.V, self.head_mat, out=theta)
            k = torch.argmax(logit, 1, keepdim=True)
            if normal is not None:
                std = torch.gather(log_std, 1, k).clamp_(LOG_STD_MIN, LOG_STD_MAX).exp_()
                torch.addcmul(torch.gather(mu, 1, k), std, normal[f], out=self.value_slot)
            else:
                torch.gather(mu, 1, k, out=self.value_slot)
            self.value_slot.clamp_(-VALUE_LIMIT, VALUE_LIMIT)
            value_views[f].copy_(self.value_slot)
        return self.frame_values.view(self.n_freq, self.batch_size).t()

    def score_frame(self, frame_gates, head_bias, target):
        """log p (B, F) of one given frame target (B, F): per bin the GRUs and the head, the
        bin's given value entering V for the next."""
        if self.thetas is None:
            self.thetas = self.theta.new_empty(self.n_freq, self.batch_size, self.theta.shape[-1])
        target_views = target.t().unsqueeze(-1).unbind(0)
        theta_views = self.thetas.unbind(0)
        self.V.zero_()
        for f in range(self.n_freq):
            self._advance(frame_gates[f])
            torch.addmm(head_bias[f], self.V, self.head_mat, out=theta_views[f])
            self.value_slot.copy_(target_views[f])
        return gmm_log_prob(self.thetas.transpose(0, 1), target)


class MelNet(nn.Module):
    """All tiers. `tiers[k - 1]` is tier k (1 = coarsest); train one with `tier_nll`/`forward`."""

    def __init__(self, config: MelNetConfig):
        super().__init__()
        self.config = config
        G, n = config.tiers, config.n_mels
        # frequency sizes do not depend on the number of frames
        shapes = tier_shapes(time_factor(G), n, G)
        self.n_freq = {k: shapes[k][1] for k in range(1, G + 1)}
        self.n_freq_lower = {k: shapes[-k][1] for k in range(2, G + 1)}
        self.tiers = nn.ModuleList(
            Tier(self.n_freq[k], self.n_freq_lower.get(k, 0), config.layers[k - 1],
                 config.hidden_size, config.gmm_components, conditioned=k > 1)
            for k in range(1, G + 1))

    @property
    def time_factor(self) -> int:
        return time_factor(self.config.tiers)

    def tier_chunk(self, k: int, chunk_frames: int | None = None) -> int:
        """Tier k's chunk in its own frames, for a full-resolution chunk of `chunk_frames`."""
        chunk = self.config.chunk_frames if chunk_frames is None else chunk_frames
        return chunk // tier_time_ratio(k, self.config.tiers)

    def initial_state(self, batch_size: int, tiers=None) -> dict[int, dict[str, torch.Tensor]]:
        tiers = tiers or range(1, self.config.tiers + 1)
        return {k: self.tiers[k - 1].initial_state(batch_size) for k in tiers}

    def low_resolution(self, mel: torch.Tensor, tier: int) -> torch.Tensor:
        """x_<tier of a full-resolution spectrogram (B, T, n_mels): the input of `upsample`."""
        parts = split_tiers(mel, self.config.tiers)
        return parts[1] if tier == 1 else parts[-tier]

    # training ------------------------------------------------------------------

    def tier_nll(self, k, x, lower, state=None, reset=None):
        """NLL (B, T, F) of every value of a chunk of tier k's values x (B, T, F) given x_<k.

        Returns (nll, new_state). `state` None or reset True: initial states.
        """
        tier = self.tiers[k - 1]
        if state is None:
            state = tier.initial_state(x.shape[0])
            reset = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        elif reset is None:
            reset = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        theta, state = tier(x, lower, state, reset.to(torch.bool))
        return -gmm_log_prob(theta, x), state

    def forward(self, mel, state=None, reset=None, mask=None, tiers=None):
        """Loss of a chunk of full-resolution spectrograms: the training step.

        mel (B, T, n_mels); state: {k: tier state} from the previous chunk or
        None; reset (B,) bool, True on first chunks; mask (B,) or (B, T), 0 on
        empty slots / padded frames; tiers: the tiers to train (default all).
        T is zero-padded (and masked) to a multiple of `time_factor`.
        Returns (loss, new_state, stats): loss = sum over trained tiers of the
        mean NLL per value; stats {"nll_tier{k}": float tensor}.
        """
        B, T, _ = mel.shape
        tiers = list(tiers or range(1, self.config.tiers + 1))
        if mask is None:
            mask = mel.new_ones(B, T)
        mask = mask.to(mel.dtype)
        if mask.dim() == 1:
            mask = mask.unsqueeze(1).expand(B, T)
        pad = (-T) % self.time_factor
        if pad:
            mel, mask = F.pad(mel, (0, 0, 0, pad)), F.pad(mask, (0, pad))
        state = state or {}
        if reset is None:
            reset = torch.zeros(B, dtype=torch.bool, device=mel.device)
        values = split_tiers(mel, self.config.tiers)
        weights = split_tiers(mask.unsqueeze(-1).expand_as(mel), self.config.tiers)
        loss, new_state, stats = 0.0, {}, {}
        for k in tiers:
            nll, new_state[k] = self.tier_nll(k, values[k], values.get(-k), state.get(k), reset)
            w = weights[k]
            tier_loss = (nll * w).sum() / w.sum().clamp(min=1.0)
            loss = loss + tier_loss
            stats[f"nll_tier{k}"] = tier_loss.detach()
        return loss, new_state, stats

    # sampling --------------------------------------------------------------------

    @torch.no_grad()
    def upsample(self, lower: torch.Tensor, start_tier: int, frames: int,
                 temperature: float | None = None, generator: torch.Generator | None = None,
                 return_tiers: bool = False, threads: int | None = 1):
        """Generate tiers start_tier..G on top of a given x_<start_tier (B, T', F').

        `frames`: full-resolution length (the output is (B, frames, n_mels));
        `lower` must have the shape of x_<start_tier for it (`low_resolution`).
        With return_tiers, also returns {k: spectrogram after tier k} for plots.
        `threads`: CPU intra-op threads while generating (see `generation_threads`).
        """
        G = self.config.tiers
        temperature = self.config.sample_temperature if temperature is None else temperature
        shapes = tier_shapes(frames, self.config.n_mels, G)
        expected = shapes[1] if start_tier == 1 else shapes[-start_tier]
        if start_tier > 1 and tuple(lower.shape[1:]) != expected:
            raise ValueError(f"x_<{start_tier} must be (B, {expected[0]}, {expected[1]}) "
                             f"for {frames} frames, got {tuple(lower.shape)}")
        x, stages = lower, {}
        with generation_threads(lower.device, threads=threads):
            for k in range(start_tier, G + 1):
                values = self.tiers[k - 1].generate(shapes[k][0], x if k > 1 else None,
                                                    x.shape[0], self.tier_chunk(k), temperature,
                                                    generator=generator)
                x = values if k == 1 else interleave(x, values, split_axis(k))
                stages[k] = x
        return (x, stages) if return_tiers else x

    @torch.no_grad()
    def sample(self, batch_size: int, frames: int, temperature: float | None = None,
               generator: torch.Generator | None = None, return_tiers: bool = False,
               threads: int | None = 1):
        """Full multiscale generation: (B, frames, n_mels), tier 1 unconditional."""
        device = self.tiers[0].head.weight.device
        empty = torch.zeros(batch_size, 0, 0, device=device)
        return self.upsample(empty, 1, frames, temperature, generator, return_tiers, threads)

    @torch.no_grad()
    def tier_log_likelihood(self, k: int, x: torch.Tensor, lower: torch.Tensor | None,
                            chunk_frames: int | None = None) -> torch.Tensor:
        """log p of tier k's values x (B, T, F) given x_<k, computed by the cached sampling path."""
        _, log_likelihood = self.tiers[k - 1].generate(
            x.shape[1], lower, x.shape[0], self.tier_chunk(k, chunk_frames), target=x)
        return log_likelihood


def tier_time_ratio(k: int, tiers: int) -> int:
    """Full-resolution frames per frame of tier k."""
    return 2 ** sum(1 for j in range(max(k, 2), tiers + 1) if split_axis(j) == TIME)

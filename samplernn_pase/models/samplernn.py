"""SampleRNN: multi-tier recurrent waveform model, conditioned on speaker + content.

Tiers. The config lists ratios bottom tier first, as the seed does:
``ratios = [20, 4]`` is a tier of 20-sample frames (upsampled 20 times to the
samples) under a tier of 80-sample frames (upsampled 4 times to the tier
below), and the sample level sees the last 20 codes. Inside the model tiers
are numbered from the top: ``config.tier_ratios = [r_0, ..., r_{K-1}]`` gives
frame sizes ``fs_i = r_i * ... * r_{K-1}`` (80 and 20). Tier i reads the previous frame of ``fs_i`` samples, runs a GRU once per frame
and upsamples its output by ``r_i`` with a transposed convolution, giving one
vector per frame of the tier below (the bottom tier: one per sample). The
sample-level MLP predicts each mu-law code from the bottom tier's vector and
the embeddings of the previous ``fs_{K-1}`` codes (a convolution whose kernel
spans them). Every tier and the MLP also receive the conditioning: a mix of the
speaker (embedding table, or a projected precomputed vector such as PASE) and
the content features of the current top-tier frame (one conditioning frame
per top-tier frame, so ``prod(ratios)`` must equal the feature hop length).

Input layout of one chunk of n frames (``frame_size = fs_0``):
``input_samples_q`` (B, frame_size + n * frame_size) int64 codes, the first
frame being the look-back (the previous frame, or silence); the targets are
``input_samples_q[:, frame_size:]``.

Training is truncated BPTT: each tier's GRU starts from its learnable ``h0`` on
rows whose ``reset`` flag is set and from the detached carried state on the
others, chosen per row because slots start utterances at different times.
"""
import functools
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from samplernn_pase.audio.excitation import highpass_step, linear_prediction, predictor_sum
from samplernn_pase.audio.mulaw import mulaw_decode, mulaw_encode, mulaw_zero
from samplernn_pase.models.recurrent import GRUCell, gate_buffer, generation_threads, input_order, run_gru
from samplernn_pase.models.section import ModelSection

CONDITIONING_KEYS = ("acoustic", "linguistic_categorical", "linguistic_real", "lpc", "source", "harmonic",
                     "aperiodic", "excitation_scale")


@dataclass
class SampleRNNConfig(ModelSection):
    ratios: list = field(default_factory=lambda: [20, 4])
    rnn_layers: object = 1              # int, or one per tier (bottom first)
    rnn_hidden_size: object = 1024      # int, or one per tier (bottom first)
    q_levels: int = 256
    embedding_size: int = 256           # mu-law code embedding of the sample level
    mlp_layers: int = 1                 # hidden layers of the sample-level MLP (the seed: 1)
    conditioning: str = "linguistic_lf0"
    conds_size: int = 50                # output of the conditioning mixer
    speaker_embedding_size: int = 15
    speaker_vector_size: int = 0        # > 0: speakers are given as float vectors
    linguistic_embedding_size: int = 15  # width of each of the four shared linguistic tables
    lpc_order: int = 0                  # > 0: the sample level models the residual of a linear
                                        # predictor of this order (acoustic conditioning only)
    harmonic_source: bool = False       # a pulse train at F0 enters the sample level
    source_context: int = 5             # samples of the source on each side of the predicted one
    residual_highpass: float | None = 0.9  # lpc_order: generation shapes the sampled residual by
                                        # (1 - z^-1) / (1 - a z^-1); None: off (issue 23)
    harmonic_envelope: bool = True      # lpc_order + harmonic_source: at synthesis each harmonic's
                                        # amplitude follows the mel-cepstrum's envelope (issue 23)
    excitation_gain: bool = False       # lpc_order (else ignored): the sample level draws the excitation
                                        # divided by its expected RMS in the frame, from the features
                                        # (issue 23)
    # from the data, not the user
    num_speakers: int = 1
    acoustic_dim: int = 43
    linguistic_table_sizes: list = field(default_factory=list)    # vocabulary size of each shared table
    linguistic_column_tables: list = field(default_factory=list)  # table of each categorical column
    linguistic_real_dim: int = 0
    # `from_dict(section, **data)`: the data-derived fields above come as keywords.
    runner_settings = ("conds_speaker_type", "pase_experiment", "pase_epoch", "pase_seed_seconds")

    def __post_init__(self):
        tiers = len(self.ratios)
        self.ratios = [int(r) for r in self.ratios]
        for name in ("rnn_layers", "rnn_hidden_size"):
            value = getattr(self, name)
            setattr(self, name, [int(value)] * tiers if isinstance(value, (int, float)) else [int(v) for v in value])
        self.linguistic_table_sizes = [int(v) for v in self.linguistic_table_sizes]
        self.linguistic_column_tables = [int(t) for t in self.linguistic_column_tables]
        self.lpc_order, self.source_context = int(self.lpc_order), int(self.source_context)
        super().__post_init__()

    def problems(self) -> list[str]:
        """Rules between fields (one field's type and range: schema/model_samplernn.json)."""
        tiers, problems = len(self.ratios), []
        for name in ("rnn_layers", "rnn_hidden_size"):
            if len(getattr(self, name)) != tiers:
                problems.append(f"model.{name}: one value for all tiers or one per tier ({tiers} "
                                f"for ratios {self.ratios}), got {getattr(self, name)}")
        if self.lpc_order >= self.frame_size:   # the look-back frame holds its lags
            problems.append(f"model.lpc_order: must be 0 (off) or 1..{self.frame_size - 1} (below the "
                            f"top tier's frame of prod(ratios) = {self.frame_size}), got {self.lpc_order}")
        if self.lpc_order and self.conditioning != "acoustic":
            problems.append(f"model.lpc_order: {self.lpc_order} needs model.conditioning \"acoustic\" (the "
                            f"predictor comes from the frames' mel-cepstrum), not {self.conditioning!r}")
        if self.harmonic_source and self.conditioning == "linguistic":
            problems.append("model.harmonic_source: needs F0, model.conditioning \"acoustic\" or "
                            "\"linguistic_lf0\", not \"linguistic\"")
        if any(not 0 <= t < len(self.linguistic_table_sizes) for t in self.linguistic_column_tables):
            problems.append(f"linguistic_column_tables {self.linguistic_column_tables} index tables "
                            f"that do not exist ({len(self.linguistic_table_sizes)} tables)")
        return problems

    @property
    def scaled_excitation(self) -> bool:
        """`excitation_gain` where it applies: a predictor's excitation (``lpc_order`` > 0)."""
        return bool(self.excitation_gain and self.lpc_order)

    # The config lists tiers bottom first, as the seed does ([20, 4]: a tier of
    # 20-sample frames under a tier of 80-sample frames); the model builds them
    # top first.
    @property
    def tier_ratios(self):
        """Upsampling ratio of each frame tier, top tier first."""
        return self.ratios[::-1]

    @property
    def tier_rnn_layers(self):
        return self.rnn_layers[::-1]

    @property
    def tier_hidden_sizes(self):
        return self.rnn_hidden_size[::-1]

    @property
    def frame_sizes(self):
        """Frame size of each tier, top tier first ([80, 20] for ratios [20, 4])."""
        ratios = self.tier_ratios
        return [math.prod(ratios[i:]) for i in range(len(ratios))]

    @property
    def frame_size(self):
        return self.frame_sizes[0]

    def to_dict(self):
        return asdict(self)


class ConditioningMixer(nn.Module):
    """Speaker + content features of each frame -> one ``conds_size`` vector.

    Linguistic content as in the seed: each categorical column (the 10 symbol
    fields of an HTS label) is looked up in one of a few tables shared by the
    columns of one kind (phoneme for the quinphone, vowel, part of speech, ToBI
    tone), and the embeddings are concatenated with the real columns (and with
    log-F0 + voicing for ``linguistic_lf0``): 10 x 15 + 45 = 195 (197) wide with
    the seed's sizes, before the speaker's vector.
    """

    def __init__(self, config):
        super().__init__()
        self.conditioning = config.conditioning
        if config.speaker_vector_size > 0:
            self.speaker_projection = nn.Linear(config.speaker_vector_size, config.speaker_embedding_size)
        else:
            self.speaker_embedding = nn.Embedding(config.num_speakers, config.speaker_embedding_size)
        if config.conditioning == "acoustic":
            self.content_size = config.acoustic_dim
        else:
            self.linguistic_tables = nn.ModuleList(
                nn.Embedding(v, config.linguistic_embedding_size) for v in config.linguistic_table_sizes)
            self.column_tables = list(config.linguistic_column_tables)
            self.content_size = (len(self.column_tables) * config.linguistic_embedding_size
                                 + config.linguistic_real_dim + (2 if config.conditioning == "linguistic_lf0" else 0))
        self.mix = nn.Linear(config.speaker_embedding_size + self.content_size, config.conds_size)

    def forward(self, conds, speaker):
        """conds: dict of (B, n, .) features; speaker: int64 (B,) or float (B, D)."""
        if speaker.is_floating_point():
            if not hasattr(self, "speaker_projection"):
                raise ValueError("model was built for speaker indices (speaker_vector_size = 0)")
            speaker = self.speaker_projection(speaker)
        else:
            if not hasattr(self, "speaker_embedding"):
                raise ValueError("model was built for speaker vectors (speaker_vector_size > 0)")
            speaker = self.speaker_embedding(speaker)
        if self.conditioning == "acoustic":
            parts = [conds["acoustic"]]
        else:
            categorical = conds["linguistic_categorical"]
            parts = [self.linguistic_tables[table](categorical[..., column])
                     for column, table in enumerate(self.column_tables)]
            parts.append(conds["linguistic_real"])
            if self.conditioning == "linguistic_lf0":
                parts.append(conds["acoustic"][..., :2])   # log-F0 and voiced flag
        content = torch.cat([p.float() for p in parts], dim=-1)
        speaker = speaker[:, None, :].expand(-1, content.shape[1], -1)
        return self.mix(torch.cat([speaker, content], dim=-1))


class FrameTier(nn.Module):
    """GRU over frames of ``frame_size`` samples, upsampled ``ratio`` times."""

    def __init__(self, frame_size, ratio, hidden_size, layers, output_size, conds_size):
        super().__init__()
        self.frame_size, self.ratio = frame_size, ratio
        self.input_projection = weight_norm(nn.Linear(frame_size, hidden_size))
        self.conds_projection = weight_norm(nn.Linear(conds_size, hidden_size, bias=False))
        self.rnn = nn.GRU(hidden_size, hidden_size, layers, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(layers, hidden_size))
        self.upsample = weight_norm(nn.ConvTranspose1d(hidden_size, output_size, ratio, stride=ratio, bias=False))
        self.upsample_bias = nn.Parameter(torch.zeros(ratio, output_size))
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                for gate in param.data.chunk(3, dim=0):
                    nn.init.orthogonal_(gate)
            elif name.startswith("bias"):
                nn.init.zeros_(param)

    def upsample_matrix(self):
        """The transposed convolution's weight (H_in, H_out, r) as one (H_in, H_out * r) matrix
        (a view, no copy of the large weight): a frame's output is one product, in the
        convolution's own (H_out, r) layout."""
        weight = self.upsample.weight
        return weight.view(weight.shape[0], -1)

    def upsample_frames(self, output):
        """(B, n, H_in) -> (B, n * ratio, H_out): the transposed convolution as one
        matrix product."""
        batch, n, _ = output.shape
        up = (output @ self.upsample_matrix()).view(batch, n, -1, self.ratio)
        return up.transpose(2, 3).reshape(batch, n * self.ratio, -1) + self.upsample_bias.repeat(n, 1)

    def forward(self, frames, conds, upper, hidden):
        """frames (B, n, frame_size) float; conds (B, n0, C) per top frame (n = n0 * k);
        upper (B, n, H) or None; hidden (layers, B, H) -> ((B, n * ratio, H_out), hidden)."""
        batch, n, _ = frames.shape
        x = self.input_projection(frames)
        n0 = conds.shape[1]
        x = (x.view(batch, n0, n // n0, -1) + self.conds_projection(conds)[:, :, None]).view(batch, n, -1)
        if upper is not None:
            x = x + upper
        output, hidden = run_gru(self.rnn, x, hidden)
        return self.upsample_frames(output), hidden

    def generation(self, mixed):
        """This tier prepared for `TierStep.step`, one frame at a time; ``mixed`` (B, n, C) the
        conditioning of every top frame."""
        return TierStep(self, mixed)


class TierStep:
    """`FrameTier.forward` one frame at a time (generation). Everything that does not depend
    on the codes is computed ahead for all frames: the first GRU layer's gate buffer
    (`recurrent.gate_views` layout) from the conditioning and the biases, and the input
    projection folded into the gates (a frame_size x 4H matrix). Per frame: that product
    on the previous frame's samples, the gates from the tier above, the GRU step and the
    upsampling (`FrameTier.upsample_matrix`)."""

    def __init__(self, tier, mixed):
        rnn = tier.rnn
        self.frame_size, self.ratio = tier.frame_size, tier.ratio
        batch, frames = mixed.shape[:2]
        w_ih = rnn.weight_ih_l0                                                   # (3H, H)
        base = tier.input_projection.bias + tier.conds_projection(mixed)          # (B, n, H)
        self.const_gates = gate_buffer(F.linear(base, w_ih, rnn.bias_ih_l0), rnn.bias_hh_l0)  # (B, n, 4H)
        frame_gates = input_order(w_ih @ tier.input_projection.weight).t()        # (frame, 3H)
        self.frame_gates = F.pad(frame_gates, (0, rnn.hidden_size))               # (frame, 4H): not n_h
        self.upper_gates_weight = w_ih.t()                                        # for the tier above
        self.cells = [GRUCell(rnn.weight_hh_l0, batch)]    # the input part filled by `step`
        self.cells += [GRUCell.of(rnn, batch, layer) for layer in range(1, rnn.num_layers)]
        self.up_weight = tier.upsample_matrix()                                   # (H, H_out * r)
        bias = tier.upsample_bias.t().reshape(-1)                                 # (H_out * r)
        self.up_bias = bias.expand(batch, frames, -1)                             # (B, n, H_out * r)

    def add_bias(self, per_frame):
        """Adds a term (B, n, H_out) of every frame to each of its upsampled outputs (the
        sample level's conditioning, folded into the bottom tier's bias)."""
        batch, frames = per_frame.shape[:2]
        self.up_bias = (self.up_bias.view(batch, frames, -1, self.ratio)
                        + per_frame[..., None]).reshape(batch, frames, -1)

    def upper_input(self, upper):
        """The input gates (B, r, 3H) (input part order) of the tier above's upsampled output
        upper (B, r, H) for the r frames of this tier under its current frame."""
        return input_order(torch.matmul(upper, self.upper_gates_weight), -1)

    def step(self, previous, frame, upper_gates, hidden):
        """One frame: previous (B, frame_size) the decoded samples of the frame before, frame
        the index of the current top frame, upper_gates (B, 3H) from `upper_input` of the tier
        above (None at the top), hidden a list of (B, H) per layer, updated. Returns the
        upsampled output (B, r, H_out)."""
        cell = self.cells[0]
        torch.addmm(self.const_gates[:, frame], previous, self.frame_gates, out=cell.gates)
        if upper_gates is not None:
            cell.input_part.add_(upper_gates)
        x = hidden[0] = cell.step(hidden[0])
        for layer in range(1, len(self.cells)):
            x = hidden[layer] = self.cells[layer](x, hidden[layer])
        # (B, H_out, r) in the transposed convolution's own layout, viewed as (B, r, H_out)
        up = torch.addmm(self.up_bias[:, frame], x, self.up_weight).view(x.shape[0], -1, self.ratio)
        return up.transpose(1, 2)


class SampleMLP(nn.Module):
    """Predicts each code from the previous ``frame_size`` codes and the tier above.

    Its first layer is a convolution over the embeddings of the previous codes;
    since embedding and convolution are both linear, it equals a sum of
    ``frame_size`` rows of the table ``embedding . weight`` (one row per tap and
    code), which is how it is computed: a step costs O(frame_size * H).
    """

    def __init__(self, frame_size, hidden_size, q_levels, embedding_size, layers, conds_size,
                 lpc_order=0, source_width=0):
        super().__init__()
        self.frame_size, self.q_levels = frame_size, q_levels
        if lpc_order:    # the linear prediction of the sample, as a mu-law code (as LPCNet feeds it)
            self.prediction_embedding = nn.Embedding(q_levels, hidden_size)
        if source_width:  # the harmonic source around the sample
            self.source_projection = nn.Linear(source_width, hidden_size)
        self.embedding = nn.Embedding(q_levels, embedding_size)
        self.input_conv = weight_norm(nn.Conv1d(embedding_size, hidden_size, frame_size, bias=False))
        self.conds_projection = weight_norm(nn.Linear(conds_size, hidden_size))
        self.hidden = nn.ModuleList(weight_norm(nn.Linear(hidden_size, hidden_size)) for _ in range(layers))
        self.output = weight_norm(nn.Linear(hidden_size, q_levels))
        nn.init.kaiming_uniform_(self.input_conv.parametrizations.weight.original1, nonlinearity="relu")

    def excitation(self, prediction, source):
        """The prediction's (B, T) and the source windows' (B, T, S) terms of the first layer,
        (B, T, H); None when the model has neither."""
        terms = []
        if prediction is not None:
            terms.append(self.prediction_embedding(mulaw_encode(prediction, self.q_levels)))
        if source is not None:
            terms.append(self.source_projection(source))
        return sum(terms) if terms else None

    def input_table(self):
        """(frame_size * q_levels, H): row ``j * q + v`` = tap j applied to code v."""
        table = torch.einsum("ve,hej->jvh", self.embedding.weight, self.input_conv.weight)
        return table.reshape(self.frame_size * self.q_levels, -1)

    def tap_offsets(self, device):
        return torch.arange(self.frame_size, device=device) * self.q_levels

    def head_weights(self):
        """((weight, bias) of each hidden layer, (weight, bias) of the output)."""
        return [(layer.weight, layer.bias) for layer in self.hidden], (self.output.weight, self.output.bias)

    def head(self, x, weights=None, inplace=False):
        """Logits (..., q) from the first layer's pre-activation x (..., H); ``weights`` from
        `head_weights` (evaluated once for a generation), ``inplace`` for generation."""
        hidden, output = weights or self.head_weights()
        x = F.relu(x, inplace=inplace)
        for weight, bias in hidden:
            x = F.relu(F.linear(x, weight, bias), inplace=inplace)
        return F.linear(x, *output)

    def forward(self, codes, conds, upper):
        """codes (B, T + frame_size - 1) int64; conds (B, n0, C); upper (B, T, H) -> (B, T, q)."""
        batch, length, hidden = upper.shape
        windows = codes.unfold(1, self.frame_size, 1) + self.tap_offsets(codes.device)
        x = F.embedding_bag(windows.reshape(-1, self.frame_size), self.input_table(), mode="sum")
        n0 = conds.shape[1]
        x = (x.view(batch, n0, length // n0, hidden) + upper.view(batch, n0, length // n0, hidden)
             + self.conds_projection(conds)[:, :, None])
        return self.head(x.view(batch, length, hidden))


class SampleRNN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        sizes, hidden = config.frame_sizes, config.tier_hidden_sizes
        self.mixer = ConditioningMixer(config)
        self.tiers = nn.ModuleList(
            FrameTier(sizes[i], config.tier_ratios[i], hidden[i], config.tier_rnn_layers[i],
                      hidden[i + 1] if i + 1 < len(sizes) else hidden[-1], config.conds_size)
            for i in range(len(sizes)))
        self.sample_mlp = SampleMLP(sizes[-1], hidden[-1], config.q_levels, config.embedding_size,
                                    config.mlp_layers, config.conds_size, config.lpc_order,
                                    2 * config.source_context + 1 if config.harmonic_source else 0)
        self.register_buffer("code_values", mulaw_decode(torch.arange(config.q_levels), config.q_levels),
                             persistent=False)

    @property
    def frame_size(self):
        return self.config.frame_size

    def initial_hidden(self, batch_size):
        """The learnable initial states, one (layers, B, H) tensor per tier."""
        return [tier.h0[:, None, :].expand(-1, batch_size, -1).contiguous() for tier in self.tiers]

    def _start_state(self, tier, hidden, reset, batch_size):
        h0 = tier.h0[:, None, :].expand(-1, batch_size, -1)
        if hidden is None:
            return h0.contiguous()
        # torch.where keeps h0 in the graph (DDP sees it used) with gradient only on reset rows
        return torch.where(reset[None, :, None], h0, hidden.detach()).contiguous()

    def forward(self, input_samples_q, conds, speaker, hidden=None, reset=None):
        """Teacher-forced logits of every target sample of a chunk.

        input_samples_q: int64 (B, frame_size + T), T a multiple of frame_size;
        conds: dict of (B, T / frame_size, .) features (see ``CONDITIONING_KEYS``);
        speaker: int64 (B,) or float (B, speaker_vector_size);
        hidden: list per tier of (layers, B, H), or None (all rows start);
        reset: bool (B,), True where the chunk starts an utterance.
        Returns logits (B, T, q_levels) and the new hidden state (detached).
        """
        batch, total = input_samples_q.shape
        lookback = self.frame_size
        length = total - lookback
        if length <= 0 or length % lookback:
            raise ValueError(f"input of {total} samples is not (1 + n) frames of {lookback}")
        if reset is None:
            reset = torch.ones(batch, dtype=torch.bool, device=input_samples_q.device)
        excitation = self.sample_mlp.excitation(self.prediction(input_samples_q, conds),
                                                self._source(conds, length))
        conds = self.mixer(conds, speaker)
        values = self.code_values[input_samples_q]
        upper, new_hidden = None, []
        for i, tier in enumerate(self.tiers):
            fs = tier.frame_size
            frames = values[:, lookback - fs:lookback - fs + length].reshape(batch, length // fs, fs)
            state = self._start_state(tier, None if hidden is None else hidden[i], reset, batch)
            upper, state = tier(frames, conds, upper, state)
            new_hidden.append(state.detach())
        if excitation is not None:
            upper = upper + excitation
        k = self.sample_mlp.frame_size
        logits = self.sample_mlp(input_samples_q[:, lookback - k:total - 1], conds, upper)
        return logits, new_hidden

    def prediction(self, input_samples_q, conds):
        """(B, T) float linear prediction ``sum_k c_k x[t - k]`` of every target sample from the
        decoded codes before it, with the predictor ``conds["lpc"]`` (B, n, order) of its frame,
        plus with ``harmonic_source`` the periodic part of the excitation ``conds["harmonic"]``
        (B, n, frame_size); None without ``lpc_order``."""
        if not self.config.lpc_order:
            return None
        lpc = conds["lpc"].float()
        values = self.code_values[input_samples_q[:, self.frame_size - lpc.shape[-1]:]]
        prediction = linear_prediction(values, lpc, self.frame_size)
        if self.config.harmonic_source:
            prediction = prediction + conds["harmonic"].float().reshape(prediction.shape)
        return prediction

    def _source(self, conds, length):
        if not self.config.harmonic_source:
            return None
        source = conds["source"].float()                                   # (B, n, frame_size, S)
        return source.reshape(source.shape[0], length, source.shape[-1])

    def targets(self, input_samples_q, conds):
        """The codes the output predicts, (B, T): the samples' own codes, or with ``lpc_order``
        the mu-law codes of the prediction residual x[t] - x_hat[t]: those of
        ``conds["aperiodic"]`` (B, n, frame_size) where the data gives it (the residual of the
        unquantized recording less its periodic part, data/samplernn_source.py), else read off
        the decoded codes (teacher forcing on generated codes, as generation reports them).
        With ``excitation_gain`` the residual is divided by its frame's `excitation_scale` first."""
        targets = input_samples_q[:, self.frame_size:]
        scale = self.frame_scales(conds)
        if scale is not None:                                              # every sample its frame's
            scale = scale[..., None].expand(*scale.shape, self.frame_size).reshape(targets.shape)
        if self.config.lpc_order and "aperiodic" in conds:
            return self.excitation_codes(conds["aperiodic"].float().reshape(targets.shape), scale)
        prediction = self.prediction(input_samples_q, conds)
        return targets if prediction is None else self.residual_codes(targets, prediction, scale)

    def frame_scales(self, conds):
        """With ``excitation_gain``, each frame's `excitation_scale` (its expected aperiodic RMS
        over EXCITATION_RMS), float32 (B, n); else None. A chunk's padding frames (scale 0,
        masked out of the loss) get 1."""
        if not self.config.scaled_excitation:
            return None
        scale = conds["excitation_scale"].float()[..., 0]
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def excitation_codes(self, excitation, scale=None):
        """The mu-law codes of an excitation, divided by ``scale`` (with ``excitation_gain``)."""
        return mulaw_encode(excitation if scale is None else excitation / scale, self.config.q_levels)

    def residual_codes(self, codes, prediction, scale=None):
        """The codes of x - x_hat: the samples' decoded ``codes`` minus their ``prediction``
        (`excitation_codes`)."""
        return self.excitation_codes(self.code_values[codes] - prediction, scale)

    def loss(self, input_samples_q, conds, speaker, hidden=None, reset=None, mask=None):
        """Mean NLL in bits per sample over the rows in ``mask`` -> (loss, new_hidden).

        An all-empty batch (DDP padding) gives a zero loss that still has a graph.
        """
        logits, new_hidden = self(input_samples_q, conds, speaker, hidden, reset)
        return nll_bits(logits, self.targets(input_samples_q, conds), mask), new_hidden

    @torch.no_grad()
    def log_prob(self, samples_q, conds, speaker, chunk_frames=None):
        """Teacher-forced log-probability (nats) of each code of whole utterances.

        samples_q: int64 (B, n * frame_size) from the first sample (silence before);
        conds: (B, n, .). ``chunk_frames`` bounds memory by carrying the state
        across chunks, which gives the same values. Returns float (B, n * frame_size).
        """
        fs = self.frame_size
        batch, length = samples_q.shape
        frames = length // fs
        chunk_frames = chunk_frames or frames
        silence = torch.full((batch, fs), mulaw_zero(self.config.q_levels),
                             dtype=samples_q.dtype, device=samples_q.device)
        codes = torch.cat([silence, samples_q], dim=1)
        hidden, out = None, []
        for start in range(0, frames, chunk_frames):
            stop = min(start + chunk_frames, frames)
            chunk_conds = {k: v[:, start:stop] for k, v in conds.items()}
            chunk = codes[:, start * fs:(stop + 1) * fs]
            logits, hidden = self(chunk, chunk_conds, speaker, hidden,
                                  torch.full((batch,), start == 0, device=samples_q.device))
            targets = self.targets(chunk, chunk_conds)
            out.append(torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0])
        return torch.cat(out, dim=1)

    @torch.inference_mode()
    def generate(self, conds, speaker, temperature=1.0, generator=None, return_log_probs=False, compiled=None,
                 return_signal=False):
        """Samples B utterances at once, one code at a time, without recomputation.

        conds: dict of (B, n, .) features; speaker: int64 (B,) or float (B, D).
        Sampling is from softmax(logits / temperature) (argmax when temperature
        is 0); ``temperature`` is a number, or a float (B, n) tensor of positive
        temperatures, one per row and frame (`sampling_temperatures`). Returns int64 codes (B, n * frame_size) (``mulaw_decode`` gives
        audio) and, with ``return_log_probs``, their log-probabilities under the
        model at temperature 1, float (B, n * frame_size), and with ``return_signal``
        the float32 waveform (B, n * frame_size): with ``lpc_order`` the unquantized
        signal that generation continues (`_VocoderStep`), whose mu-law codes are the
        samples, else the decoded samples. The codes are the network's view of the
        signal; the signal is the vocoder's output, without the 8-bit rounding noise
        (which alone costs a recording 3.5 dB of mel-cepstral distortion).

        Each tier steps its GRU once per frame and keeps its state. Everything
        that does not depend on the codes being generated is computed ahead,
        for many frames in one matrix product: the conditioning terms of every
        tier's input gates, and the input gates that a tier receives from the
        tier above (once per frame of the tier above). What is left per step is
        the recurrent product, the upsampling, and at the sample level the sum
        of ``frame_size`` rows of the precomputed embedding-convolution table
        followed by the MLP.

        The loop over samples is `_generate_steps` (the definition; PyTorch calls
        from Python) or, on the CPU where numba imports, the same loop compiled
        (`samplernn_kernel`, 7-8x faster for one stream at the demo size): ``compiled`` None
        chooses so (see `use_kernel`), True / False force one. Both draw the same
        noise and give the same codes. On the CPU the kernel splits the streams over
        the threads torch had on entry.
        """
        any_cond = next(iter(conds.values()))
        batch, frames = any_cond.shape[:2]
        device = any_cond.device
        fs0, q = self.frame_size, self.config.q_levels
        length = frames * fs0
        mlp = self.sample_mlp
        with parametrize.cached():
            mixed = self.mixer(conds, speaker)                                   # (B, n, C)
            tiers = [tier.generation(mixed) for tier in self.tiers]
            # the sample level's conditioning, added once per bottom frame to its upsampled output
            tiers[-1].add_bias(mlp.conds_projection(mixed))                      # (B, n, H)
            table = mlp.input_table().contiguous()
            head = mlp.head_weights()
            vocoder = _VocoderStep(self, conds)

        codes = torch.full((batch, fs0 + length), mulaw_zero(q), dtype=torch.int64, device=device)
        log_probs = torch.empty(batch, length, device=device) if return_log_probs else None
        hidden = [list(h.unbind(0)) for h in self.initial_hidden(batch)]
        temperature = per_frame_temperatures(temperature, batch, frames, device)
        threads = torch.get_num_threads()
        with generation_threads(device, rows=batch):
            if use_kernel(device, compiled):
                noise = (lambda frame: gumbel_noise(batch, fs0, q, device, generator)) \
                    if temperature is not None else None
                kernel_module().run(tiers, codes, hidden, table, head, temperature, noise, log_probs, vocoder,
                                    threads=threads)
            else:
                self._generate_steps(tiers, codes, hidden, table, head, temperature, generator, log_probs,
                                     vocoder)
        samples = codes[:, fs0:].clone()
        out = (samples,) + ((log_probs,) if return_log_probs else ())
        if return_signal:
            signal = vocoder.signal[:, fs0:].float() if vocoder.signal is not None else self.code_values[samples]
            out += (signal,)
        return out if len(out) > 1 else samples

    def _generate_steps(self, tiers, codes, hidden, table, head, temperature, generator, log_probs,
                        vocoder):
        """The loop over samples: each tier's `TierStep.step` at the start of its frames, then
        the sample level (`SampleMLP.forward` for one sample) and the draw."""
        batch, device = codes.shape[0], codes.device
        fs0, q = self.frame_size, self.config.q_levels
        length = codes.shape[1] - fs0
        k = self.sample_mlp.frame_size
        offsets = self.sample_mlp.tap_offsets(device)
        rows = torch.arange(batch, device=device)
        upper_gates = None      # (B, r, 3H) input part from the tier above, for its current frame
        ups = None              # (B, r, H) the bottom tier's upsampled output for its current frame
        prediction = None       # (B,) the linear prediction of the sample (lpc_order > 0)
        for t in range(length):
            p = fs0 + t
            frame = t // fs0
            if t % fs0 == 0 and temperature is not None:   # sampling noise for the whole top frame
                gumbel = gumbel_noise(batch, fs0, q, device, generator)
                scale = temperature[:, frame, None]
            for i, tier in enumerate(tiers):
                if t % tier.frame_size:
                    continue
                above = upper_gates[:, (t // tier.frame_size) % tiers[i - 1].ratio] if i > 0 else None
                up = tier.step(self.code_values[codes[:, p - tier.frame_size:p]], frame, above, hidden[i])
                if i + 1 < len(tiers):
                    upper_gates = tiers[i + 1].upper_input(up)
                else:
                    ups = up
            x = F.embedding_bag(codes[:, p - k:p] + offsets, table, mode="sum")
            x = x + ups[:, t % tiers[-1].ratio]
            if vocoder.active:
                prediction = vocoder.add_terms(x, codes, p, t)
            logits = self.sample_mlp.head(x, head, inplace=True)
            if temperature is not None:
                choice = torch.argmax(logits / scale + gumbel[:, t % fs0], dim=-1)
            else:
                choice = torch.argmax(logits, dim=-1)
            if prediction is not None:
                codes[:, p] = vocoder.sample_code(p, t, choice)
                # the residual code that teacher forcing reads off the emitted code (see
                # _VocoderStep: it differs from the sampled one by the filtered rounding errors)
                choice = vocoder.residual_code(codes[:, p], prediction, vocoder.scale_at(t))
            else:
                codes[:, p] = choice
            if log_probs is not None:
                log_probs[:, t] = torch.log_softmax(logits, -1)[rows, choice]


class _VocoderStep:
    """`SampleRNN.prediction` and `SampleMLP.excitation` one sample at a time: the predictor
    of every frame (reversed, to meet the last ``order`` decoded samples in time order, for
    `predictor_sum`) and the source's term of every sample of the current top frame,
    projected once per frame.

    The prediction runs twice. The network sees the prediction from the decoded codes,
    exactly as teacher forcing computes it (`SampleRNN.prediction`). The sample itself
    continues the unquantized signal: ``y[t] = sum_k c_k y[t - k] + harmonic[t] +
    residual[t]``, kept in float, and only its code is emitted. Predicting from the
    codes instead would feed every sample's mu-law rounding error back through the
    all-pole filter 1 / A(z), whose power gain is the prediction gain (15-30 dB on
    voiced speech): a noise floor that fills the gaps between the harmonics. Here the
    rounding error stays white at the level of the signal's own mu-law quantization,
    as in a recording; the residual code that teacher forcing reads off the emitted
    code (the sampled one plus A(z) applied to the rounding errors, which is what the
    training targets hold too) is the one whose log-probability generation reports.
    The unquantized signal is kept in float64: the filter lifts float32's rounding
    errors too, enough that two summation orders (this step and `samplernn_kernel`)
    would emit different codes at mu-law bin edges every few thousand samples."""

    def __init__(self, model, conds):
        mlp = model.sample_mlp
        self.code_values, self.q_levels = model.code_values, model.config.q_levels
        self.frame_size = model.frame_size
        self.lpc = conds["lpc"].float().flip(-1) if model.config.lpc_order else None    # (B, n, order)
        self.harmonic = conds["harmonic"].float() \
            if model.config.lpc_order and model.config.harmonic_source else None       # (B, n, fs)
        self.source = conds["source"].float() if model.config.harmonic_source else None  # (B, n, fs, S)
        self.prediction_table = mlp.prediction_embedding.weight if self.lpc is not None else None
        self.source_weights = (mlp.source_projection.weight, mlp.source_projection.bias) \
            if self.source is not None else None
        self.active = self.lpc is not None or self.source is not None
        # the residual's code as the model's targets define it (SampleRNN.targets)
        self.residual_code = model.residual_codes
        self.source_terms = None
        self.signal = None          # (B, look-back + length) the unquantized samples, float64
        self.continuation = None    # (B,) the prediction of the current sample from them
        self.highpass = model.config.residual_highpass
        self.scale = model.frame_scales(conds)                                 # (B, n) or None
        self.last_residual = self.last_excitation = 0.0   # the high-pass's state (silence before),
        # (B,) float64 once the first sample is drawn

    def add_terms(self, x, codes, p, t):
        """Adds the sample's excitation terms to the first layer's input ``x`` (B, H), in
        place; returns the prediction (B,) from the decoded codes, or None."""
        frame = t // self.frame_size
        prediction = None
        if self.lpc is not None:
            if self.signal is None:   # the look-back, as teacher forcing decodes it
                self.signal = self.code_values[codes].double()
            order = self.lpc.shape[-1]
            prediction = predictor_sum(self.code_values[codes[:, p - order:p]], self.lpc[:, frame])
            self.continuation = predictor_sum(self.signal[:, p - order:p], self.lpc[:, frame])
            if self.harmonic is not None:
                prediction = prediction + self.harmonic[:, frame, t % self.frame_size]
                self.continuation += self.harmonic[:, frame, t % self.frame_size]
            x += self.prediction_table[mulaw_encode(prediction, self.q_levels)]
        if self.source is not None:
            if t % self.frame_size == 0:
                self.source_terms = self.source_terms_of(frame)                         # (B, fs, H)
            x += self.source_terms[:, t % self.frame_size]
        return prediction

    def scale_at(self, t):
        """(B,) float32 `excitation_scale` of sample t's frame, or None (no `excitation_gain`)."""
        return None if self.scale is None else self.scale[:, t // self.frame_size]

    def source_terms_of(self, frames):
        """The source's terms of the first layer for the top frame(s) ``frames`` (an index or a
        slice): (B, fs, H) or (B, frames, fs, H)."""
        return F.linear(self.source[:, frames], *self.source_weights)

    def sample_code(self, p, t, residual_code):
        """The sample's code: the unquantized signal's continuation plus the excitation, kept
        (within [-1, 1]) as the signal's next sample, and quantized. The excitation is the
        decoded residual (times its frame's scale with ``excitation_gain``), high-passed with
        ``residual_highpass`` (its state carried from sample to sample): the network draws
        every residual sample with no memory of the ones it drew before, a white noise, while
        the recordings' voiced residual has little power below a few hundred Hz; 1 / A(z), whose gain is highest there, would lift that noise
        level with the fundamental, where a pitch tracker looks (issue 23, README)."""
        excitation = self.code_values[residual_code].double()    # in the signal's float64
        if self.scale is not None:
            excitation = excitation * self.scale_at(t).double()
        if self.highpass is not None:
            residual, excitation = excitation, highpass_step(excitation, self.last_residual,
                                                             self.last_excitation, self.highpass)
            self.last_residual, self.last_excitation = residual, excitation
        value = (self.continuation + excitation).clamp_(-1.0, 1.0)
        self.signal[:, p] = value
        return mulaw_encode(value, self.q_levels)


GENERATION_ENV = "SAMPLERNN_PASE_GENERATION"   # "python": the Python step; "compiled": the kernel


def use_kernel(device, compiled=None):
    """Whether `SampleRNN.generate` runs the compiled loop: ``compiled`` if given, else the
    environment variable GENERATION_ENV ("python" / "compiled"), else the kernel where it
    runs (CPU, numba importable); a GPU always runs the Python step."""
    if compiled is None:
        choice = os.environ.get(GENERATION_ENV, "auto").lower()
        if choice not in ("auto", "python", "compiled"):
            raise ValueError(f"{GENERATION_ENV}={choice!r}: expected auto, python or compiled")
        compiled = {"auto": None, "python": False, "compiled": True}[choice]
    if device.type != "cpu" or compiled is False:
        return False
    if compiled and kernel_module() is None:
        raise ValueError("compiled SampleRNN generation needs numba, which is not importable")
    return kernel_module() is not None


@functools.cache
def kernel_module():
    """`samplernn_kernel`, imported on first use (numba takes a second to import), or None
    where numba is not importable."""
    try:
        from samplernn_pase.models import samplernn_kernel
    except ImportError:
        return None
    return samplernn_kernel if samplernn_kernel.available() else None


def per_frame_temperatures(temperature, batch, frames, device):
    """The sampling temperature of every row and top frame, float32 (B, n), or None for the
    argmax (a temperature of 0)."""
    if not torch.is_tensor(temperature):
        if temperature == 0:
            return None
        temperature = torch.tensor(float(temperature))
    if not bool((temperature > 0).all()):
        raise ValueError("sampling temperatures must be positive (a single 0 takes the argmax)")
    return temperature.to(device=device, dtype=torch.float32).expand(batch, frames).contiguous()


def sampling_temperatures(voiced, temperature, unvoiced_temperature=None):
    """Per-frame temperatures from the frames' voicing, bool (B, n): ``temperature`` in voiced
    frames, ``unvoiced_temperature`` (None: the same) in the others.

    A temperature below 1 sharpens the residual's distribution, which takes the noise out of
    the gaps between the harmonics of voiced speech. In unvoiced frames the residual is the
    sound: a fricative's distribution is a peak at zero plus wide tails, and sharpening it
    leaves mostly the peak, so the fricative fades (on one demo run by 35 dB, every /s/ lost;
    README, issue 23). LPCNet likewise lowers the temperature by voicing."""
    if unvoiced_temperature is None:
        return temperature
    voiced_t = torch.tensor(float(temperature), dtype=torch.float32, device=voiced.device)
    return torch.where(voiced, voiced_t, torch.tensor(float(unvoiced_temperature), dtype=torch.float32,
                                                      device=voiced.device))


def gumbel_noise(batch, frame_size, q_levels, device, generator=None):
    """The sampling noise of one top frame, (B, frame_size, q) Gumbel(0, 1): argmax(logits /
    temperature + noise) samples from softmax(logits / temperature)."""
    uniform = torch.rand(batch, frame_size, q_levels, device=device, generator=generator)
    return -torch.log(-torch.log(uniform.clamp_(1e-10, 1.0)))


def nll_bits(logits, targets, mask=None):
    """Mean negative log-likelihood in bits per sample over the samples in ``mask``:
    (B,) selects rows, (B, T) samples (the padding after an utterance's end is left out)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")   # (B, T)
    if mask is None:
        return nll.mean() / math.log(2)
    if mask.dim() == 1:
        mask = mask[:, None].expand_as(nll)
    mask = mask.to(nll.dtype)
    return (nll * mask).sum() / (mask.sum().clamp(min=1) * math.log(2))


def unpack_batch(batch, device=None):
    """A ``StatefulLoader`` batch of ``SampleRNNSource`` chunks -> model arguments:
    (input_samples_q, conds, speaker, reset, mask), all on ``device``.

    ``mask`` is (B, T) over the target samples when the batch has a ``frame_mask``
    (the padded end of an utterance's last chunk is left out), else (B,) over rows."""
    def move(x):
        return x.to(device, non_blocking=True) if device is not None else x
    conds = {k: move(batch[k]) for k in CONDITIONING_KEYS if k in batch}
    speaker = batch["speaker_vector"] if "speaker_vector" in batch else batch["speaker_index"]
    mask = batch["mask"]
    if "frame_mask" in batch:
        frame_mask = batch["frame_mask"] & mask[:, None]
        frame_size = batch["input_samples_q"].shape[1] // (frame_mask.shape[1] + 1)
        mask = frame_mask.repeat_interleave(frame_size, dim=1)
    return (move(batch["input_samples_q"]), conds, move(speaker), move(batch["reset"]), move(mask))

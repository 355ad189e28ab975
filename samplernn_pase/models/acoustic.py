"""The front half of statistical parametric text-to-speech, as in Merlin: a duration model
(phones -> frames per phone) and an acoustic model (frames -> the 43 WORLD features).

The duration model is a small stack over the phones, `Tensor[B x P x D]` in and out:

    labels (symbols through the four shared tables, numbers) + speaker
      -> linear -> convolution over `conv_kernel` steps -> bidirectional GRU -> linear

The acoustic model reads the utterance at two rates: a phone encoder of the same shape (its
own weights) over the phones, whose output every frame of the phone receives, then a frame
decoder over the frames' 55 columns: linear -> `frame_conv_layers` residual convolutions
(dilations 1, 2, 4, ...) -> linear, plus a learned table of each speaker's features per phone
symbol (the trivial baseline's form, started at it by the runner). `phone_encoder: "conv"`
drops the phone encoder's GRU: each phone then sees `conv_kernel` phones, not the
sentence, which on a small corpus the GRU learns to recognize (it recalls the training
sentences' features instead of reading new ones; README, "New text, diagnosed").
`duration_encoder: "conv"` does the same for the duration model. `trajectory_points: K`
adds each phone's movement: K points of the features per phone, a linear map of its
encoding, interpolated linearly over the frame's position in the phone (the decoder
alone learned little of it: on its training utterances it explained 7-22 % of the
cepstra's (c1-c39) variance inside the phones, 20-44 % with K = 4).

Why this shape: a frame's features depend on the phones around it in both
directions (coarticulation, the phrase's declining F0), and the whole utterance
is known before synthesis, so the recurrence runs both ways, over the ~30 phones
rather than the ~500 frames (a frame-rate bidirectional GRU cost 35 s per step on
the 2-core CPU, 0.1 s this way). The dilated convolutions see 61 frames (0.3 s)
and give neighbouring frames neighbouring outputs: the features are continuous
across frames without the deltas + MLPG smoothing that a frame-wise feed-forward
network needs.

Losses: the duration model regresses frames / DURATION_SCALE by MSE, as Merlin
regresses normalized frame counts (log-durations fit the short phones at the
expense of the long ones, and lost to the per-symbol mean in frames); the acoustic model regresses the normalized features
by MSE, except the voiced flag, which is a logit under binary cross-entropy.
Padding never changes a sequence's output: the GRU runs on packed sequences and
the padded steps are zeroed before every convolution, as its own zero padding is.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .section import ModelSection

VUV_COLUMN = 1   # data/features.py: the voiced flag among the acoustic fields
POSITION_COLUMN = 1   # data/features.expand_linguistic: the frame's position in its phone, in (0, 1), never normalized
DURATION_SCALE = 10.0   # frames per unit of the duration model's output


@dataclass
class AcousticConfig(ModelSection):
    runner_settings = ("vocoder_experiment", "vocoder_epoch", "pase_experiment", "pase_epoch",
                       "pase_seed_seconds")

    hidden_size: int = 128                # width of the acoustic model (phone GRU each direction, frame convs)
    rnn_layers: int = 1
    frame_conv_layers: int = 4            # the frame decoder's convolutions, dilations 1, 2, 4, ...
    duration_hidden_size: int = 128       # width of the duration model's GRU (each direction)
    conv_kernel: int = 5                  # steps seen by the convolution before the recurrence
    linguistic_embedding_size: int = 8    # width of each of the four shared symbol tables
    speaker_embedding_size: int = 16
    conds_speaker_type: str = "embedding"  # "embedding": a learned table; "pase": projected PASE seeds
    phone_encoder: str = "rnn"            # the acoustic model's phone encoder: "rnn" (conv + GRU) or "conv" alone
    duration_encoder: str = "rnn"         # the duration model's stack, the same choice
    dropout: float = 0.0                  # on the convolutions' outputs/inputs of both models, in training
    trajectory_points: int = 0            # >1: each phone's features move through this many points (below)
    global_variance: bool = False         # scale each predicted utterance's mel-cepstra c1.. to the speaker's variance
    speaker_echo: bool = False            # put each speaker's echo (audio/echo.py) back on the rendered audio
    speaker_output: bool = False          # each speaker's own output layer of the frame decoder, beside the shared one
    speaker_statistics: bool = False      # "pase": the speaker's feature mean and std beside its seed
    delta_loss: float = 0.0               # weight of the MSE of the features' frame-to-frame differences (below)
    feature_loss: str = "normalized"      # "normalized": MSE of the normalized features; "cepstral_distance":
                                          # mel-cepstra 1.. weighted by their variance (see losses)
    # derived from the data
    num_speakers: int = 1
    acoustic_dim: int = 43
    linguistic_table_sizes: list = field(default_factory=list)
    linguistic_column_tables: list = field(default_factory=list)
    frame_real_dim: int = 45              # the frame's numbers: phone duration, position, the label's 43
    speaker_vector_size: int = 0          # PASE seed width (conds_speaker_type "pase")
    phone_column: int = 2                 # the current phone (p3) among the categorical columns

    def problems(self) -> list[str]:
        if self.speaker_output and self.conds_speaker_type == "pase":
            return ["model.speaker_output: true needs conds_speaker_type \"embedding\" (a layer per "
                    "speaker of the table; PASE seeds speak for speakers without one)"]
        if self.speaker_statistics and self.conds_speaker_type != "pase":
            return ["model.speaker_statistics: true needs conds_speaker_type \"pase\" (a learned speaker "
                    "table already holds what statistics would say)"]
        return []

    @property
    def statistics_width(self) -> int:
        """Width of the statistics part of the speaker input: the mean and the std of each feature."""
        return 2 * self.acoustic_dim if self.speaker_statistics else 0


def lengths_mask(lengths: torch.Tensor, longest: int) -> torch.Tensor:
    """(B, longest) bool, True where a step is inside its sequence."""
    return torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]


class SequenceStack(nn.Module):
    """labels + speaker -> linear -> conv -> bidirectional GRU -> linear, over padded sequences."""

    def __init__(self, config: AcousticConfig, real_dim: int, hidden_size: int, output_size: int,
                 use_rnn: bool = True):
        super().__init__()
        if not config.linguistic_table_sizes:   # a corpus fact (labels), not a config rule
            raise ValueError("the acoustic model needs linguistic labels (linguistic_table_sizes is empty)")
        self.tables = nn.ModuleList(nn.Embedding(size, config.linguistic_embedding_size)
                                    for size in config.linguistic_table_sizes)
        self.column_tables = [int(t) for t in config.linguistic_column_tables]
        input_size = (len(self.column_tables) * config.linguistic_embedding_size + real_dim
                      + config.speaker_embedding_size)
        self.input = nn.Linear(input_size, hidden_size)
        self.conv = nn.Conv1d(hidden_size, hidden_size, config.conv_kernel, padding=config.conv_kernel // 2)
        self.use_rnn = use_rnn
        if use_rnn:
            self.rnn = nn.GRU(hidden_size, hidden_size, config.rnn_layers, batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * hidden_size if self.use_rnn else hidden_size, output_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, categorical: torch.Tensor, real: torch.Tensor, speaker: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """categorical (B, L, 10) long, real (B, L, R), speaker (B, S), lengths (B,) -> (B, L, out)."""
        longest = categorical.shape[1]
        parts = [self.tables[table](categorical[..., column]) for column, table in enumerate(self.column_tables)]
        parts += [real, speaker[:, None, :].expand(-1, longest, -1)]
        x = self.input(torch.cat(parts, dim=-1))
        x = x * lengths_mask(lengths, longest)[..., None]
        x = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x)
        if not self.use_rnn:
            return self.output(x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        x, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=longest)
        return self.output(x)


class FrameDecoder(nn.Module):
    """The phones' encodings spread over their frames + the frame's own columns + speaker ->
    linear -> `layers` residual dilated convolutions over frames -> linear."""

    def __init__(self, config: AcousticConfig, encoding_size: int):
        super().__init__()
        width = config.hidden_size
        self.tables = nn.ModuleList(nn.Embedding(size, config.linguistic_embedding_size)
                                    for size in config.linguistic_table_sizes)
        self.column_tables = [int(t) for t in config.linguistic_column_tables]
        input_size = (encoding_size + len(self.column_tables) * config.linguistic_embedding_size
                      + config.frame_real_dim + config.speaker_embedding_size)
        self.input = nn.Linear(input_size, width)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, config.conv_kernel, dilation=2 ** k, padding=2 ** k * (config.conv_kernel // 2))
            for k in range(config.frame_conv_layers))
        self.output = nn.Linear(width, config.acoustic_dim)
        self.dropout = nn.Dropout(config.dropout)
        # Each speaker's features per phone symbol, added to the output: the form of the trivial
        # baseline, learned, so that the layers above model what the context changes.
        self.phones = config.linguistic_table_sizes[self.column_tables[config.phone_column]]
        self.phone_column = config.phone_column
        self.symbol_table = nn.Embedding(config.num_speakers * self.phones, config.acoustic_dim)
        nn.init.zeros_(self.symbol_table.weight)
        if config.speaker_output:
            # Each speaker's own linear map of the last layer, added to the shared one (started at
            # zero): a speaker's formants shifted against another's are, on the mel-cepstrum, a
            # linear map of the same envelope (frequency warping), which the shared layers would
            # otherwise have to make from the speaker input.
            self.speaker_output = nn.Parameter(torch.zeros(config.num_speakers, width, config.acoustic_dim))
        else:
            self.speaker_output = None

    def forward(self, encoding, categorical, real, speaker, lengths, speaker_index=None) -> torch.Tensor:
        """encoding (B, T, E) of each frame's phone, categorical (B, T, 10), real (B, T, R),
        speaker (B, S), lengths (B,) -> (B, T, acoustic_dim)."""
        longest = categorical.shape[1]
        parts = [encoding] + [self.tables[table](categorical[..., column])
                              for column, table in enumerate(self.column_tables)]
        parts += [real, speaker[:, None, :].expand(-1, longest, -1)]
        mask = lengths_mask(lengths, longest)[:, None, :].to(real.dtype)
        x = F.relu(self.input(torch.cat(parts, dim=-1))).transpose(1, 2) * mask
        for conv in self.convs:
            x = (x + F.relu(conv(self.dropout(x)))) * mask
        x = x.transpose(1, 2)
        out = self.output(x)
        if speaker_index is None:
            return out
        if self.speaker_output is not None:
            out = out + torch.bmm(x, self.speaker_output[speaker_index])
        return out + self.symbol_table(speaker_index[:, None] * self.phones + categorical[..., self.phone_column])


class AcousticModel(nn.Module):
    """Duration model + acoustic model + the speaker representation they share.

    The acoustic model reads the utterance at two rates: a phone encoder (the duration model's
    shape, its own weights) over the phones, whose output every frame of a phone receives, then
    a frame decoder over the frames' 55 columns. The recurrence runs over ~30 phones, not ~500
    frames: on a CPU a frame-rate bidirectional GRU costs seconds per step."""

    def __init__(self, config: AcousticConfig):
        super().__init__()
        self.config = config
        if config.conds_speaker_type == "pase":
            self.speaker = nn.Linear(config.speaker_vector_size + config.statistics_width,
                                     config.speaker_embedding_size)
        else:
            self.speaker = nn.Embedding(config.num_speakers, config.speaker_embedding_size)
        phone_real = config.frame_real_dim - 2
        self.duration_model = SequenceStack(config, phone_real, config.duration_hidden_size, 1,
                                            use_rnn=config.duration_encoder == "rnn")
        self.phone_encoder = SequenceStack(config, phone_real, config.hidden_size, config.hidden_size,
                                           use_rnn=config.phone_encoder == "rnn")
        self.frame_decoder = FrameDecoder(config, config.hidden_size)
        if config.global_variance:
            # Each speaker's mean variance over an utterance of each normalized feature (training
            # split; 0 for a speaker without training utterances), set by the runner, kept in the
            # checkpoints and releases: what `scale_variance` restores.
            self.register_buffer("utterance_variance", torch.zeros(config.num_speakers, config.acoustic_dim))
        if config.speaker_echo:
            # Each speaker's echo found in its training recordings (audio/echo.py: delay in samples,
            # gain; 0, 0 for none), set by the runner, kept in the checkpoints and releases.
            self.register_buffer("speaker_echo", torch.zeros(config.num_speakers, 2))
        if config.speaker_statistics:
            # The center and scale of the statistics over the modeling speakers, set by the runner
            # at the start of training and kept in the checkpoints and releases: a new speaker's
            # statistics are read on the scale the model trained on.
            self.register_buffer("statistics_center", torch.zeros(config.statistics_width))
            self.register_buffer("statistics_scale", torch.ones(config.statistics_width))
        if config.trajectory_points > 1:
            self.trajectory = nn.Linear(config.hidden_size, config.trajectory_points * config.acoustic_dim)
            nn.init.zeros_(self.trajectory.weight)
            nn.init.zeros_(self.trajectory.bias)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames / DURATION_SCALE of each phone (B, P), features (B, T, A) with the voiced flag as a
        logit) of a collated batch (data/phone_sequences.collate, its `speaker` replaced by
        speaker_input's), the acoustic model reading the batch's frames (teacher forcing on
        the recording's durations)."""
        return (self.log_durations(batch["phone_categorical"], batch["phone_real"], batch["speaker"],
                                   batch["phone_lengths"]),
                self.features(batch))

    def speaker_code(self, speaker: torch.Tensor) -> torch.Tensor:
        """(B, speaker_embedding_size) of the batch's speaker input: rows of the table, or PASE
        seeds (followed, with speaker_statistics, by the mean and std of each feature)."""
        if self.config.speaker_statistics:
            width = self.config.statistics_width
            statistics = (speaker[:, -width:] - self.statistics_center) / self.statistics_scale
            speaker = torch.cat([speaker[:, :-width], statistics], dim=1)
        return self.speaker(speaker)

    def log_durations(self, categorical, real, speaker, lengths) -> torch.Tensor:
        return self.duration_model(categorical, real, self.speaker_code(speaker), lengths)[..., 0]

    def features(self, batch: dict) -> torch.Tensor:
        """(B, T, A) of a batch's phones (phone_categorical, phone_real, phone_lengths) and frames
        (frame_categorical, frame_real, frame_phone: the phone of each frame, frame_lengths)."""
        speaker = self.speaker_code(batch["speaker"])
        phones = self.phone_encoder(batch["phone_categorical"], batch["phone_real"], speaker,
                                    batch["phone_lengths"])
        index = batch["frame_phone"].long()[..., None].expand(-1, -1, phones.shape[-1])
        out = self.frame_decoder(torch.gather(phones, 1, index), batch["frame_categorical"],
                                 batch["frame_real"], speaker, batch["frame_lengths"],
                                 None if self.config.conds_speaker_type == "pase" else batch["speaker"])
        if self.config.trajectory_points > 1:
            out = out + self.phone_trajectories(phones, batch["frame_phone"].long(), batch["frame_real"][..., POSITION_COLUMN])
        return out

    def phone_trajectories(self, phones: torch.Tensor, frame_phone: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """(B, T, A): each phone's K points of the features (a linear map of its encoding, K =
        trajectory_points, at positions 0, 1/(K-1), ..., 1 of the phone), linearly interpolated
        at each frame's position in its phone."""
        points = self.config.trajectory_points
        batch_size, num_phones, _ = phones.shape
        knots = self.trajectory(phones).view(batch_size, num_phones, points, -1)
        index = frame_phone[..., None, None].expand(-1, -1, points, knots.shape[-1])
        frame_knots = torch.gather(knots, 1, index)                                   # (B, T, K, A)
        grid = torch.arange(points, device=phones.device, dtype=position.dtype)
        hats = torch.clamp(1 - (position[..., None] * (points - 1) - grid).abs(), min=0)   # (B, T, K)
        return (hats[..., None] * frame_knots).sum(dim=2)


def losses(log_durations: torch.Tensor, features: torch.Tensor, batch: dict,
           weights: torch.Tensor | None = None, delta_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """{"loss", "duration_loss", "acoustic_loss", "vuv_loss"} (and "delta_loss" when
    `delta_weight` is not 0): duration_loss the MSE of frames / DURATION_SCALE over the phones,
    acoustic_loss the MSE of the normalized features other than the voiced flag (each column's
    squared error times `weights[column]` when given, shape (A,)) plus vuv_loss, the flag's
    binary cross-entropy, over the frames, plus `delta_weight` times delta_loss: the same mean
    square of the frame-to-frame differences x[t] - x[t-1], over the pairs of frames inside the
    sequence (the dynamic features Merlin regresses beside the static ones);
    loss = duration_loss + acoustic_loss."""
    phone_mask = lengths_mask(batch["phone_lengths"], log_durations.shape[1]).float()
    target = batch["durations"].float() / DURATION_SCALE
    duration_loss = ((log_durations - target) ** 2 * phone_mask).sum() / phone_mask.sum()
    frame_mask = lengths_mask(batch["frame_lengths"], features.shape[1]).float()
    acoustic = batch["acoustic"]
    continuous = [c for c in range(acoustic.shape[-1]) if c != VUV_COLUMN]

    def mean_square(error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each step's (weighted) mean over the continuous columns, averaged over the masked steps."""
        squared = error ** 2 if weights is None else error ** 2 * weights[continuous]
        return (squared.mean(dim=-1) * mask).sum() / mask.sum().clamp_min(1)

    predicted, recorded = features[..., continuous], acoustic[..., continuous]
    vuv_loss = (F.binary_cross_entropy_with_logits(features[..., VUV_COLUMN], acoustic[..., VUV_COLUMN],
                                                   reduction="none") * frame_mask).sum() / frame_mask.sum()
    acoustic_loss = mean_square(predicted - recorded, frame_mask) + vuv_loss
    delta = {}
    if delta_weight:
        pairs = frame_mask[:, 1:] * frame_mask[:, :-1]
        delta["delta_loss"] = mean_square(torch.diff(predicted, dim=1) - torch.diff(recorded, dim=1), pairs)
        acoustic_loss = acoustic_loss + delta_weight * delta["delta_loss"]
    return {"loss": duration_loss + acoustic_loss, "duration_loss": duration_loss,
            "acoustic_loss": acoustic_loss, "vuv_loss": vuv_loss, **delta}


#: The acoustic columns `scale_variance` scales: the mel-cepstra from mcep1 (data/features.py:
#: lf0, vuv, mcep0..mcep39, bap), not the energy c0 nor F0, voicing and aperiodicity.
VARIANCE_COLUMNS = slice(3, 42)


def scale_variance(features: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """(T, A) predicted normalized features with each column of VARIANCE_COLUMNS scaled about its
    mean over the utterance so that its variance over the utterance is `variance` (A,) (global
    variance, as in Toda and Tokuda's parameter generation; a column whose target is 0 is
    left as it is). Regression to the mean over-smooths the spectral envelope; what is lost is
    what tells close voices apart (README, "Text to speech judged")."""
    out = features.clone()
    columns = out[:, VARIANCE_COLUMNS]
    target = variance[VARIANCE_COLUMNS]
    mean = columns.mean(dim=0)
    spread = columns.var(dim=0, unbiased=False)
    gain = torch.where((target > 0) & (spread > 0), torch.sqrt(target / spread.clamp_min(1e-12)),
                       torch.ones_like(target))
    out[:, VARIANCE_COLUMNS] = mean + (columns - mean) * gain
    return out


def utterance_variances(utterances, speakers: int, dim: int) -> np.ndarray:
    """(speakers, dim): each speaker's mean over its utterances of each column's variance over
    the utterance's frames; `utterances` yields (speaker index, normalized features (T, dim));
    0 for a speaker with none."""
    sums, counts = np.zeros((speakers, dim)), np.zeros(speakers)
    for speaker, features in utterances:
        sums[speaker] += np.asarray(features, np.float64).var(axis=0)
        counts[speaker] += 1
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def frames_of(scaled_durations: torch.Tensor) -> torch.Tensor:
    """Whole frames per phone from the duration model's output: rounded, at least 0."""
    return torch.clamp(torch.round(scaled_durations * DURATION_SCALE), min=0).long()


def to_features(prediction: torch.Tensor) -> torch.Tensor:
    """Predicted normalized features with the voiced flag decided (1.0 where the logit > 0)."""
    out = prediction.clone()
    out[..., VUV_COLUMN] = (prediction[..., VUV_COLUMN] > 0).to(prediction.dtype)
    return out

"""The front half of statistical parametric text-to-speech, as in Merlin: a duration model
(phones -> frames per phone) and an acoustic model (frames -> the 43 WORLD features).

Both are the same small stack over a whole utterance, `Tensor[B x L x D]` in and out:

    labels (symbols through the four shared tables, numbers) + speaker
      -> linear -> convolution over `conv_kernel` steps -> bidirectional GRU -> linear

Why this shape: a frame's features depend on the phones around it in both
directions (coarticulation, the phrase's declining F0), and the whole utterance
is known before synthesis, so the recurrence runs both ways. The convolution
sees `conv_kernel` neighbouring steps (25 ms of frames) before the recurrence,
and the GRU's state moves a little per frame, so neighbouring frames get
neighbouring outputs: the features are continuous across frames without the
deltas + MLPG smoothing that a frame-wise feed-forward network needs.

Losses: the duration model regresses frames / DURATION_SCALE by MSE, as Merlin
regresses normalized frame counts (log-durations fit the short phones at the
expense of the long ones, and lost to the per-symbol mean in frames); the acoustic model regresses the normalized features
by MSE, except the voiced flag, which is a logit under binary cross-entropy.
Padding never changes a sequence's output: the GRU runs on packed sequences and
the padded steps are zeroed before the convolution, as its own zero padding is.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .section import ModelSection

VUV_COLUMN = 1   # data/features.py: the voiced flag among the acoustic fields
DURATION_SCALE = 10.0   # frames per unit of the duration model's output


@dataclass
class AcousticConfig(ModelSection):
    runner_settings = ("vocoder_experiment", "vocoder_epoch", "pase_experiment", "pase_epoch",
                       "pase_seed_seconds")

    hidden_size: int = 256                # width of the acoustic model's GRU (each direction)
    rnn_layers: int = 2
    duration_hidden_size: int = 128       # width of the duration model's GRU (each direction)
    conv_kernel: int = 5                  # steps seen by the convolution before the recurrence
    linguistic_embedding_size: int = 8    # width of each of the four shared symbol tables
    speaker_embedding_size: int = 16
    conds_speaker_type: str = "embedding"  # "embedding": a learned table; "pase": projected PASE seeds
    # derived from the data
    num_speakers: int = 1
    acoustic_dim: int = 43
    linguistic_table_sizes: list = field(default_factory=list)
    linguistic_column_tables: list = field(default_factory=list)
    frame_real_dim: int = 45              # the frame's numbers: phone duration, position, the label's 43
    speaker_vector_size: int = 0          # PASE seed width (conds_speaker_type "pase")



def lengths_mask(lengths: torch.Tensor, longest: int) -> torch.Tensor:
    """(B, longest) bool, True where a step is inside its sequence."""
    return torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]


class SequenceStack(nn.Module):
    """labels + speaker -> linear -> conv -> bidirectional GRU -> linear, over padded sequences."""

    def __init__(self, config: AcousticConfig, real_dim: int, hidden_size: int, output_size: int):
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
        self.rnn = nn.GRU(hidden_size, hidden_size, config.rnn_layers, batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * hidden_size, output_size)

    def forward(self, categorical: torch.Tensor, real: torch.Tensor, speaker: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """categorical (B, L, 10) long, real (B, L, R), speaker (B, S), lengths (B,) -> (B, L, out)."""
        longest = categorical.shape[1]
        parts = [self.tables[table](categorical[..., column]) for column, table in enumerate(self.column_tables)]
        parts += [real, speaker[:, None, :].expand(-1, longest, -1)]
        x = self.input(torch.cat(parts, dim=-1))
        x = x * lengths_mask(lengths, longest)[..., None]
        x = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        x, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=longest)
        return self.output(x)


class AcousticModel(nn.Module):
    """Duration model + acoustic model + the speaker representation they share."""

    def __init__(self, config: AcousticConfig):
        super().__init__()
        self.config = config
        if config.conds_speaker_type == "pase":
            self.speaker = nn.Linear(config.speaker_vector_size, config.speaker_embedding_size)
        else:
            self.speaker = nn.Embedding(config.num_speakers, config.speaker_embedding_size)
        self.duration_model = SequenceStack(config, config.frame_real_dim - 2, config.duration_hidden_size, 1)
        self.acoustic_model = SequenceStack(config, config.frame_real_dim, config.hidden_size, config.acoustic_dim)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames / DURATION_SCALE of each phone (B, P), features (B, T, A) with the voiced flag as a
        logit) of a collated batch (data/phone_sequences.collate, its `speaker` replaced by
        speaker_input's), the acoustic model reading the batch's frames (teacher forcing on
        the recording's durations)."""
        return (self.log_durations(batch["phone_categorical"], batch["phone_real"], batch["speaker"],
                                   batch["phone_lengths"]),
                self.features(batch["frame_categorical"], batch["frame_real"], batch["speaker"],
                              batch["frame_lengths"]))

    def log_durations(self, categorical, real, speaker, lengths) -> torch.Tensor:
        return self.duration_model(categorical, real, self.speaker(speaker), lengths)[..., 0]

    def features(self, categorical, real, speaker, lengths) -> torch.Tensor:
        return self.acoustic_model(categorical, real, self.speaker(speaker), lengths)


def losses(log_durations: torch.Tensor, features: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
    """{"loss", "duration_loss", "acoustic_loss", "vuv_loss"}: duration_loss the MSE of
    frames / DURATION_SCALE over the phones, acoustic_loss the MSE of the normalized features other
    than the voiced flag plus vuv_loss, the flag's binary cross-entropy, over the frames;
    loss = duration_loss + acoustic_loss."""
    phone_mask = lengths_mask(batch["phone_lengths"], log_durations.shape[1]).float()
    target = batch["durations"].float() / DURATION_SCALE
    duration_loss = ((log_durations - target) ** 2 * phone_mask).sum() / phone_mask.sum()
    frame_mask = lengths_mask(batch["frame_lengths"], features.shape[1]).float()
    acoustic = batch["acoustic"]
    continuous = [c for c in range(acoustic.shape[-1]) if c != VUV_COLUMN]
    squared = ((features[..., continuous] - acoustic[..., continuous]) ** 2).mean(dim=-1)
    frames = frame_mask.sum()
    vuv_loss = (F.binary_cross_entropy_with_logits(features[..., VUV_COLUMN], acoustic[..., VUV_COLUMN],
                                                   reduction="none") * frame_mask).sum() / frames
    acoustic_loss = (squared * frame_mask).sum() / frames + vuv_loss
    return {"loss": duration_loss + acoustic_loss, "duration_loss": duration_loss,
            "acoustic_loss": acoustic_loss, "vuv_loss": vuv_loss}


def frames_of(scaled_durations: torch.Tensor) -> torch.Tensor:
    """Whole frames per phone from the duration model's output: rounded, at least 0."""
    return torch.clamp(torch.round(scaled_durations * DURATION_SCALE), min=0).long()


def to_features(prediction: torch.Tensor) -> torch.Tensor:
    """Predicted normalized features with the voiced flag decided (1.0 where the logit > 0)."""
    out = prediction.clone()
    out[..., VUV_COLUMN] = (prediction[..., VUV_COLUMN] > 0).to(prediction.dtype)
    return out
